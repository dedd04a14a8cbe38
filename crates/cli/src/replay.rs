//! `pmargin replay`: drive the real-time engine from a file of events, one JSON object a line.

use crate::commands::CliError;
use crate::Inputs;
use clap::Args;
use pmargin_engine::{Engine, EngineConfig, Event, Output};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Example events file (one JSON object a line):\n  \
    {\"type\":\"deposit\",\"account\":\"alice\",\"asset\":\"USDC\",\"amount\":10000}\n  \
    {\"type\":\"trade\",\"account\":\"alice\",\"instrument\":\"BTC-PERPETUAL\",\"size\":1,\"price\":60000,\"counterparty\":\"bob\"}\n  \
    {\"type\":\"price\",\"underlying\":\"BTC\",\"price\":54000}\n\n\
    Event types: deposit, withdrawal, trade, price, mark, vol, quote, activate_params, settlement, funding, liquidate.")]
pub struct ReplayArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Events, one JSON object per line (JSONL)
    #[arg(long, value_name = "FILE", required_unless_present = "feeds")]
    pub events: Option<PathBuf>,
    /// A feeds recording (`pmargin record`) instead: its messages through the feed pipeline,
    /// in order, as quotes, marks and vols (deterministic: the same recording, the same run)
    #[arg(long, value_name = "FILE", conflicts_with = "events")]
    pub feeds: Option<PathBuf>,
    /// Engine settings (JSON): settlement_asset, liquidation_penalty, liquidation_step,
    /// min_liquidation_notional, liquidator, insurance_fund, oracle
    #[arg(long, value_name = "FILE")]
    pub engine_config: Option<PathBuf>,
    /// Print every output as a JSON line (sequence, output) instead of a summary
    #[arg(long)]
    pub json: bool,
}

pub fn replay(args: &ReplayArgs) -> Result<String, CliError> {
    let loaded = args.inputs.load()?;
    let config = match &args.engine_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Input(format!("{}: cannot read the file: {e}", path.display()))
            })?;
            serde_json::from_str::<EngineConfig>(&text)
                .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?
        }
        None => EngineConfig::default(),
    };
    let (source, text) = match (&args.events, &args.feeds) {
        (_, Some(path)) => (path.clone(), crate::feeds::recording_events(path)?),
        (Some(path), None) => (
            path.clone(),
            std::fs::read_to_string(path).map_err(|e| {
                CliError::Input(format!("{}: cannot read the file: {e}", path.display()))
            })?,
        ),
        (None, None) => return Err(CliError::Input("--events or --feeds is required".into())),
    };
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(line)
            .map_err(|e| CliError::Input(format!("{}: line {}: {e}", source.display(), n + 1)))?;
        events.push(event);
    }
    let mut engine = Engine::new(&loaded.portfolio, &loaded.market, &loaded.params, config)
        .map_err(|e| CliError::Input(e.to_string()))?;
    engine
        .ensure_settlement_asset()
        .map_err(|e| CliError::Input(e.to_string()))?;
    let value_before = engine.total_value();
    let mut out = String::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut flows = 0.0;
    engine.apply_all(&events, |engine, event, outputs| {
        let rejected = outputs.iter().any(|o| matches!(o, Output::Rejected { .. }));
        if !rejected {
            match event {
                Event::Deposit { amount, .. } => flows += amount,
                Event::Withdrawal { amount, .. } => flows -= amount,
                _ => {}
            }
        }
        for o in &outputs {
            *counts.entry(output_kind(o)).or_default() += 1;
            if args.json {
                let line = serde_json::json!({ "sequence": engine.sequence(), "output": o });
                let _ = writeln!(out, "{line}");
            }
        }
    });
    if args.json {
        return Ok(out);
    }
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in engine.risks() {
        *statuses.entry(r.status.as_str()).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "replayed {} events over {} accounts",
        events.len(),
        engine.account_ids().count()
    );
    for (kind, n) in &counts {
        let _ = writeln!(out, "  {kind}: {n}");
    }
    let _ = writeln!(out, "accounts by status: {statuses:?}");
    let _ = writeln!(out, "insurance fund: {:.2}", engine.insurance_fund());
    let _ = writeln!(
        out,
        "total value (equity + fund): before {value_before:.2}, deposits - withdrawals {flows:.2}, after {:.2}",
        engine.total_value()
    );
    Ok(out)
}

fn output_kind(o: &Output) -> &'static str {
    match o {
        Output::Rejected { .. } => "rejected",
        Output::MarginChange { .. } => "margin_change",
        Output::LiquidationFill { .. } => "liquidation_fill",
        Output::LiquidationSeize { .. } => "liquidation_seize",
        Output::CloseOut { .. } => "close_out",
        Output::Deleveraged { .. } => "deleveraged",
        Output::LiquidationsSuspended { .. } => "liquidations_suspended",
        Output::Settled { .. } => "settled",
    }
}
