// containerd's own snapshotter suite (snapshots/testsuite, all cases) run
// against a `strata snapshotter` process per case, through containerd's
// proxy client: the path containerd itself takes to a proxy plugin.
//
// Built in GOPATH mode from Debian's containerd 1.6 and 1.7 sources by
// `cargo xtask test`; STRATA_BIN names the strata binary.
package suite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/pkg/testutil"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"strata/testsuite"
	"google.golang.org/grpc"
)

func TestStrataSnapshotter(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := os.Getenv("STRATA_BIN")
	if bin == "" {
		t.Fatal("STRATA_BIN must name the strata binary")
	}
	testsuite.SnapshotterSuite(t, "strata", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return startStrata(bin, root)
	})
}

// startStrata serves a fresh store under root and connects to it; the
// cleanup stops the server with SIGTERM and checks that it exited cleanly.
func startStrata(bin, root string) (snapshots.Snapshotter, func() error, error) {
	socket := filepath.Join(root, "strata.sock")
	cmd := exec.Command(bin, "--root", filepath.Join(root, "store"), "snapshotter", "--address", socket)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, nil, fmt.Errorf("strata snapshotter did not listen on %s", socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.Dial("unix://"+socket, grpc.WithInsecure())
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "strata")
	cleanup := func() error {
		conn.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("strata snapshotter exited badly: %w", err)
		}
		if _, err := os.Stat(socket); !os.IsNotExist(err) {
			return fmt.Errorf("socket %s left behind after SIGTERM", socket)
		}
		return nil
	}
	return sn, cleanup, nil
}
