//! `strata-prof serve`: `record` with the Prometheus exporter as its sink
//! and no end but SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::containers::ContainerNames;
use crate::exporter::http::{self, ScrapeRequest};
use crate::exporter::Exporter;
use crate::record::{LoopEnd, WatchArgs, Watching};
use crate::session::Session;

/// Prometheus' list of exporter default ports has filled 9100-9999 and
/// goes on sequentially above 10000; this one is well clear of both.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10990";

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Address for /metrics (port 0: any free port, printed at start).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Label copy-up metrics with the strata container they happened in
    /// (series of containers that are gone are dropped).
    #[arg(long)]
    pub per_container: bool,
    /// Stop after this long, as SIGTERM would.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

/// How often `serve` forgets containers that went.
const CONTAINER_CHECK: Duration = Duration::from_secs(5);

pub async fn serve(args: ServeArgs, store_root: &Path) -> Result<()> {
    // Bound before the probes attach: a taken port fails at once.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let watching = Watching::start(&args.watch)?;
    let containers = args.per_container.then(|| ContainerNames::new(store_root));
    let mut exporter = Exporter::new(
        watching.session(),
        containers,
        args.watch.vfs,
        args.watch.probe_cost,
    );
    let (scrapes, requests) = mpsc::channel::<ScrapeRequest>(64);
    tokio::spawn(http::serve(listener, scrapes));
    eprintln!("strata-prof: serving http://{addr}/metrics");
    let answering = exporter.clone();
    let answer = move |req: ScrapeRequest, session: &Session| {
        let body = answering.scrape(session, req.format)?;
        // The scraper may have hung up; nothing to do about it.
        let _ = req.reply.send(body);
        Ok(())
    };
    let end = LoopEnd {
        interval: CONTAINER_CHECK,
        duration: args.duration,
    };
    watching
        .run(&end, &mut exporter, Some((requests, Box::new(answer))))
        .await?;
    eprintln!("strata-prof: stopped; probes detached");
    Ok(())
}
