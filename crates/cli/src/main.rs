//! `pmargin`: the command line of the portfolio margin engine.
//!
//! Thin by design: it reads files, calls `pmargin-core`, and prints. Input problems exit with
//! code 2 and a message on stderr naming the file, the field and the account; stdout then
//! stays empty so a script never mistakes half a report for a whole one.

mod batch;
mod commands;
mod compare;
mod demo;
mod external;
mod feeds;
mod inputs;
mod replay;
mod research;
mod route;
mod serve;
mod settle;
mod simulate;
mod table;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

// The engine allocates many small, short-lived buffers (trial fills, re-margins, reports):
// mimalloc serves them faster than the system allocator (about 8% off the replay benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pmargin",
    version,
    about = "Portfolio margin risk engine for crypto derivatives",
    long_about = "Portfolio margin risk engine for crypto derivatives.\n\n\
        Computes each account's equity, initial and maintenance margin, status and liquidation \
        prices with SPAN-style scenario grids and filtered historical simulation, beside the \
        isolated (standard) margin the same positions would need.",
    after_help = "Examples:\n  pmargin demo\n  pmargin margin --portfolio portfolio.json --market market.json --params params.json\n  pmargin scenarios --account alice --portfolio portfolio.json --market market.json --params params.json\n  pmargin what-if --account alice --trade BTC-PERPETUAL:-1 --portfolio portfolio.json --market market.json --params params.json\n  pmargin bench --accounts 100000\n  pmargin backtest --model all\n  pmargin calibrate --out proposal.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The three inputs every margin computation needs, plus the optional history.
