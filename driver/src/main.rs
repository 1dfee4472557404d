//! `strata`: the storage driver's command line (privileged).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use strata_driver::changes::Change;
use strata_driver::containers::{ContainerRecord, CreateOptions};
use strata_driver::export::{self, SaveFormat};
use strata_driver::image::config;
use strata_driver::import::{import, ImportOptions};
use strata_driver::mount::MountApi;
use strata_driver::quota::QuotaLimit;
use strata_driver::sizes::human;
use strata_driver::snapshotter::{self, ServeOptions};
use strata_driver::store::{StoreOptions, SyncMode, DEFAULT_ROOT};
use strata_driver::volumes::VolumeMount;
use strata_driver::{commit, Store};

#[derive(Parser)]
#[command(name = "strata", about = "overlayfs container storage driver", version)]
struct Cli {
    /// Store root.
    #[arg(long, env = "STRATA_ROOT", default_value = DEFAULT_ROOT, global = true)]
    root: PathBuf,
    /// Mount interface for strata's own mounts: `new` (lowerdir+, Linux
    /// >= 6.7) or `legacy` (one-page option string); default: by kernel.
    #[arg(long, env = "STRATA_MOUNT_API", global = true)]
    mount_api: Option<MountApi>,
    /// How extracted layers reach the disk: one syncfs per layer, or an
    /// fsync per file (slower; for filesystems whose syncfs is unreliable).
    /// `filesystem` or `per-file`.
    #[arg(long, env = "STRATA_SYNC", default_value = "filesystem", global = true)]
    sync: SyncMode,
    /// Store default: create every container with metadata-only copy-up,
    /// as `create --metacopy` does for one.
    #[arg(long, env = "STRATA_METACOPY", global = true)]
    metacopy_default: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Copy)]
