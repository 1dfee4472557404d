// strata-containerd-pull pulls an image through containerd exactly as
// CRI's PullImage does (and Docker's containerd image store, and
// nerdctl): with unpacking into the given snapshotter and the image
// labels snapshotters.AppendInfoHandlerWrapper adds to every layer, so
// that a remote snapshotter can fetch the layers itself. Built by `cargo
// xtask setup` from Debian trixie's containerd 1.7 sources (GOPATH mode).
//
//	strata-containerd-pull SOCKET NAMESPACE SNAPSHOTTER REF
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/snapshotters"
	"github.com/containerd/containerd/remotes/docker"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: strata-containerd-pull SOCKET NAMESPACE SNAPSHOTTER REF")
		os.Exit(2)
	}
	socket, ns, snapshotter, ref := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	client, err := containerd.New(socket, containerd.WithTimeout(10*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connecting to containerd:", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	// The test registry is plain HTTP on loopback, as CRI's config
	// `[plugins."io.containerd.grpc.v1.cri".registry]` would allow.
	resolver := docker.NewResolver(docker.ResolverOptions{PlainHTTP: true})
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pulling", ref+":", err)
		os.Exit(1)
	}
	fmt.Println(img.Target().Digest)
}
