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
    /// The part of this scenario's P&L that comes from the account's positions held in other
    /// protocols (docs/MODEL.md section 12), with the same weight as `loss` but the opposite
    /// sign: a profit is positive, so for an account holding only external positions
    /// `loss == -external_pnl`. Absent for an account without external positions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_pnl: Option<f64>,
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
        let has_external = !account.external.is_empty();
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
                        pnl: f64,
                        external: f64| {
            out.push(ScenarioLoss {
                family,
                underlying: underlying.map(|u| names[u].to_string()),
                label: scenario.label(shape, &names),
                price_move,
                vol_shift,
                weight,
                loss: -weight * pnl,
                external_pnl: has_external.then_some(weight * external),
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
                    single(e, s),
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
                let external = joint.tandem.get(s).copied().unwrap_or(0.0);
                let total: f64 = (0..account.exposures.len())
                    .map(|e| rows[e * width + s])
                    .sum::<f64>()
                    + external;
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
                    external,
                );
            }
            let (up, down) = (shape.decoupling_up(), shape.decoupling_down());
            for (e, &u) in account.exposures.iter().enumerate() {
                for (is_up, own, other) in [(true, up, down), (false, down, up)] {
                    let external = joint
                        .decoupling
                        .get(e)
                        .map_or(0.0, |d| d[usize::from(!is_up)]);
                    let pnl: f64 = (0..account.exposures.len())
                        .map(|f| rows[f * width + if f == e { own } else { other }])
                        .sum::<f64>()
                        + external;
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
                        external,
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

#[cfg(test)]
mod tests {
    use crate::{Book, Evaluator, Market, Params, Portfolio, RiskArrays};

    /// ETH at 225, USDC at 1, price steps of -10%, 0, +10% and the extremes; one LP with
    /// L = 1000 on [100, 400] and nothing else.
    fn lp_only_table() -> super::ScenarioTable {
        let portfolio = Portfolio::parse(
            "portfolio.json",
            r#"{"accounts": [{"id": "lp", "external": [{"kind": "uniswap_v3_lp",
              "protocol": "uniswap-v3", "token0": "ETH", "token1": "USDC", "liquidity": 1000,
              "price_lower": 100, "price_upper": 400}]}]}"#,
        )
        .unwrap();
        let market = Market::parse(
            "market.json",
            r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"ETH": 225, "USDC": 1}}"#,
        )
        .unwrap();
        let params = Params::parse(
            "params.json",
            r#"{"version": 1,
              "underlyings": {"ETH": {"price_scan_range": 0.1, "vol_scan_up": 0.1,
                "vol_scan_down": 0.1, "standard_im_rate": 0.1, "standard_mm_rate": 0.05}},
              "collateral": {"USDC": {"haircut": 0},
                             "ETH": {"haircut": 0.07, "underlying": "ETH"}},
              "grid": {"price_steps": 3},
              "external_protocols": {"uniswap-v3": {"haircut": 0.05}}}"#,
        )
        .unwrap();
        let book = Book::build(&portfolio, &market, &params).unwrap();
        let arrays = RiskArrays::compute(&book, None).unwrap();
        Evaluator::new(&book, &arrays)
            .scenario_table(&book.accounts[0])
            .unwrap()
    }

    /// With only an LP, the external part is the whole scenario: `loss == -external_pnl` in
    /// every row; and at -10% the P&L is the closed form of section 12,
    /// `V(p) = L (2 sqrt p - p / sqrt pb - sqrt pa)`, from 225 to 202.5 (8750 to 8335.49).
    #[test]
    fn an_lp_only_account_s_external_part_is_its_whole_loss() {
        let table = lp_only_table();
        assert!(!table.scenarios.is_empty());
        for row in &table.scenarios {
            let external = row.external_pnl.expect("an external part");
            assert_eq!(row.loss, -external, "{}", row.label);
        }
        let value = |p: f64| 1000.0 * (2.0 * f64::sqrt(p) - p / 20.0 - 10.0);
        let pnl_at = |label: &str| {
            let row = table.scenarios.iter().find(|r| r.label == label);
            row.and_then(|r| r.external_pnl)
                .unwrap_or_else(|| panic!("no row {label}"))
        };
        // The LP has no vol exposure, so either vol shift gives the price move's P&L.
        let got = pnl_at("single ETH -1/1 vol+");
        let want = value(202.5) - value(225.0);
        assert!((got - want).abs() < 1e-9, "got {got}, expected {want}");
        // The extreme move carries its cover, 0.35, as `loss` does.
        let extreme = pnl_at("single ETH extreme down");
        let want = 0.35 * (value(180.0) - value(225.0));
        assert!(
            (extreme - want).abs() < 1e-9,
            "got {extreme}, expected {want}"
        );
        assert!(got < 0.0, "an LP loses when ETH falls");
    }
}
