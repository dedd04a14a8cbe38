//! Market data from venues (issue 18): `pmargin market from-deribit FILE` (a Deribit chain
//! snapshot into a market.json) and `pmargin record` (capture feeds to a file that
//! `pmargin record --events` turns into engine events, deterministically).

use crate::commands::CliError;
use clap::{Args, Subcommand};
use pmargin_feeds::config::FeedsConfig;
use pmargin_feeds::connection::{self, Received};
use pmargin_feeds::health::Health;
use pmargin_feeds::pipeline::Pipeline;
use pmargin_feeds::record;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum MarketCommand {
    /// A Deribit option chain (the fields of get_book_summary_by_currency or of tickers, JSON
    /// or CSV) as a market.json: index -> prices, each expiry's forward -> marks, each
    /// strike's mark_iv -> the smile
    FromDeribit {
        /// The chain (JSON: the RPC answer or its `result` array; otherwise CSV with a header)
        file: PathBuf,
    },
}

#[derive(Args)]
pub struct RecordArgs {
    /// Feeds to capture (feeds.toml); with --events, a recording to turn into events instead
    #[arg(long, value_name = "FILE")]
    pub feeds: PathBuf,
    /// Where to write the recording (JSON lines; the feeds.toml is kept in its first line)
    #[arg(long, value_name = "FILE", required_unless_present = "events")]
    pub out: Option<PathBuf>,
    /// Stop after this many seconds (default: at Ctrl-C)
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Print the engine events (JSONL, for `pmargin replay --events`) the recording given as
    /// --feeds makes: the feed pipeline run on its messages in order, so the same recording
    /// always gives the same events
    #[arg(long)]
    pub events: bool,
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("{}: cannot read the file: {e}", path.display())))
}

pub fn market(command: &MarketCommand) -> Result<String, CliError> {
    match command {
        MarketCommand::FromDeribit { file } => {
            let snapshot = pmargin_feeds::chain::read_chain(&read(file)?)
                .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
            serde_json::to_string_pretty(&snapshot)
                .map(|s| s + "\n")
                .map_err(|e| CliError::Internal(e.to_string()))
        }
    }
}

pub fn record(args: &RecordArgs) -> Result<String, CliError> {
    if args.events {
        return recording_events(&args.feeds);
    }
    let text = read(&args.feeds)?;
    let config =
        FeedsConfig::parse(&args.feeds.display().to_string(), &text).map_err(CliError::Input)?;
    let out_path = args.out.clone().unwrap_or_default();
    let file = std::fs::File::create(&out_path).map_err(|e| {
        CliError::Input(format!(
            "{}: cannot create the file: {e}",
            out_path.display()
        ))
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Internal(e.to_string()))?;
    let health = Health::new(&config);
    let names: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
    let written = runtime.block_on(async {
        let (tasks, mut rx) = connection::spawn(&config, &health);
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{}", record::header(&text)).map_err(|e| e.to_string())?;
        let deadline = args.seconds.map(|s| tokio::time::Instant::now() + std::time::Duration::from_secs(s));
        let mut n = 0u64;
        loop {
            let next: Option<Received> = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::signal::ctrl_c() => None,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => None,
            };
            let Some(m) = next else { break };
            writeln!(out, "{}", record::line(m.recv_ms, &names[m.feed], &m.text)).map_err(|e| e.to_string())?;
            n += 1;
        }
        tasks.iter().for_each(|t| t.abort());
        out.flush().map_err(|e| e.to_string())?;
        Ok::<u64, String>(n)
    });
    let n = written.map_err(|e| CliError::Input(format!("{}: {e}", out_path.display())))?;
    Ok(format!(
        "recorded {n} messages to {}\nfeeds: {}\n",
        out_path.display(),
        health.to_json(connection::now_ms())
    ))
}

/// The events a recording makes, one JSON object a line.
pub fn recording_events(path: &Path) -> Result<String, CliError> {
    let rec = record::read(&path.display().to_string(), &read(path)?).map_err(CliError::Input)?;
    let mut pipeline = Pipeline::new(&rec.config);
    let mut out = String::new();
    let (mut malformed, mut out_of_order) = (0u64, 0u64);
    for (feed, line) in &rec.messages {
        match pipeline.on_message(*feed, line.recv_ms, &line.text) {
            Ok(outcome) => {
                out_of_order += outcome.out_of_order;
                for post in outcome.posts {
                    let event = pmargin_server::feeds::event_of(post);
                    out.push_str(
                        &serde_json::to_string(&event)
                            .map_err(|e| CliError::Internal(e.to_string()))?,
                    );
                    out.push('\n');
                }
            }
            Err(e) => {
                malformed += 1;
                eprintln!("pmargin: {} feed {}: {e}", path.display(), line.feed);
            }
        }
    }
    eprintln!(
        "pmargin: {} messages, {malformed} malformed, {out_of_order} out of order",
        rec.messages.len()
    );
    Ok(out)
}
