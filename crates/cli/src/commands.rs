//! The subcommands: load inputs, call the core, render.

use crate::{table, Inputs};
use pmargin_core::report::ReportOptions;
use pmargin_core::whatif::{what_if as core_what_if, Trade};
use pmargin_core::{margin_report, Book, Evaluator, Portfolio, RiskArrays};
use std::time::Instant;

// The error and the loaded inputs live in `inputs`, below every command module (batch, demo,
// compare use them too); re-exported here for the modules that still name them from here.
pub use crate::inputs::{CliError, Loaded};

type Result<T> = std::result::Result<T, CliError>;

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError::Internal(format!("cannot serialise the report: {e}")))
}

pub fn margin(inputs: &Inputs, json: bool) -> Result<String> {
    let l = inputs.load()?;
    if json {
        // Streamed to stdout as it is computed (a report can be far larger than memory).
        return crate::batch::margin_json(l);
    }
    run_margin(&l, json)
}

fn run_margin(l: &Loaded, json: bool) -> Result<String> {
    let report = margin_report(
        &l.portfolio,
        &l.market,
        &l.params,
        l.history.as_ref(),
        ReportOptions::default(),
    )?;
    if json {
        to_json(&report)
    } else {
        Ok(table::margin_table(&report))
    }
}

pub fn scenarios(inputs: &Inputs, account: &str, json: bool) -> Result<String> {
    let l = inputs.load()?;
    let portfolio = Portfolio {
        source: l.portfolio.source.clone(),
        accounts: l
            .portfolio
            .accounts
            .iter()
            .filter(|a| a.id == account)
            .cloned()
            .collect(),
    };
    if portfolio.accounts.is_empty() {
        return Err(CliError::Input(format!(
            "{}: no account with id `{account}`",
            l.portfolio.source
        )));
    }
    let book = Book::build(&portfolio, &l.market, &l.params)?;
    let fhs = match &l.history {
        Some(h) => Some(pmargin_core::fhs::FhsScenarios::build(
            h,
            &l.params.statistical,
        )?),
        None => None,
    };
    let arrays = RiskArrays::compute(&book, fhs.as_ref())?;
    let table = Evaluator::new(&book, &arrays).scenario_table(&book.accounts[0])?;
    if json {
        to_json(&table)
    } else {
        Ok(table::scenario_table(&table))
    }
}

pub fn what_if(
    inputs: &Inputs,
    account: &str,
    trades: &[String],
    settlement_asset: &str,
    json: bool,
) -> Result<String> {
    let trades = trades
        .iter()
        .map(|t| Trade::parse(t).map_err(|e| CliError::Input(format!("--trade: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let l = inputs.load()?;
    let result = core_what_if(
        &l.portfolio,
        account,
        &trades,
        &l.market,
        &l.params,
        l.history.as_ref(),
        settlement_asset,
    )?;
    if json {
        to_json(&result)
    } else {
        Ok(table::what_if_table(&result))
    }
}

pub fn bench(accounts: usize, threads: Option<usize>, repeat: usize, seed: u64) -> Result<String> {
    let pool = crate::batch::bench_pool(accounts, threads, repeat)?;
    let started = Instant::now();
    let book = pmargin_core::synthetic::book(accounts, seed)?;
    let build_secs = started.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(repeat);
    let mut status_counts = [0usize; 4];
    for round in 0..repeat {
        let t0 = Instant::now();
        let requirements = pool.install(|| -> Result<_> {
            let arrays = RiskArrays::compute(&book, None)?;
            Ok(Evaluator::new(&book, &arrays).requirements()?)
        })?;
        times.push(t0.elapsed().as_secs_f64());
        if round == 0 {
            for r in &requirements {
                status_counts[r.status as usize] += 1;
            }
        }
        eprintln!("round {}/{repeat}: {:.1} ms", round + 1, times[round] * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let options = book
        .instruments
        .iter()
        .filter(|i| i.option.is_some())
        .count();
    Ok(format!(
        "synthetic book: {accounts} accounts, {} positions, {} underlyings, {options} option instruments (built in {:.2} s)\n\
         threads: {}\n\
         statuses: healthy {}, restricted {}, liquidatable {}, bankrupt {}\n\
         full grid recompute (risk arrays + every account), median of {repeat}: {:.2} ms\n\
         accounts_per_second: {:.0}\n",
        accounts * pmargin_core::synthetic::POSITIONS_PER_ACCOUNT,
        book.underlyings.len(),
        build_secs,
        pool.current_num_threads(),
        status_counts[0],
        status_counts[1],
        status_counts[2],
        status_counts[3],
        median * 1e3,
        accounts as f64 / median,
    ))
}
