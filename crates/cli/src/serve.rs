//! `pmargin serve`: the risk service (HTTP/WebSocket API over the real-time engine).

use clap::Args;
use pmargin_server::demo::{demo_genesis, empty_genesis, engine_config, FeedConfig};
use pmargin_server::store::Genesis;
use pmargin_server::{start, ServerConfig};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  pmargin serve --demo\n  PMARGIN_ADMIN_KEY=secret pmargin serve --listen 127.0.0.1:9000 --data-dir /var/lib/pmargin\n\n\
    The first start creates an admin API key, prints it once and stores only its hash;\n\
    PMARGIN_ADMIN_KEY sets it instead. API: GET /v1/openapi.json."
)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Data directory (event log, audit trail, key hashes); created on first start
    #[arg(long, default_value = "./pmargin-data")]
    pub data_dir: PathBuf,
    /// Bundled demo book, and real prices (data/history.csv) replayed into the oracle
    #[arg(long)]
    pub demo: bool,
    /// Wall milliseconds per replayed history day (with --demo)
    #[arg(long, default_value_t = 1000)]
    pub demo_day_ms: u64,
    /// Starting portfolio of a new data directory (default: no accounts)
    #[arg(long, value_name = "FILE")]
    pub portfolio: Option<PathBuf>,
    /// Starting market of a new data directory (default: the demo market)
    #[arg(long, value_name = "FILE")]
    pub market: Option<PathBuf>,
    /// Starting risk parameters of a new data directory (default: the demo parameters)
    #[arg(long, value_name = "FILE")]
    pub params: Option<PathBuf>,
    /// Opening insurance fund of a new data directory
    #[arg(long, default_value_t = 0.0)]
    pub insurance_fund: f64,
    /// Threads serving HTTP (default: one per core but one, kept for the engine's writer)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

/// One HTTP worker per core but one: the writer thread that applies and commits every event
/// gets a core of its own, and requests are not preempted by it (on 2 cores this also gave
/// the lowest read latency: 1 worker answered more GETs than 2, with a shorter tail).
fn default_workers() -> usize {
    pmargin_server::cores_but_one()
}

fn read(path: &Option<PathBuf>, default: &str) -> Result<String, String> {
    match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("{}: cannot read the file: {e}", p.display())),
        None => Ok(default.to_string()),
    }
}

fn genesis(args: &ServeArgs) -> Result<Genesis, String> {
    if args.demo {
        return Ok(demo_genesis());
    }
    let base = empty_genesis();
    Ok(Genesis {
        portfolio: read(&args.portfolio, &base.portfolio)?,
        market: read(&args.market, &base.market)?,
        params: read(&args.params, &base.params)?,
        config: engine_config(args.insurance_fund),
    })
}

/// Runs the service until Ctrl-C.
pub fn serve(args: &ServeArgs) -> Result<String, String> {
    let mut config = ServerConfig::new(
        args.listen.clone(),
        Some(args.data_dir.clone()),
        genesis(args)?,
    );
    config.admin_key = std::env::var("PMARGIN_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    // The demo brings its own committee (keys in the data directory) unless one is configured.
    let mut demo_committee = None;
    if args.demo {
        config.demo_feed = Some(FeedConfig {
            day_ms: args.demo_day_ms.max(1),
            ..FeedConfig::default()
        });
        if !args.data_dir.join("committee.json").exists() {
            let demo = pmargin_server::demo::demo_committee(&args.data_dir)?;
            config.committee = Some(demo.committee.clone());
            demo_committee = Some(demo);
        }
    }
    let workers = args.workers.map_or_else(default_workers, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let running = start(config).await?;
        eprintln!("pmargin serve: listening on http://{} (data in {})", running.addr, args.data_dir.display());
        match running.snapshot_seq {
            Some(seq) => eprintln!(
                "  recovered {} events: the snapshot after event {seq}, then {} later events replayed",
                running.recovered_events, running.replayed_events
            ),
            None => eprintln!("  recovered {} events from the log", running.recovered_events),
        }
        if let Some(key) = &running.new_admin_key {
            eprintln!("  admin API key (shown once; only its hash is stored): {key}");
        }
        if args.demo {
            eprintln!("  demo: bundled book, BTC/ETH quotes replayed from data/history.csv every {} ms per day", args.demo_day_ms);
        }
        if let Some(demo) = &demo_committee {
            eprint!("{}", demo.help(&running.addr.to_string()));
        }
        eprintln!("  dashboard: http://{}/{}", running.addr, running.new_admin_key.as_ref().map(|k| format!("#key={k}")).unwrap_or_default());
        eprintln!("  API description: http://{}/v1/openapi.json; stop with Ctrl-C", running.addr);
        tokio::signal::ctrl_c().await.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
        let sequence = running.state.engine().sequence();
        running.stop().await?;
        Ok(format!("stopped at event sequence {sequence}\n"))
    })
}
