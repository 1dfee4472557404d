//! A real registry for the pull tests and benches: the CNCF distribution
//! registry (Debian trixie's `docker-registry`, unpacked under
//! target/docker-registry by `cargo xtask setup`), on 127.0.0.1 with its
//! own storage under the test's directory; plain HTTP, TLS, htpasswd
//! basic auth or token auth as the test asks. Images go in with
//! `skopeo copy`, as a user would push them. Dropping it (on panic too)
//! kills it.

use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::testing::stdout_of_success;

fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/docker-registry/root/usr/bin/docker-registry")
}

/// How the registry is reached and who it lets in.
#[derive(Default)]
pub struct RegistryConfig {
    /// PEM certificate and key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// An htpasswd file (bcrypt): basic auth.
    pub htpasswd: Option<PathBuf>,
    /// Token auth: (realm URL, service, issuer, the PEM bundle that
    /// verifies the tokens' signatures).
    pub token: Option<(String, String, String, PathBuf)>,
}

pub struct Registry {
    pub dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub host: String,
    child: Child,
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a port on 127.0.0.1")
        .port()
}

impl Registry {
    pub fn start(dir: &Path, config: &RegistryConfig) -> Registry {
        fs::create_dir_all(dir.join("data")).unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.join("data").display()
        );
        if let Some((cert, key)) = &config.tls {
            let _ = write!(
                yaml,
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some(h) = &config.htpasswd {
            let _ = write!(
                yaml,
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                h.display()
            );
        } else if let Some((realm, service, issuer, bundle)) = &config.token {
            let _ = write!(
                yaml,
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, yaml).unwrap();
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run `cargo xtask setup`",
            bin.display()
        );
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&host).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the registry exited ({status}): {}",
                    fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not listen on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            dir: dir.to_path_buf(),
            host,
            child,
        }
    }

    /// `skopeo copy SRC docker://HOST/REPO`, e.g. SRC
    /// `docker-archive:/x/image.tar`; `extra` adds skopeo's own flags
    /// (`--dest-creds`, `--all`). Plain HTTP and a test CA are accepted.
    pub fn push(&self, src: &str, repo: &str, extra: &[&str]) {
        let dest = format!("docker://{}/{repo}", self.host);
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(src)
            .arg(&dest)
            .output()
            .unwrap();
        stdout_of_success(out, &format!("skopeo copy {src} {dest}"));
    }

    /// Requests the registry has logged whose line contains every one of
    /// `parts` (e.g. `["GET /v2/app/blobs/"]`): what it was asked for,
    /// from its own access log.
    pub fn requests(&self, parts: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// The registry's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
