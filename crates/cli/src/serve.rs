//! `pmargin serve`: the risk service (HTTP/WebSocket API over the real-time engine).

use clap::Args;
use pmargin_server::demo::{demo_genesis, empty_genesis, engine_config_with, FeedConfig};
use pmargin_server::limits::Limits;
use pmargin_server::settlement::SettlementConfig;
use pmargin_server::store::Genesis;
use pmargin_server::{start, ServerConfig};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  pmargin serve --demo\n  PMARGIN_ADMIN_KEY=$(openssl rand -hex 16) pmargin serve --listen 127.0.0.1:9000 --data-dir /var/lib/pmargin\n\n\
    The first start creates an admin API key and writes it to <data-dir>/admin_key (mode 0600;\n\
    only its keyed hash is stored); PMARGIN_ADMIN_KEY sets it instead, and must carry at least\n\
    128 bits (32 random hex digits). Stored keys are HMAC-SHA256 under the secret in\n\
    <data-dir>/key_secret (0600), or PMARGIN_KEY_SECRET (hex). API: GET /v1/openapi.json."
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
    /// Venue feeds into the oracle and the vol surface (feeds.toml: docs/FORMATS.md)
    #[arg(long, value_name = "FILE")]
    pub feeds: Option<PathBuf>,
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
    /// How far ahead of this server's clock a quote's ts_ms may be (422 beyond)
    #[arg(long, value_name = "MS", default_value_t = pmargin_server::DEFAULT_MAX_CLOCK_SKEW_MS,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub max_clock_skew_ms: i64,
    /// Stable price: largest relative move per second of a new data directory's stable price
    /// (collateral counts at min(index, stable), liabilities at max, for withdrawals and new
    /// risk); 0 turns it off
    #[arg(long, value_name = "RATE", default_value_t = pmargin_server::demo::DEFAULT_STABLE_PRICE_RATE)]
    pub stable_price_rate: f64,
    /// Writes per second per API key (token bucket; 429 with Retry-After beyond)
    #[arg(long, value_name = "N", default_value_t = Limits::default().writes_per_second)]
    pub rate_limit: f64,
    /// Writes one key may send at once before the rate limit applies
    #[arg(long, value_name = "N", default_value_t = Limits::default().write_burst)]
    pub rate_burst: f64,
    /// Events waiting for the writer at most (503 beyond)
    #[arg(long, value_name = "N", default_value_t = Limits::default().writer_queue)]
    pub writer_queue: usize,
    /// Heavy computations (reports, what-ifs, scenario tables) running or queued at most (503 beyond)
    #[arg(long, value_name = "N", default_value_t = Limits::default().heavy_queue)]
    pub heavy_queue: usize,
    /// Largest page of GET /v1/accounts and /v1/audit
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_page)]
    pub max_page: usize,
    /// Streams open at once per API key (429 beyond)
    #[arg(long, value_name = "N", default_value_t = Limits::default().streams_per_key)]
    pub streams_per_key: usize,
    /// Longest time a request may take (503 beyond)
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().request_timeout.as_secs())]
    pub request_timeout_s: u64,
    /// Longest time a client may take to send a request head, or to start the next one on a
    /// kept-alive connection (the connection is closed beyond)
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().header_read_timeout.as_secs())]
    pub header_timeout_s: u64,
    /// How often the oracle's indices are re-assessed without quotes (a dead feed goes stale)
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub oracle_tick_ms: u64,
    /// EIP-712 domain of the signed settlement messages: the chain id
    #[arg(long, value_name = "ID", default_value_t = SettlementConfig::default().chain_id)]
    pub chain_id: u64,
    /// EIP-712 domain: the verifying contract (0x and 40 hex digits)
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value = "0x0000000000000000000000000000000000000000"
    )]
    pub verifying_contract: String,
    /// The deployment every governance signature names (approvals, cancellations, the
    /// guardian's): one made for another deployment is refused. Default:
    /// eip712:<chain id>:0x<verifying contract>
    #[arg(long, value_name = "ID")]
    pub deployment_id: Option<String>,
    /// Replicated event log on NATS JetStream instead of the data directory's SQLite database:
    /// nats://HOST:PORT[,HOST:PORT...] (three servers or more: three copies of every event).
    /// Every node of a deployment names the same servers; one leads, the others follow and
    /// forward writes to it (docs/DEPLOYMENT.md)
    #[arg(long, value_name = "URL", requires = "node_id")]
    pub event_log: Option<String>,
    /// This node's name in a replicated deployment (with --event-log)
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// The URL other nodes forward writes to (with --event-log; default: http:// and the
    /// address listened on)
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// This node's group in a sharded deployment: I/K, group I of K (0/2, 1/2), in the order
    /// of `pmargin route`'s --group flags. Only a group takes the one-sided legs the router
    /// makes of a fill between two groups; with --event-log, the group's log is named
    /// pmargin_gI, so the groups can share one NATS cluster
    #[arg(long, value_name = "I/K", value_parser = pmargin_server::replicated::shard::Shard::parse)]
    pub shard: Option<pmargin_server::replicated::shard::Shard>,
}

