//! `strata snapshotter`: containerd's snapshots gRPC service on a unix
//! socket, over the same store as the CLI (a proxy plugin of type
//! `snapshot` in containerd's config).

mod content;
pub mod cri;
pub mod remote;
mod service;

use std::fs::{self, File};
use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_snapshots::tonic::transport::Server;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

pub use service::{status_of, StrataSnapshotter};

use crate::error::{Error, IoContext, Result};
use crate::store::Store;

pub struct ServeOptions {
    /// The unix socket to serve on.
    pub address: PathBuf,
    /// Opens the socket to this group (mode 0660); otherwise root only.
    pub group: Option<nix::unistd::Gid>,
    /// Serve containerd's remote-snapshotter labels with strata's own
    /// puller (see remote); None: containerd fetches every layer.
    pub remote_pull: Option<crate::pull::PullOptions>,
    /// containerd's socket: the blobs fetched for it are written to its
    /// content store too (see content), which Docker needs.
    pub containerd: Option<PathBuf>,
    /// Serve CRI's image service on the first socket, forwarding every
    /// call to containerd's CRI on the second (see cri).
    pub cri_proxy: Option<(PathBuf, PathBuf)>,
}

/// Held while a snapshotter serves a store: a second one is refused.
fn lock_store(store: &Store) -> Result<File> {
    let path = store.root().join("snapshotter.lock");
    crate::store::lock_file(&path, libc::LOCK_EX | libc::LOCK_NB)?.map_err(|_| {
        Error::InUse(format!(
            "another strata snapshotter is serving store {}",
            store.root().display()
        ))
    })
}

/// A socket file left by a crash is replaced; a live one is refused, and
/// so is anything that is not a socket.
fn clear_stale_socket(address: &Path) -> Result<()> {
    let md = match fs::symlink_metadata(address) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        other => other.ctx(|| format!("stat {}", address.display()))?,
    };
    if !md.file_type().is_socket() {
        return Err(Error::Invalid(format!(
            "{} exists and is not a socket",
            address.display()
        )));
    }
    if UnixStream::connect(address).is_ok() {
        return Err(Error::InUse(format!(
            "{} is being served by another process",
            address.display()
        )));
    }
    fs::remove_file(address).ctx(|| format!("removing stale socket {}", address.display()))
}

fn bind(address: &Path, group: Option<nix::unistd::Gid>) -> Result<UnixListener> {
    // The socket is born 0600: no window in which others may connect.
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(address);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.ctx(|| format!("binding {}", address.display()))?;
    if let Some(gid) = group {
        nix::unistd::chown(address, None, Some(gid))
            .ctx(|| format!("giving {} to group {gid}", address.display()))?;
        fs::set_permissions(address, fs::Permissions::from_mode(0o660))
            .ctx(|| format!("chmod {}", address.display()))?;
    }
    Ok(listener)
}

/// How long the flusher waits after a commit for more: containerd
/// commits an image's layers one after another.
const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Makes committed layers durable off the RPC path (see
/// snapshots::flush): one syncfs for whatever was committed meanwhile.
async fn flush_after_commits(store: Store, committed: Arc<tokio::sync::Notify>) {
    loop {
        committed.notified().await;
        tokio::time::sleep(FLUSH_DELAY).await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.flush_snapshots()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("strata snapshotter: flushing committed layers: {e}"),
            Err(e) => eprintln!("strata snapshotter: flusher failed: {e}"),
        }
    }
}

/// Serves until `shutdown` resolves, then stops taking calls, lets those
/// under way finish and removes the socket.
pub async fn serve(
    store: Store,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let _serving = lock_store(&store)?;
    clear_stale_socket(&opts.address)?;
    // Whatever a killed predecessor or a power cut left half done is
    // finished first, and what it committed in this boot made durable.
    store.recover_for_snapshotter()?;
    store.flush_snapshots()?;
    let listener = bind(&opts.address, opts.group)?;
    let committed = Arc::new(tokio::sync::Notify::new());
    let flusher = tokio::spawn(flush_after_commits(store.clone(), committed.clone()));
    let content = opts
        .containerd
        .as_deref()
        .map(content::ContentStore::connect_lazy)
        .transpose()?;
    let secrets = opts
        .cri_proxy
        .as_ref()
        .map(|_| Arc::new(cri::PullSecrets::default()));
    let remote = opts
        .remote_pull
        .clone()
        .map(|o| Arc::new(remote::RemotePuller::new(o, content, secrets.clone())));
    let svc = Arc::new(StrataSnapshotter::new(store.clone(), committed, remote));
    let cri_proxy = match (&opts.cri_proxy, secrets) {
        (Some((listen, upstream)), Some(secrets)) => {
            clear_stale_socket(listen)?;
            let listener = bind(listen, opts.group)?;
            Some((listener, cri::CriImageProxy::new(upstream, secrets)?))
        }
        _ => None,
    };
    // One shutdown for both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let on_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let snapshots = Server::builder()
        .add_service(containerd_snapshots::server(svc))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), on_stop(stopped.clone()));
    let images = async {
        match cri_proxy {
            Some((listener, proxy)) => {
                Server::builder()
                    .add_service(proxy.server())
                    .serve_with_incoming_shutdown(
                        UnixListenerStream::new(listener),
                        on_stop(stopped.clone()),
                    )
                    .await
            }
            None => Ok(()),
        }
    };
    let (served, images_served, ()) = tokio::join!(snapshots, images, async {
        shutdown.await;
        let _ = stop.send(true);
    });
    flusher.abort();
    let flushed = store.flush_snapshots();
    let removed = fs::remove_file(&opts.address);
    if let Some((listen, _)) = &opts.cri_proxy {
        let _ = fs::remove_file(listen);
    }
    flushed?;
    for (what, result) in [("snapshots", served), ("CRI images", images_served)] {
        result.map_err(|e| Error::Io {
            context: format!("serving {what} on {}", opts.address.display()),
            source: std::io::Error::other(e),
        })?;
    }
    removed.ctx(|| format!("removing {}", opts.address.display()))
}
