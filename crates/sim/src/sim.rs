//! The simulation loop: a price path through the engine, with optional market impact.
//!
//! ## One step
//!
//! For step `t` with path prices `P_t(u)`:
//!
//! 1. the engine receives `Event::Price { u, F_t(u) x P_t(u) }` for every underlying `u` of the
//!    path, in the path's column order (the engine re-margins and liquidates after each), then
//!    one `Event::Liquidate` so every account is looked at with all of the step's prices;
//! 2. the engine's outputs are tallied: liquidation fills (partial liquidations and the
//!    transfers of a close-out, all to the liquidator account at the mark), close-outs with
//!    their deficit, what the insurance fund paid and what was socialised by auto-deleveraging;
//! 3. the impact factor is updated for the next step (below).
//!
//! ## Market impact
//!
//! `F_0(u) = 1` and, after step `t`,
//!
//! ```text
//! F_{t+1}(u) = F_t(u) x clamp(1 - K x S_t(u) / D(u), 0.5, 2)
//! ```
//!
//! where `S_t(u)` is the net notional the liquidated accounts sold in step `t` on `u`'s
//! perpetuals and futures (`-sum(size x price)` over the step's liquidation fills: selling a
//! long is positive, buying back a short negative), and `D(u)` is the market depth, taken as
//! the open interest of `u` at the start (`sum` of long perpetual and future sizes `x` spot,
//! over all accounts). So `K` is the price move per unit of open interest dumped: with `K = 1`,
//! liquidations that sell 1% of the open interest push the price down 1%. The impact is
//! permanent (it carries into every later step) and the per-step factor is clamped to
//! `[0.5, 2]`. Option liquidations are not counted. `K = 0` replays the path unchanged.
//!
//! ## Figures
//!
//! * `liquidations`: liquidation fills (a partial liquidation step or one close-out transfer);
//! * `accounts_closed`: distinct accounts closed out (all positions taken, deficit covered);
//! * `bad_debt`: the deficits (negative balances) of closed-out accounts, each dollar counted
//!   once even if the engine closes the same account out again in a later round;
//! * `insurance_paid` (the fund's payouts), `socialised_loss` (taken from profitable opposite
//!   accounts by auto-deleveraging), `uncovered_loss` (bad debt left as negative equity on the
//!   closed accounts, at the end);
//! * value = `Engine::total_value()`: every account's equity plus the insurance fund.

use crate::path::PricePath;
use pmargin_core::instrument::Instrument;
use pmargin_core::Status;
use pmargin_engine::{Engine, Event, Output};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Bounds of the per-step impact multiplier.
pub const IMPACT_CLAMP: (f64, f64) = (0.5, 2.0);

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// What was simulated (e.g. `demo: 2020-03-12` or the input files).
    pub scenario: String,
    /// Where the path came from.
    pub path: String,
    pub accounts: usize,
    pub liquidator: String,
    pub underlyings: Vec<String>,
    pub impact: ImpactReport,
    pub totals: Totals,
    pub steps: Vec<StepReport>,
    /// Chart files written, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImpactReport {
    /// The impact coefficient `K`.
    pub k: f64,
    /// Market depth `D(u)`: open interest at the start, USD.
    pub depth: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub value_before: f64,
    pub value_after: f64,
    /// `value_after - value_before`: zero to rounding in a closed book with stablecoin collateral.
    pub value_difference: f64,
    pub insurance_fund_before: f64,
    pub insurance_fund_after: f64,
    pub bad_debt: f64,
    pub insurance_paid: f64,
    pub socialised_loss: f64,
    pub uncovered_loss: f64,
    /// Liquidation fills.
    pub liquidations: usize,
    /// Notional of the liquidation fills, USD at the fill price.
    pub liquidated_notional: f64,
    /// Penalties paid into the insurance fund.
    pub penalties: f64,
    /// Distinct accounts with at least one liquidation fill.
    pub accounts_liquidated: usize,
    /// Distinct accounts closed out.
    pub accounts_closed: usize,
    /// Distinct accounts whose profit was cut by auto-deleveraging.
    pub accounts_deleveraged: usize,
    /// Change of the liquidator account's equity over the run.
    pub liquidator_pnl: f64,
    /// Lowest price applied to the engine, per underlying (after impact).
    pub lowest_price: BTreeMap<String, f64>,
    /// Last price applied, per underlying (after impact).
    pub final_price: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub label: String,
    /// Prices sent to the engine (path price x impact factor).
    pub prices: BTreeMap<String, f64>,
    /// Cumulative impact factor `F_t(u)` applied at this step.
    pub impact_factor: BTreeMap<String, f64>,
    pub liquidations: usize,
    pub liquidated_notional: f64,
    pub accounts_liquidated: usize,
    pub accounts_closed: usize,
    pub bad_debt: f64,
    pub insurance_paid: f64,
    pub socialised_loss: f64,
    /// Insurance fund after the step.
    pub insurance_fund: f64,
    pub cumulative_liquidations: usize,
    pub cumulative_bad_debt: f64,
    pub cumulative_socialised_loss: f64,
    /// Accounts still below maintenance after the step (e.g. liquidations suspended).
    pub accounts_below_maintenance: usize,
    pub total_value: f64,
}

