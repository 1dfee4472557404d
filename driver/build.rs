//! Kubernetes' CRI (runtime.v1) for the snapshotter's image-service
//! proxy (snapshotter::cri): client and server, from the vendored
//! proto/cri/api.proto, with the same tonic 0.9 as containerd's APIs.

fn main() {
    println!("cargo:rustc-link-arg-bin=strata=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=proto/cri/api.proto");
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile(&["proto/cri/api.proto"], &["proto/cri"])
        .expect("generating the CRI bindings (protoc is installed by `cargo xtask setup`)");
}