#[derive(Args, Clone)]
pub struct Inputs {
    /// Portfolio file (JSON, docs/FORMATS.md)
    #[arg(long, value_name = "FILE")]
    pub portfolio: PathBuf,
    /// Market snapshot (JSON)
    #[arg(long, value_name = "FILE")]
    pub market: PathBuf,
    /// Risk parameter set (JSON, or TOML when the name ends in .toml)
    #[arg(long, value_name = "FILE")]
    pub params: PathBuf,
    /// Daily close history (CSV); enables filtered historical simulation (VaR/ES)
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Margin every account: equity, IM, MM, status, liquidation prices, standard margin
    #[command(
        after_help = "Examples:\n  pmargin margin --portfolio portfolio.json --market market.json --params params.json --json\n  pmargin margin --portfolio portfolio.json --market market.json --params v2.json --compare-params v1.json"
    )]
    Margin {
        #[command(flatten)]
        inputs: Inputs,
        /// Print the JSON margin report of docs/FORMATS.md instead of a table
        #[arg(long)]
        json: bool,
        /// Also margin every account under the parameter set OLD: its IM, MM and status beside
        /// the current ones, and the change (JSON: a `compare` object per account)
        #[arg(long, value_name = "OLD")]
        compare_params: Option<PathBuf>,
    },
    /// One account's scenario P&L table (price moves down the side, vol shifts across)
    #[command(
        after_help = "Example:\n  pmargin scenarios --account alice --portfolio portfolio.json --market market.json --params params.json"
    )]
    Scenarios {
        /// Account id
        #[arg(long)]
        account: String,
        #[command(flatten)]
        inputs: Inputs,
        /// Print every scenario as JSON
        #[arg(long)]
        json: bool,
    },
    /// Margin before and after hypothetical trades: the pre-trade check
    #[command(
        name = "what-if",
        after_help = "Example:\n  pmargin what-if --account alice --trade BTC-PERPETUAL:-1@60500 --trade BTC-27DEC26-70000-C:-2 \\\n      --portfolio portfolio.json --market market.json --params params.json\n\n\
            A perpetual or future fills at @PRICE (default: its mark). An option's premium, at @PRICE\n\
            (default: its Black-76 value), is paid from or into the settlement asset's balance."
    )]
    WhatIf {
        /// Account id
        #[arg(long)]
        account: String,
        /// INSTRUMENT:SIZE[@PRICE], repeatable; negative SIZE sells
        #[arg(long = "trade", required = true, value_name = "TRADE")]
        trades: Vec<String>,
        /// Balance that pays option premiums
        #[arg(long, default_value = "USDC")]
        settlement_asset: String,
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long)]
        json: bool,
    },
    /// Margin the bundled demo book (BTC, ETH, SOL; options and perpetuals); no inputs needed
    Demo {
        /// Print the JSON margin report instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Backtest margin models on real history: coverage, Kupiec, Christoffersen, traffic light
    Backtest(research::BacktestArgs),
    /// Propose new scan ranges from EWMA volatility (writes a proposal file; changes nothing live)
    Calibrate(research::CalibrateArgs),
    /// Replay a price path through the engine: liquidations, bad debt, insurance fund, socialised loss
    Simulate(simulate::SimulateArgs),
    /// Run the risk service: HTTP/WebSocket API on loopback, durable event log, API keys
    Serve(serve::ServeArgs),
    /// Route requests to K engine groups by account (sharding): the router in front of them
    Route(route::RouteArgs),
    /// Sign an account's margin figures as an EIP-712 MarginUpdate (secp256k1)
    Sign(settle::SignArgs),
    /// Verify a signed settlement message and name its signer
    Verify(settle::VerifyArgs),
    /// Drive the real-time engine from a file of events (JSONL)
    Replay(replay::ReplayArgs),
    /// Market snapshots from venue data (`market from-deribit FILE`)
    #[command(subcommand)]
    Market(feeds::MarketCommand),
    /// Capture venue feeds (feeds.toml) to a file; `--events` turns a capture into engine events
    Record(feeds::RecordArgs),
    /// Positions in other protocols read from an Ethereum node (`external from-chain`)
    #[command(subcommand)]
    External(external::ExternalCommand),
    /// Time a full grid recompute of a synthetic book, to size a deployment
    #[command(after_help = "Ends with the line `accounts_per_second: <number>`.")]
    Bench {
        /// Number of accounts (10 positions each, 5 underlyings, 500 option instruments)
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Timed repetitions; the median is reported
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Seed of the synthetic book
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Write the synthetic book as portfolio.json, market.json and params.json into DIR
        /// instead of timing it
        #[arg(long, value_name = "DIR")]
        write_book: Option<PathBuf>,
        /// Time the whole `margin --json` path (parse, margin, liquidation prices, write)
        #[arg(long)]
        end_to_end: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Margin {
            inputs,
            json,
            compare_params: None,
        } => commands::margin(&inputs, json),
        Command::Margin {
            inputs,
            json,
            compare_params: Some(old),
        } => compare::margin(&inputs, &old, json),
        Command::Scenarios {
            account,
            inputs,
            json,
        } => commands::scenarios(&inputs, &account, json),
        Command::WhatIf {
            account,
            trades,
            settlement_asset,
            inputs,
            json,
        } => commands::what_if(&inputs, &account, &trades, &settlement_asset, json),
        Command::Demo { json } => demo::run(json),
        Command::Replay(args) => replay::replay(&args),
        Command::Market(command) => feeds::market(&command),
        Command::Record(args) => feeds::record(&args),
        Command::External(command) => external::run(&command),
        Command::Simulate(args) => simulate::simulate(&args).map_err(commands::CliError::Input),
        Command::Serve(args) => serve::serve(&args).map_err(commands::CliError::Input),
        Command::Route(args) => route::route(&args).map_err(commands::CliError::Input),
        Command::Sign(args) => settle::sign(&args),
        Command::Verify(args) => settle::verify(&args),
        Command::Backtest(args) => research::backtest(&args).map_err(commands::CliError::Input),
        Command::Calibrate(args) => research::calibrate(&args).map_err(commands::CliError::Input),
        Command::Bench {
            accounts,
            threads,
            repeat,
            seed,
            write_book,
            end_to_end,
        } => match write_book {
            Some(dir) => batch::write_book(&dir, accounts, seed),
            None if end_to_end => batch::end_to_end(accounts, threads, repeat, seed),
            None => commands::bench(accounts, threads, repeat, seed),
        },
    };
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
