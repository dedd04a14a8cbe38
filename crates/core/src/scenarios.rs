//! An account's scenario P&L table: the loss in every grid scenario, not just the worst.
//!
//! A trader asking "why is my margin what it is" wants to see the whole grid: for each
//! underlying, price moves down the side and vol shifts across, the extremes at their reduced
//! weight, and (for a multi-underlying account) the tandem and decoupling moves.

use crate::account::Evaluator;
use crate::book::BookAccount;
use crate::error::Result;
use crate::grid::{PriceMove, Scenario, VolShift};
use serde::Serialize;

/// One scenario's outcome. `price_move` is the fraction the underlying moves (for tandem rows,
/// the multiple of each underlying's own range, but for an extended move the absolute fraction
/// every underlying moves by); `loss` already carries the scenario weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioLoss {
    pub family: &'static str,
    pub underlying: Option<String>,
    pub label: String,
    pub price_move: f64,
    pub vol_shift: f64,
    pub weight: f64,
    pub loss: f64,
    pub worst: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioTable {
    pub account: String,
    pub grid_risk: f64,
    pub worst_scenario: Option<String>,
    pub scenarios: Vec<ScenarioLoss>,
}

impl Evaluator<'_> {
    pub fn scenario_table(&self, account: &BookAccount) -> Result<ScenarioTable> {
        let req = self.requirement(account)?;
        let partial = self.partial(account);
        let rows = partial.rows();
        let shape = &self.arrays.shape;
        let (width, scan) = (shape.width(), shape.scan_width());
        // The external positions' P&L, scenario by scenario (docs/MODEL.md section 12).
        let joint = self
            .external_figures(account, &partial)
            .map(|x| x.joint)
            .unwrap_or_default();
        let single = |e: usize, s: usize| joint.single.get(e * scan + s).copied().unwrap_or(0.0);
        let names: Vec<&str> = self
            .book
            .underlyings
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        let mut out = Vec::new();
        let mut push = |family,
                        underlying: Option<usize>,
                        scenario: Scenario,
                        price_move,
                        vol_shift,
                        weight: f64,
                        pnl: f64| {
            out.push(ScenarioLoss {
                family,
                underlying: underlying.map(|u| names[u].to_string()),
                label: scenario.label(shape, &names),
                price_move,
                vol_shift,
                weight,
                loss: -weight * pnl,
                worst: req.grid.worst == Some(scenario),
            });
        };
        for (e, &u) in account.exposures.iter().enumerate() {
            let shocks = &self.arrays.grid_shocks[u];
            for s in 0..scan {
                let (m, dv) = shocks[s];
                let slot = shape.slot(s);
                push(
                    "single",
                    Some(u),
                    Scenario::Single {
                        underlying: u,
                        slot: s,
                    },
                    m,
                    dv,
                    slot.weight,
                    rows[e * width + s] + single(e, s),
                );
            }
        }
        if account.exposures.len() > 1 {
            for s in 0..scan {
                let slot = shape.slot(s);
                let direction = match slot.vol {
                    VolShift::Up => 1.0,
                    VolShift::Down => -1.0,
                    VolShift::None => 0.0,
                };
                let total: f64 = (0..account.exposures.len())
                    .map(|e| rows[e * width + s])
                    .sum::<f64>()
                    + joint.tandem.get(s).copied().unwrap_or(0.0);
                push(
                    "tandem",
                    None,
                    Scenario::Tandem { slot: s },
                    match slot.price {
                        PriceMove::Range(k) => k,
                        PriceMove::Absolute(m) => m,
                    },
                    direction,
                    slot.weight,
                    total,
                );
            }
            let (up, down) = (shape.decoupling_up(), shape.decoupling_down());
            for (e, &u) in account.exposures.iter().enumerate() {
                for (is_up, own, other) in [(true, up, down), (false, down, up)] {
                    let pnl: f64 = (0..account.exposures.len())
                        .map(|f| rows[f * width + if f == e { own } else { other }])
                        .sum::<f64>()
                        + joint
                            .decoupling
                            .get(e)
                            .map_or(0.0, |d| d[usize::from(!is_up)]);
                    let m = shape
                        .slot(own)
                        .price
                        .fraction(self.book.underlyings[u].price_scan_range);
                    push(
                        "decoupling",
                        Some(u),
                        Scenario::Decoupling {
                            underlying: u,
                            up: is_up,
                        },
                        m,
                        0.0,
                        1.0,
                        pnl,
                    );
                }
            }
        }
        Ok(ScenarioTable {
            account: account.id.clone(),
            grid_risk: req.grid.grid_risk,
            worst_scenario: req.grid.worst.map(|s| s.label(shape, &names)),
            scenarios: out,
        })
    }
}
