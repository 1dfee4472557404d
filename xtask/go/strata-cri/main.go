// strata-cri speaks CRI to containerd as kubelet does, one call per
// invocation, with kubelet's timeouts, so that the Rust tests drive a
// pod's life call by call and check each answer against strata's own
// view. Built by `cargo xtask setup` from Debian trixie's cri-api and
// grpc sources (GOPATH mode). Answers are JSON on stdout.
//
//	strata-cri SOCKET pull IMAGE [USER PASSWORD]
//	strata-cri SOCKET image-status IMAGE | list-images | fs-info | rmi IMAGE
//	strata-cri SOCKET run-pod NAME NAMESPACE UID
//	strata-cri SOCKET create POD_ID NAME NAMESPACE UID CONTAINER IMAGE CMD...
//	strata-cri SOCKET start|stop|rm|stats ID | list-stats
//	strata-cri SOCKET exec ID CMD...
//	strata-cri SOCKET stop-pod|rm-pod POD_ID
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubelet's defaults: --runtime-request-timeout 2m; image pulls have
// none of their own but the same connection; ExecSync its own timeout.
const requestTimeout = 2 * time.Minute
const execTimeout = 30 * time.Second

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: strata-cri SOCKET COMMAND ARGS...")
		os.Exit(2)
	}
	conn, err := grpc.Dial("unix://"+os.Args[1],
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	rt := runtime.NewRuntimeServiceClient(conn)
	img := runtime.NewImageServiceClient(conn)
	out, err := call(ctx, rt, img, os.Args[2], os.Args[3:])
	if err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// The pod kubelet would ask for: host network, PID and IPC (no CNI).
func podConfig(name, namespace, uid string) *runtime.PodSandboxConfig {
	return &runtime.PodSandboxConfig{
		Metadata: &runtime.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Labels: map[string]string{"io.kubernetes.pod.name": name,
			"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid},
		Linux: &runtime.LinuxPodSandboxConfig{
			// kubelet's, with the cgroupfs driver, for a BestEffort pod.
			CgroupParent: "/kubepods/besteffort/pod" + uid,
			SecurityContext: &runtime.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtime.NamespaceOption{
					Network: runtime.NamespaceMode_NODE,
					Pid:     runtime.NamespaceMode_POD,
					Ipc:     runtime.NamespaceMode_POD,
				},
			},
		},
	}
}

func call(ctx context.Context, rt runtime.RuntimeServiceClient, img runtime.ImageServiceClient, cmd string, args []string) (interface{}, error) {
	switch cmd {
	case "pull":
		req := &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: args[0]}}
		if len(args) == 3 {
			req.Auth = &runtime.AuthConfig{Username: args[1], Password: args[2]}
		}
		return img.PullImage(ctx, req)
	case "image-status":
		return img.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: args[0]}})
	case "list-images":
		return img.ListImages(ctx, &runtime.ListImagesRequest{})
	case "fs-info":
		return img.ImageFsInfo(ctx, &runtime.ImageFsInfoRequest{})
	case "rmi":
		return img.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: args[0]}})
	case "run-pod":
		return rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig(args[0], args[1], args[2])})
	case "create":
		pod := podConfig(args[1], args[2], args[3])
		return rt.CreateContainer(ctx, &runtime.CreateContainerRequest{
			PodSandboxId: args[0],
			Config: &runtime.ContainerConfig{
				Metadata: &runtime.ContainerMetadata{Name: args[4]},
				Image:    &runtime.ImageSpec{Image: args[5]},
				Command:  args[6:],
				Labels: map[string]string{"io.kubernetes.pod.name": args[1],
					"io.kubernetes.pod.namespace": args[2], "io.kubernetes.pod.uid": args[3],
					"io.kubernetes.container.name": args[4]},
			},
			SandboxConfig: pod,
		})
	case "start":
		return rt.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: args[0]})
	case "exec":
		return rt.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: args[0], Cmd: args[1:],
			Timeout: int64(execTimeout / time.Second)})
	case "stats":
		return rt.ContainerStats(ctx, &runtime.ContainerStatsRequest{ContainerId: args[0]})
	case "list-stats":
		return rt.ListContainerStats(ctx, &runtime.ListContainerStatsRequest{})
	case "stop":
		return rt.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: args[0], Timeout: 10})
	case "rm":
		return rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: args[0]})
	case "stop-pod":
		return rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: args[0]})
	case "rm-pod":
		return rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: args[0]})
	}
	return nil, fmt.Errorf("unknown command %q", cmd)
}