/// The open interest of each of `underlyings`: long perpetual and future contracts times spot.
pub fn open_interest(engine: &Engine, underlyings: &[String]) -> Vec<f64> {
    let book = engine.book();
    let mut oi = vec![0.0; underlyings.len()];
    for account in &book.accounts {
        for p in &account.positions {
            if book.instruments[p.instrument].option.is_some() || p.size <= 0.0 {
                continue;
            }
            let name = &book.underlyings[p.underlying].name;
            if let Some(k) = underlyings.iter().position(|u| u == name) {
                oi[k] += p.size * book.underlyings[p.underlying].spot;
            }
        }
    }
    oi
}

/// Replays `path` through `engine` with impact coefficient `impact` (see the module
/// documentation). `scenario` names the run in the report.
pub fn run(
    engine: &mut Engine,
    path: &PricePath,
    impact: f64,
    scenario: &str,
) -> Result<SimReport, String> {
    if !(impact.is_finite() && impact >= 0.0) {
        return Err(format!(
            "--impact must be a finite number >= 0, got {impact}"
        ));
    }
    for u in &path.underlyings {
        if engine.book().underlying_index(u).is_none() {
            return Err(format!(
                "{}:1: underlying `{u}` has no entry in the parameter set (known: {})",
                path.source,
                engine
                    .book()
                    .underlyings
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let n = path.underlyings.len();
    let depth = open_interest(engine, &path.underlyings);
    let liquidator = engine.config().liquidator.clone();
    let liquidator_equity = |e: &Engine| e.risk(&liquidator).map_or(0.0, |r| r.equity);
    let value_before = engine.total_value();
    let fund_before = engine.insurance_fund();
    let liquidator_before = liquidator_equity(engine);

    // Instrument name -> column of the path whose underlying it is (linear instruments only).
    let mut column_of: HashMap<String, Option<usize>> = HashMap::new();
    let mut factor = vec![1.0f64; n];
    let mut lowest = vec![f64::INFINITY; n];
    let mut last = vec![0.0f64; n];
    let mut steps = Vec::with_capacity(path.steps.len());
    let mut liquidated_accounts = BTreeSet::new();
    let mut closed_accounts = BTreeSet::new();
    let mut deleveraged_accounts = BTreeSet::new();
    // Deficit of each closed-out account already counted as bad debt and not yet covered.
    let mut outstanding: HashMap<String, f64> = HashMap::new();
    let (mut cum_fills, mut cum_notional, mut cum_penalties) = (0usize, 0.0f64, 0.0f64);
    let (mut cum_bad, mut cum_paid, mut cum_social) = (0.0f64, 0.0f64, 0.0f64);

    for (t, step) in path.steps.iter().enumerate() {
        let prices: Vec<f64> = step
            .prices
            .iter()
            .zip(&factor)
            .map(|(p, f)| p * f)
            .collect();
        let mut outputs = Vec::new();
        for (u, &price) in path.underlyings.iter().zip(&prices) {
            let out = engine.apply(&Event::Price {
                underlying: u.clone(),
                price,
            });
            if let Some(Output::Rejected { reason, .. }) =
                out.iter().find(|o| matches!(o, Output::Rejected { .. }))
            {
                return Err(format!(
                    "{}: step {t} ({}): the engine refused {u} = {price}: {reason}",
                    path.source, step.label
                ));
            }
            outputs.extend(out);
        }
        outputs.extend(engine.apply(&Event::Liquidate));

        let mut sold = vec![0.0f64; n];
        let mut step_accounts = BTreeSet::new();
        let mut step_closed = BTreeSet::new();
        let (mut fills, mut notional, mut bad, mut paid, mut social) =
            (0usize, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for o in &outputs {
            match o {
                Output::LiquidationFill {
                    account,
                    instrument,
                    size,
                    price,
                    penalty,
                } => {
                    fills += 1;
                    notional += (size * price).abs();
                    cum_penalties += penalty;
                    step_accounts.insert(account.clone());
                    let column = column_of.entry(instrument.clone()).or_insert_with(|| {
                        Instrument::parse(instrument)
                            .ok()
                            .filter(|i| !i.is_option())
                            .and_then(|i| path.underlyings.iter().position(|u| *u == i.underlying))
                    });
                    if let Some(k) = *column {
                        sold[k] -= size * price;
                    }
                }
                Output::CloseOut {
                    account,
                    deficit,
                    insurance_paid,
                    socialised,
                } => {
                    let before = outstanding.get(account).copied().unwrap_or(0.0);
                    bad += (deficit - before).max(0.0);
                    paid += insurance_paid;
                    social += socialised;
                    outstanding.insert(
                        account.clone(),
                        (deficit - insurance_paid - socialised).max(0.0),
                    );
                    step_closed.insert(account.clone());
                }
                Output::Deleveraged { account, .. } => {
                    deleveraged_accounts.insert(account.clone());
                }
                _ => {}
            }
        }
        cum_fills += fills;
        cum_notional += notional;
        cum_bad += bad;
        cum_paid += paid;
        cum_social += social;
        let new_closed = step_closed
            .iter()
            .filter(|a| !closed_accounts.contains(*a))
            .count();
        liquidated_accounts.extend(step_accounts.iter().cloned());
        closed_accounts.extend(step_closed);
        for k in 0..n {
            lowest[k] = lowest[k].min(prices[k]);
            last[k] = prices[k];
        }
        let below = engine
            .risks()
            .filter(|(id, r)| {
                *id != liquidator && matches!(r.status, Status::Liquidatable | Status::Bankrupt)
            })
            .count();
        let by_name = |v: &[f64]| {
            path.underlyings
                .iter()
                .cloned()
                .zip(v.iter().copied())
                .collect::<BTreeMap<_, _>>()
        };
        steps.push(StepReport {
            step: t,
            label: step.label.clone(),
            prices: by_name(&prices),
            impact_factor: by_name(&factor),
            liquidations: fills,
            liquidated_notional: notional,
            accounts_liquidated: step_accounts.len(),
            accounts_closed: new_closed,
            bad_debt: bad,
            insurance_paid: paid,
            socialised_loss: social,
            insurance_fund: engine.insurance_fund(),
            cumulative_liquidations: cum_fills,
            cumulative_bad_debt: cum_bad,
            cumulative_socialised_loss: cum_social,
            accounts_below_maintenance: below,
            total_value: engine.total_value(),
        });
        for k in 0..n {
            if impact > 0.0 && depth[k] > 0.0 {
                factor[k] *=
                    (1.0 - impact * sold[k] / depth[k]).clamp(IMPACT_CLAMP.0, IMPACT_CLAMP.1);
            }
        }
    }

    let value_after = engine.total_value();
    let by_name = |v: &[f64]| {
        path.underlyings
            .iter()
            .cloned()
            .zip(v.iter().copied())
            .collect::<BTreeMap<_, _>>()
    };
    Ok(SimReport {
        scenario: scenario.to_string(),
        path: path.source.clone(),
        accounts: engine.account_ids().count(),
        liquidator: liquidator.clone(),
        underlyings: path.underlyings.clone(),
        impact: ImpactReport {
            k: impact,
            depth: by_name(&depth),
        },
        totals: Totals {
            value_before,
            value_after,
            value_difference: value_after - value_before,
            insurance_fund_before: fund_before,
            insurance_fund_after: engine.insurance_fund(),
            bad_debt: cum_bad,
            insurance_paid: cum_paid,
            socialised_loss: cum_social,
            uncovered_loss: outstanding.values().sum(),
            liquidations: cum_fills,
            liquidated_notional: cum_notional,
            penalties: cum_penalties,
            accounts_liquidated: liquidated_accounts.len(),
            accounts_closed: closed_accounts.len(),
            accounts_deleveraged: deleveraged_accounts.len(),
            liquidator_pnl: liquidator_equity(engine) - liquidator_before,
            lowest_price: by_name(&lowest),
            final_price: by_name(&last),
        },
        steps,
        charts: Vec::new(),
    })
}