fn parse_address(text: &str) -> Result<[u8; 20], String> {
    let hex_digits = text.strip_prefix("0x").unwrap_or(text);
    let mut out = [0u8; 20];
    let valid = hex_digits.len() == 40 && hex_digits.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(format!(
            "--verifying-contract: expected 0x and 40 hex digits, got `{text}`"
        ));
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_digits[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("--verifying-contract: {e}"))?;
    }
    Ok(out)
}

fn limits(args: &ServeArgs) -> Result<Limits, String> {
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("--{name} must be a positive number, got {v}"))
        }
    };
    let at_least_one = |name: &str, v: usize| {
        if v >= 1 {
            Ok(v)
        } else {
            Err(format!("--{name} must be at least 1"))
        }
    };
    Ok(Limits {
        writes_per_second: positive("rate-limit", args.rate_limit)?,
        write_burst: positive("rate-burst", args.rate_burst)?,
        writer_queue: at_least_one("writer-queue", args.writer_queue)?,
        heavy_queue: at_least_one("heavy-queue", args.heavy_queue)?,
        max_page: at_least_one("max-page", args.max_page)?,
        streams_per_key: at_least_one("streams-per-key", args.streams_per_key)?,
        request_timeout: std::time::Duration::from_secs(args.request_timeout_s.max(1)),
        header_read_timeout: std::time::Duration::from_secs(args.header_timeout_s.max(1)),
        oracle_tick: Some(std::time::Duration::from_millis(
            args.oracle_tick_ms.max(10),
        )),
        ..Limits::default()
    })
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
        let mut demo = demo_genesis();
        demo.config.oracle = engine_config_with(0.0, stable_rate(args)?).oracle;
        return Ok(demo);
    }
    let base = empty_genesis();
    Ok(Genesis {
        portfolio: read(&args.portfolio, &base.portfolio)?,
        market: read(&args.market, &base.market)?,
        params: read(&args.params, &base.params)?,
        config: engine_config_with(args.insurance_fund, stable_rate(args)?),
    })
}

fn stable_rate(args: &ServeArgs) -> Result<Option<f64>, String> {
    match args.stable_price_rate {
        0.0 => Ok(None),
        r if r.is_finite() && r > 0.0 => Ok(Some(r)),
        r => Err(format!(
            "--stable-price-rate must be 0 (off) or a positive rate per second, got {r}"
        )),
    }
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
    config.max_clock_skew_ms = args.max_clock_skew_ms;
    config.limits = limits(args)?;
    if let (Some(url), Some(node)) = (&args.event_log, &args.node_id) {
        let mut log = pmargin_server::replicated::EventLogConfig::parse(url, node)?;
        log.advertise = args.advertise.clone();
        if let Some(shard) = &args.shard {
            log.name = format!("pmargin_g{}", shard.index);
        }
        config.event_log = Some(log);
    }
    config.shard = args.shard;
    if let Some(path) = &args.feeds {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the file: {e}", path.display()))?;
        config.feeds = Some(pmargin_feeds::config::FeedsConfig::parse(
            &path.display().to_string(),
            &text,
        )?);
    }
    config.settlement.chain_id = args.chain_id;
    config.settlement.verifying_contract = parse_address(&args.verifying_contract)?;
    if let Some(id) = &args.deployment_id {
        if id.trim().is_empty() || id.len() > 128 {
            return Err(format!(
                "--deployment-id: 1 to 128 characters, got {} characters",
                id.len()
            ));
        }
        config.deployment_id = Some(id.clone());
    }
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
        // (The key itself never goes to the log: logs are kept and shipped.)
        match (&running.new_admin_key, &running.admin_key_file) {
            (_, Some(path)) => eprintln!("  a new admin API key is in {} (mode 0600; only its keyed hash is stored)", path.display()),
            (Some(_), None) => eprintln!("  a new admin API key was made; it is not shown"),
            _ => {}
        }
        if args.demo {
            eprintln!("  demo: bundled book, BTC/ETH quotes replayed from data/history.csv every {} ms per day", args.demo_day_ms);
        }
        if let Some(demo) = &demo_committee {
            eprint!("{}", demo.help(&running.addr.to_string()));
        }
        eprintln!("  dashboard: http://{}/ (open it with an API key)", running.addr);
        eprintln!("  API description: http://{}/v1/openapi.json; stop with Ctrl-C", running.addr);
        tokio::signal::ctrl_c().await.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
        let sequence = running.state.engine().sequence();
        running.stop().await?;
        Ok(format!("stopped at event sequence {sequence}\n"))
    })
}
