//! # pmargin-sim: liquidation cascades
//!
//! Replays a price path through the real-time engine ([`pmargin_engine::Engine`]) and reports,
//! step by step, the liquidations, the bad debt, the insurance fund and the socialised loss,
//! with an optional market-impact model in which liquidation volume moves the price.
//!
//! * [`path`]: the price path format (CSV `step,<U1>,<U2>...`);
//! * [`sim`]: the loop, the impact model and the figures;
//! * [`demo`]: the bundled 2020-03-12 crash on a synthetic closed book of 10,000 accounts;
//! * [`report`]: the text report; [`plot`]: the chart (SVG and PNG).

pub mod demo;
pub mod path;
pub mod plot;
pub mod report;
pub mod sim;

pub use path::{PathError, PricePath};
pub use sim::{run, SimReport, StepReport, Totals};

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::Engine;
pub use pmargin_engine::EngineConfig;

/// An engine ready to simulate: built from the inputs, with the settlement asset in the book.
pub fn build_engine(
    portfolio: &Portfolio,
    market: &Market,
    params: &Params,
    config: EngineConfig,
) -> Result<Engine, String> {
    let mut engine = Engine::new(portfolio, market, params, config).map_err(|e| e.to_string())?;
    engine
        .ensure_settlement_asset()
        .map_err(|e| e.to_string())?;
    Ok(engine)
}

/// The knobs of the bundled scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    pub accounts: usize,
    pub seed: u64,
    pub steps_per_day: usize,
    pub impact: f64,
    pub insurance_fund: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            accounts: demo::DEMO_ACCOUNTS,
            seed: demo::DEMO_SEED,
            steps_per_day: demo::DEMO_STEPS_PER_DAY,
            impact: demo::DEMO_IMPACT,
            insurance_fund: demo::DEMO_INSURANCE_FUND,
        }
    }
}

/// Runs the bundled 2020-03-12 scenario (no charts).
pub fn run_demo(options: &DemoOptions) -> Result<SimReport, String> {
    let book = demo::demo_book(options.accounts, options.seed, options.insurance_fund)?;
    let path = demo::demo_path(options.steps_per_day, options.seed)?;
    let mut engine = build_engine(&book.portfolio, &book.market, &book.params, book.config)?;
    let scenario = format!(
        "demo: the 2020-03-12 crash on a synthetic closed book of {} accounts (seed {})",
        options.accounts, options.seed
    );
    run(&mut engine, &path, options.impact, &scenario)
}