struct Output {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Images: import, list, history, remove.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Create a container: a writable layer over IMAGE.
    Create {
        image: String,
        #[arg(long)]
        name: Option<String>,
        /// VOLUME:/path[:ro], repeatable.
        #[arg(short = 'v', long = "volume")]
        volumes: Vec<VolumeMount>,
        /// Mount with overlayfs `volatile`: no syncs, lost on a crash.
        #[arg(long)]
        volatile: bool,
        /// Mount with overlayfs `metacopy=on` (and the `redirect_dir=on` it
        /// needs): chmod, chown and xattr changes copy up metadata only.
        #[arg(long)]
        metacopy: bool,
        /// Cap what the container may write (e.g. 10g): a project quota on
        /// the writable layer; needs XFS, or ext4 with the project and
        /// quota features, mounted with prjquota.
        #[arg(long, value_parser = strata_driver::quota::parse_size)]
        size: Option<u64>,
        /// With --size: also cap files and directories created.
        #[arg(long, requires = "size")]
        inodes: Option<u64>,
        /// Also mount it (as `strata mount` would) and print the mount
        /// point instead of the ID: one process and one commit for both.
        #[arg(long)]
        mount: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Mount a container's merged view (reference-counted) and print it.
    Mount { container: String },
    /// Drop one mount reference; unmounts at zero.
    Umount { container: String },
    /// Remove a container and its writable layer.
    Rm {
        container: String,
        /// Unmount first if mounted.
        #[arg(short, long)]
        force: bool,
    },
    /// List containers.
    Ps {
        /// All containers, not only mounted ones.
        #[arg(short, long)]
        all: bool,
        /// Show SIZE (writable layer) and VIRTUAL (image + SIZE).
        #[arg(short, long)]
        size: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Changes in a container's writable layer (A/C/D).
    Diff {
        container: String,
        #[command(flatten)]
        out: Output,
    },
    /// Turn a container's writable layer into a new image NAME.
    Commit {
        container: String,
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Volumes: create, list, inspect, remove.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Disk usage.
    #[command(subcommand)]
    System(SystemCmd),
    /// Serve containerd's snapshots API on a unix socket (a containerd
    /// proxy plugin of type "snapshot"), in the foreground until SIGTERM
    /// or SIGINT.
    Snapshotter {
        /// The unix socket (created mode 0600; a stale one is replaced).
        #[arg(long)]
        address: PathBuf,
        /// Open the socket to this group (mode 0660).
        #[arg(long)]
        group: Option<String>,
        /// Let containerd fetch every layer itself, even when its labels
        /// ask a remote snapshotter to (by default strata fetches them).
        #[arg(long)]
        no_remote_pull: bool,
        /// Layers strata fetches at once for containerd.
        #[arg(long, default_value_t = strata_driver::pull::DEFAULT_JOBS)]
        max_concurrent_downloads: usize,
        /// containerd's socket: the layer blobs strata fetches for
        /// containerd are written to its content store too. Docker's
        /// containerd image store needs them (it hides images whose
        /// blobs containerd lacks); CRI does not.
        #[arg(long, value_name = "SOCK")]
        containerd: Option<PathBuf>,
        /// Serve Kubernetes' CRI image service on this socket (kubelet's
        /// imageServiceEndpoint), every call forwarded to --cri-upstream;
        /// the credentials of each PullImage sign in strata's own fetch
        /// of its layers, for that pull only.
        #[arg(long, value_name = "SOCK", requires = "cri_upstream")]
        cri_listen: Option<PathBuf>,
        /// containerd's CRI socket, behind --cri-listen.
        #[arg(long, value_name = "SOCK", requires = "cri_listen")]
        cri_upstream: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Find (and with --repair fix) what a crash or a hand-made change
    /// left wrong; exits non-zero while a problem remains.
    Check {
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import an OCI layout (DIR[:TAG] or tarball), a docker-save archive,
    /// or a plain directory or tar as a one-layer image.
    Import {
        src: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Pull IMAGE from its registry (docker's reference grammar:
    /// [HOST[:PORT]/]PATH[:TAG][@DIGEST], docker.io by default).
    Pull {
        reference: String,
        /// OS/ARCH[/VARIANT] to take from a multi-platform index.
        #[arg(long)]
        platform: Option<String>,
        /// Layers downloaded at once.
        #[arg(long, default_value_t = strata_driver::pull::DEFAULT_JOBS)]
        max_concurrent_downloads: usize,
        /// Print only the image ID.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        registry: RegistryFlags,
        #[command(flatten)]
        out: Output,
    },
    /// Push IMAGE to a registry, as DEST (default: its first name). Blobs
    /// the registry has are not sent again.
    Push {
        image: String,
        dest: Option<String>,
        #[command(flatten)]
        registry: RegistryFlags,
        #[command(flatten)]
        out: Output,
    },
    Ls {
        #[command(flatten)]
        out: Output,
    },
    History {
        image: String,
        #[command(flatten)]
        out: Output,
    },
    Rm {
        image: String,
    },
    /// Write an image as a docker-save archive or an OCI layout tarball.
    Save {
        image: String,
        #[arg(short, long)]
        output: PathBuf,
        /// docker-archive or oci.
        #[arg(long, default_value = "docker-archive")]
        format: SaveFormat,
    },
}

/// How to reach a registry, as docker, podman and skopeo take it.
#[derive(Args)]
struct RegistryFlags {
    /// USER:PASSWORD for the registry (else the auth files: see README).
    #[arg(long, env = "STRATA_REGISTRY_CREDS", hide_env_values = true)]
    creds: Option<String>,
    /// A CA certificate (PEM) to trust beside the system's; repeatable.
    #[arg(long = "tls-ca")]
    tls_ca: Vec<PathBuf>,
    /// Directories of HOST[:PORT]/*.crt, tried before the defaults
    /// (/etc/strata/certs.d, /etc/containers/certs.d, /etc/docker/certs.d).
    #[arg(long = "certs-dir")]
    certs_dirs: Vec<PathBuf>,
    /// HOST[:PORT] to reach over plain HTTP or unverified TLS; repeatable.
    /// Loopback registries may use plain HTTP without it.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// Seconds a read from the registry may wait for a byte.
    #[arg(long, default_value_t = 30)]
    read_timeout: u64,
}

impl RegistryFlags {
    fn options(&self) -> Result<strata_driver::registry::RegistryOptions> {
        use strata_driver::registry::{credentials, transport::TransportOptions};
        let mut transport = TransportOptions::default();
        transport.insecure.clone_from(&self.insecure);
        transport.ca_files.clone_from(&self.tls_ca);
        let mut dirs = self.certs_dirs.clone();
        dirs.append(&mut transport.certs_dirs);
        transport.certs_dirs = dirs;
        transport.read_timeout = std::time::Duration::from_secs(self.read_timeout.max(1));
        Ok(strata_driver::registry::RegistryOptions {
            transport,
            credentials: self
                .creds
                .as_deref()
                .map(credentials::Credentials::parse)
                .transpose()?,
            auth_files: credentials::default_auth_files(|k| std::env::var(k).ok()),
        })
    }
}

#[derive(Subcommand)]
enum VolumeCmd {
    Create {
        name: String,
    },
    Ls {
        #[command(flatten)]
        out: Output,
    },
    Inspect {
        name: String,
    },
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum SystemCmd {
    Df {
        #[command(flatten)]
        out: Output,
    },
}

fn main() -> Result<()> {
    // `strata ps | head` ends quietly, as other Unix tools do, instead
    // of panicking on a write to a closed pipe (Rust ignores SIGPIPE).
    // SAFETY: restoring a signal's default action, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let options = StoreOptions {
        mount_api: cli.mount_api,
        sync: cli.sync,
        metacopy: cli.metacopy_default,
    };
    let store = Store::open_with(&cli.root, options)
        .with_context(|| format!("opening store {}", cli.root.display()))?;
    // Like any command, check first finishes what a crash interrupted.
    let recovered = store
        .recover_if_needed()
        .context("recovering from an interrupted operation")?;
    if !recovered.is_empty() {
        eprintln!("strata: recovered from an interrupted operation:");
        for p in &recovered {
            eprintln!(
                "  {}{}",
                p.what,
                if p.repaired {
                    " (fixed)"
                } else {
                    " (NOT fixed: run strata check)"
                }
            );
        }
    }
    match cli.cmd {
        Cmd::Check { repair, out } => {
            let problems = store.check(repair)?;
            emit(out, &problems, || {
                if problems.is_empty() {
                    println!("store {} is consistent", cli.root.display());
                }
                for p in &problems {
                    let state = if p.repaired {
                        "repaired"
                    } else if p.repairable {
                        "repairable (--repair)"
                    } else {
                        "needs attention"
                    };
                    println!("{state:<22} {}", p.what);
                }
            })?;
            let remaining = problems.iter().filter(|p| !p.repaired).count();
            if remaining > 0 {
                anyhow::bail!("{remaining} problem(s) remain");
            }
            Ok(())
        }
        Cmd::Image(cmd) => image_cmd(&store, cmd),
        Cmd::Snapshotter {
            address,
            group,
            no_remote_pull,
            max_concurrent_downloads,
            containerd,
            cri_listen,
            cri_upstream,
            registry,
        } => {
            let remote_pull = (!no_remote_pull)
                .then(|| -> Result<_> {
                    Ok(strata_driver::pull::PullOptions {
                        registry: registry.options()?,
                        platform: strata_driver::image::platform::Platform::host(),
                        jobs: max_concurrent_downloads,
                    })
                })
                .transpose()?;
            let opts = ServeOptions {
                address,
                group: None,
                remote_pull,
                containerd,
                cri_proxy: cri_listen.zip(cri_upstream),
            };
            serve_snapshotter(store, opts, group)
        }
        Cmd::Create {
            image,
            name,
            volumes,
            volatile,
            metacopy,
            size,
            inodes,
            mount,
            out,
        } => {
            let opts = CreateOptions {
                name,
                volumes,
                volatile,
                metacopy,
                size: size.map(|bytes| QuotaLimit { bytes, inodes }),
            };
            if mount {
                let (c, merged) = store.create_mounted(&image, &opts)?;
                let created = MountedContainer {
                    container: &c,
                    mountpoint: &merged,
                };
                return emit(out, &created, || println!("{}", merged.display()));
            }
            let c = store.create_container(&image, &opts)?;
            emit(out, &c, || println!("{}", c.id))
        }
        Cmd::Mount { container } => {
            println!("{}", store.mount_container(&container)?.display());
            Ok(())
        }
        Cmd::Umount { container } => Ok(store.unmount_container(&container)?),
        Cmd::Rm { container, force } => Ok(store.remove_container(&container, force)?),
        Cmd::Ps { all, size, out } => ps(&store, all, size, out),
        Cmd::Diff { container, out } => {
            let changes = store.container_changes(&container)?;
            emit(out, &changes, || {
                for Change { kind, path } in &changes {
                    println!("{} {path}", kind.letter());
                }
            })
        }
        Cmd::Commit {
            container,
            name,
            out,
        } => {
            let img = commit::commit(&store, &container, &name)?;
            emit(out, &img, || println!("{}", img.id))
        }
        Cmd::Volume(cmd) => volume_cmd(&store, cmd),
        Cmd::System(SystemCmd::Df { out }) => {
            let df = store.system_df()?;
            emit(out, &df, || {
                let mut t = Table::new(["TYPE", "TOTAL", "SIZE"]);
                t.row([
                    "Images".into(),
                    df.images.len().to_string(),
                    human(df.layers_size),
                ]);
                t.row([
                    "Containers".into(),
                    df.containers.len().to_string(),
                    human(df.containers_size),
                ]);
                t.row([
                    "Volumes".into(),
                    df.volumes.len().to_string(),
                    human(df.volumes_size),
                ]);
                t.print();
                println!(
                    "\nDisk used by the driver: {} (layers once + containers' writable layers)",
                    human(df.disk_used)
                );
            })
        }
    }
}

fn serve_snapshotter(store: Store, mut opts: ServeOptions, group: Option<String>) -> Result<()> {
    opts.group = group
        .map(|g| {
            nix::unistd::Group::from_name(&g)
                .with_context(|| format!("looking up group {g}"))?
                .map(|g| g.gid)
                .with_context(|| format!("no such group: {g}"))
        })
        .transpose()?;
    // One thread serves the socket and answers metadata calls itself;
    // writes go to blocking threads (see snapshotter::service).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        eprintln!(
            "strata: serving containerd snapshots on {}",
            opts.address.display()
        );
        snapshotter::serve(store, opts, stop)
            .await
            .context("strata snapshotter")
    })
}

fn pull(
    store: &Store,
    reference: &str,
    platform: Option<String>,
    jobs: usize,
    quiet: bool,
    registry: &RegistryFlags,
    out: Output,
) -> Result<()> {
    use strata_driver::image::platform::Platform;
    use strata_driver::progress::{JsonEvents, LayerLines, Progress, Silent};
    use strata_driver::pull::{PullOptions, RemoteImage};
    let opts = PullOptions {
        registry: registry.options()?,
        platform: match platform {
            Some(p) => Platform::parse(&p)?,
            None => Platform::host(),
        },
        jobs,
    };
    let failed = || format!("pulling {reference}");
    let remote = RemoteImage::resolve(reference, &opts).with_context(failed)?;
    let digests = remote.layer_digests();
    let progress: Box<dyn Progress> = match (quiet, out.format) {
        (true, _) => Box::new(Silent),
        (false, Format::Json) => Box::new(JsonEvents::new(digests)),
        (false, Format::Table) => Box::new(LayerLines::new(digests)),
    };
    let report = remote
        .store(store, progress.as_ref())
        .with_context(failed)?;
    drop(progress);
    emit(out, &report, || {
        if !quiet {
            println!("Digest: {}", report.manifest_digest);
            println!("Status: pulled {}", report.reference);
        }
        println!("{}", report.image.id);
    })
}

fn image_cmd(store: &Store, cmd: ImageCmd) -> Result<()> {
    match cmd {
        ImageCmd::Import { src, name, out } => {
            let report = import(
                store,
                &src,
                &ImportOptions {
                    name,
                    progress: out.format == Format::Table,
                },
            )
            .with_context(|| format!("importing {src}"))?;
            emit(out, &report, || {
                for l in &report.layers {
                    let how = if l.shared {
                        "shared (already stored)"
                    } else {
                        "stored"
                    };
                    println!("layer {} {how} {}", short(l.chain_id.hex()), human(l.size));
                }
                println!("{}", report.image.id);
            })
        }
        ImageCmd::Pull {
            reference,
            platform,
            max_concurrent_downloads,
            quiet,
            registry,
            out,
        } => pull(
            store,
            &reference,
            platform,
            max_concurrent_downloads,
            quiet,
            &registry,
            out,
        ),
        ImageCmd::Push {
            image,
            dest,
            registry,
            out,
        } => {
            let report =
                strata_driver::push::push(store, &image, dest.as_deref(), &registry.options()?)
                    .with_context(|| format!("pushing {image}"))?;
            emit(out, &report, || {
                for l in &report.layers {
                    let how = match l.sent {
                        strata_driver::push::Sent::Exists => "already exists",
                        strata_driver::push::Sent::Mounted => "mounted from another repository",
                        strata_driver::push::Sent::Uploaded => "pushed",
                    };
                    println!("{}: {how} ({})", short(l.digest.hex()), human(l.size));
                }
                println!("{}: digest: {}", report.reference, report.manifest_digest);
            })
        }
        ImageCmd::Ls { out } => {
            let usage = store.image_usage()?;
            emit(out, &usage, || {
                let mut t = Table::new(["NAME", "ID", "LAYERS", "SIZE", "SHARED", "UNIQUE"]);
                for u in &usage {
                    t.row([
                        u.image.names.join(",").if_empty("<none>"),
                        short(u.image.id.hex()),
                        u.image.layers.len().to_string(),
                        human(u.size),
                        human(u.shared),
                        human(u.unique),
                    ]);
                }
                t.print();
            })
        }
        ImageCmd::History { image, out } => {
            let img = store.find_image(&image)?;
            let cfg = store.image_config(&img.id)?;
            let created_by = config::layer_history(&cfg);
            #[derive(Serialize)]
            struct Row {
                diff_id: String,
                chain_id: String,
                size: u64,
                created_by: String,
            }
            let mut rows = Vec::new();
            for (i, (chain, diff)) in img.layers.iter().zip(&img.diff_ids).enumerate().rev() {
                rows.push(Row {
                    diff_id: diff.to_string(),
                    chain_id: chain.to_string(),
                    size: store.require_layer(chain)?.size,
                    created_by: created_by.get(i).cloned().unwrap_or_default(),
                });
            }
            emit(out, &rows, || {
                let mut t = Table::new(["DIFF ID", "SIZE", "CREATED BY"]);
                for r in &rows {
                    t.row([short(&r.diff_id[7..]), human(r.size), r.created_by.clone()]);
                }
                t.print();
            })
        }
        ImageCmd::Save {
            image,
            output,
            format,
        } => {
            let id = export::save(store, &image, &output, format)
                .with_context(|| format!("saving {image}"))?;
            println!("{id}");
            Ok(())
        }
        ImageCmd::Rm { image } => {
            let freed = store.remove_image(&image)?;
            println!("removed {image}; freed {} layer(s)", freed.len());
            Ok(())
        }
    }
}

fn ps(store: &Store, all: bool, size: bool, out: Output) -> Result<()> {
    let _lock = store.lock_shared()?;
    let images = store.images()?;
    let mut rows = Vec::new();
    for c in store.containers()? {
        if !all && c.mount_count == 0 {
            continue;
        }
        rows.push(
            if size {
                Some(store.container_usage(&c)?)
            } else {
                None
            }
            .map_or_else(
                || serde_json::json!({"container": c}),
                |u| serde_json::to_value(u).expect("serialisable"),
            ),
        );
    }
    emit(out, &rows, || {
        let mut header = vec!["CONTAINER ID", "NAME", "IMAGE", "MOUNTS"];
        if size {
            header.extend(["SIZE", "VIRTUAL"]);
        }
        let mut t = Table::new(header);
        for r in &rows {
            let c = &r["container"];
            let image_id = c["image"].as_str().unwrap_or("");
            let image = images
                .iter()
                .find(|i| i.id.as_str() == image_id)
                .and_then(|i| i.names.first().cloned())
                .unwrap_or_else(|| match c["snapshot"].as_str() {
                    Some(_) => "(containerd)".into(),
                    None => short(image_id.trim_start_matches("sha256:")),
                });
            let mut cells = vec![
                short(c["id"].as_str().unwrap_or("")),
                c["name"].as_str().unwrap_or("").to_string(),
                image,
                c["mount_count"].to_string(),
            ];
            if size {
                cells.push(human(r["size"].as_u64().unwrap_or(0)));
                cells.push(human(r["virtual_size"].as_u64().unwrap_or(0)));
            }
            t.row(cells);
        }
        t.print();
    })
}

fn volume_cmd(store: &Store, cmd: VolumeCmd) -> Result<()> {
    match cmd {
        VolumeCmd::Create { name } => {
            store.create_volume(&name)?;
            println!("{name}");
        }
        VolumeCmd::Ls { out } => {
            let vols = store.volumes()?;
            emit(out, &vols, || {
                let mut t = Table::new(["VOLUME NAME"]);
                for v in &vols {
                    t.row([v.name.clone()]);
                }
                t.print();
            })?;
        }
        VolumeCmd::Inspect { name } => {
            let v = store.volume(&name)?;
            let info = serde_json::json!({
                "name": v.name,
                "created": v.created,
                "mountpoint": store.volume_data(&name),
                "size": strata_driver::sizes::apparent_size(&store.volume_data(&name))?,
                "used_by": store.volume_users(&name)?,
            });
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        VolumeCmd::Rm { name } => {
            store.remove_volume(&name)?;
            println!("{name}");
        }
    }
    Ok(())
}

/// `create --mount --format json`: the record and where it is mounted.
#[derive(Serialize)]
struct MountedContainer<'a> {
    #[serde(flatten)]
    container: &'a ContainerRecord,
    mountpoint: &'a Path,
}

/// JSON when asked, else the table printer.
fn emit<T: Serialize>(out: Output, value: &T, table: impl FnOnce()) -> Result<()> {
    match out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Table => table(),
    }
    Ok(())
}

fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}

trait IfEmpty {
    fn if_empty(self, alt: &str) -> String;
}
impl IfEmpty for String {
    fn if_empty(self, alt: &str) -> String {
        if self.is_empty() {
            alt.to_string()
        } else {
            self
        }
    }
}

struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Table {
        Table {
            rows: vec![header.into_iter().map(Into::into).collect()],
        }
    }
    fn row<I: IntoIterator<Item = String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().collect());
    }
    fn print(&self) {
        let cols = self.rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &self.rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            println!("{}", line.join("   ").trim_end());
        }
    }
}
