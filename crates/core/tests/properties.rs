//! Properties of the methodology that hold for any book:
//! - homogeneity: scaling every size and balance by k > 0 scales every money figure by k
//!   (and leaves liquidation prices unchanged);
//! - order independence: positions and accounts can come in any order;
//! - subadditivity of the grid for linear books: merging two accounts never needs more;
//! - a hedge (reducing a perpetual toward flat) never raises the grid risk.

mod common;

use common::*;
use pmargin_core::report::AccountReport;
use pmargin_core::{Market, Params};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Linear instruments on three underlyings, with their marks in `prop_market()`.
const LINEAR: [(&str, f64); 6] = [
    ("BTC-PERPETUAL", 60100.0),
    ("BTC-27DEC26", 60450.0),
    ("ETH-PERPETUAL", 3000.0),
    ("ETH-26MAR27", 3000.0),
    ("SOL-PERPETUAL", 150.0),
    ("SOL-27DEC26", 151.0),
];
const OPTIONS: [&str; 8] = [
    "BTC-27DEC26-50000-P",
    "BTC-27DEC26-60000-C",
    "BTC-27DEC26-70000-C",
    "BTC-26MAR27-55000-P",
    "ETH-27DEC26-2800-P",
    "ETH-27DEC26-3200-C",
    "SOL-27DEC26-150-C",
    "SOL-27DEC26-120-P",
];

fn prop_market() -> Market {
    market_with(|v| {
        v["marks"] = json!({ "BTC-PERPETUAL": 60100, "BTC-27DEC26": 60450, "SOL-27DEC26": 151 });
        v["vols"]["BTC"] = json!({ "default": 0.6, "points": [
            { "expiry": "27DEC26", "strike": 50000, "iv": 0.68 },
            { "expiry": "27DEC26", "strike": 60000, "iv": 0.62 },
            { "expiry": "27DEC26", "strike": 80000, "iv": 0.64 } ] });
    })
}

fn prop_params() -> Params {
    params()
}

/// A position: linear (instrument, size, entry as a fraction of the mark) or option.
#[derive(Debug, Clone)]
enum Pos {
    Linear(usize, f64, f64),
    Option(usize, f64),
}

impl Pos {
    fn json(&self, k: f64) -> Value {
        match *self {
            Pos::Linear(i, size, e) => linear(LINEAR[i].0, size * k, LINEAR[i].1 * e),
            Pos::Option(i, size) => option(OPTIONS[i], size * k),
        }
    }
}

#[derive(Debug, Clone)]
struct Acct {
    id: String,
    balances: Vec<(&'static str, f64)>,
    positions: Vec<Pos>,
}

impl Acct {
    fn json(&self, k: f64) -> Value {
        let balances: serde_json::Map<String, Value> = self
            .balances
            .iter()
            .map(|(a, v)| (a.to_string(), json!(v * k)))
            .collect();
        account(
            &self.id,
            Value::Object(balances),
            self.positions.iter().map(|p| p.json(k)).collect(),
        )
    }
}

fn size() -> impl Strategy<Value = f64> {
    prop_oneof![-20.0..20.0f64, Just(0.0), -1.0..1.0f64]
}

fn linear_pos() -> impl Strategy<Value = Pos> {
    (0..LINEAR.len(), size(), 0.8..1.2f64).prop_map(|(i, s, e)| Pos::Linear(i, s, e))
}

fn any_pos() -> impl Strategy<Value = Pos> {
    prop_oneof![3 => linear_pos(), 2 => (0..OPTIONS.len(), size()).prop_map(|(i, s)| Pos::Option(i, s))]
}

fn balances() -> impl Strategy<Value = Vec<(&'static str, f64)>> {
    (
        0.0..2e6f64,
        -3.0..5.0f64,
        -20.0..50.0f64,
        prop::option::of(-500.0..500.0f64),
    )
        .prop_map(|(usdc, btc, eth, sol)| {
            let mut b = vec![("USDC", usdc), ("BTC", btc), ("ETH", eth)];
            if let Some(s) = sol {
                b.push(("SOL", s));
            }
            b
        })
}

fn acct(id: String, pos: impl Strategy<Value = Pos>, max: usize) -> impl Strategy<Value = Acct> {
    (balances(), prop::collection::vec(pos, 0..max)).prop_map(move |(balances, positions)| Acct {
        id: id.clone(),
        balances,
        positions,
    })
}

fn report(accts: &[Acct], k: f64, liq: bool) -> Vec<AccountReport> {
    let p = portfolio(accts.iter().map(|a| a.json(k)).collect());
    run(
        &p,
        &prop_market(),
        &prop_params(),
        if liq { WITH_LIQ } else { NO_LIQ },
    )
    .accounts
}

/// |a - b| within 1e-9 relative to the larger of the two and the book's gross size `scale`.
fn near(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(scale) + 1e-9
}

/// Every money figure of two reports of the same account, `b` expected to be `k` times `a`.
fn assert_scaled(a: &AccountReport, b: &AccountReport, k: f64) -> Result<(), TestCaseError> {
    let gross = (a.equity.abs() + a.grid_risk + a.standard_initial_margin + 1e6) * k;
    let pairs = [
        ("equity", a.equity, b.equity),
        ("margin_balance", a.margin_balance, b.margin_balance),
        ("grid_risk", a.grid_risk, b.grid_risk),
        ("initial_margin", a.initial_margin, b.initial_margin),
        (
            "maintenance_margin",
            a.maintenance_margin,
            b.maintenance_margin,
        ),
        (
            "short_option_minimum",
            a.short_option_minimum,
            b.short_option_minimum,
        ),
        (
            "standard_initial_margin",
            a.standard_initial_margin,
            b.standard_initial_margin,
        ),
        (
            "standard_maintenance_margin",
            a.standard_maintenance_margin,
            b.standard_maintenance_margin,
        ),
    ];
    for (what, x, y) in pairs {
        prop_assert!(
            near(k * x, y, gross),
            "{}: {} x {} = {} vs {}",
            what,
            k,
            x,
            k * x,
            y
        );
    }
    prop_assert_eq!(
        a.scanning_risk.keys().collect::<Vec<_>>(),
        b.scanning_risk.keys().collect::<Vec<_>>()
    );
    for (u, x) in &a.scanning_risk {
        prop_assert!(
            near(k * x, b.scanning_risk[u], gross),
            "scanning {}: {} vs {}",
            u,
            k * x,
            b.scanning_risk[u]
        );
    }
    Ok(())
}

fn same(a: &AccountReport, b: &AccountReport) -> Result<(), TestCaseError> {
    assert_scaled(a, b, 1.0)?;
    prop_assert_eq!(a.status, b.status);
    prop_assert!(near(a.var, b.var, 1e6) && near(a.es, b.es, 1e6));
    prop_assert_eq!(
        a.capital_efficiency.is_some(),
        b.capital_efficiency.is_some()
    );
    Ok(())
}

fn same_liquidation(a: &AccountReport, b: &AccountReport) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.liquidation_prices.len(), b.liquidation_prices.len());
    for (u, x) in &a.liquidation_prices {
        let y = &b.liquidation_prices[u];
        for (p, q) in [(x.down, y.down), (x.up, y.up)] {
            match (p, q) {
                (None, None) => {}
                (Some(p), Some(q)) => {
                    prop_assert!((p - q).abs() <= 1e-6 * p.abs(), "{}: {} vs {}", u, p, q)
                }
                _ => prop_assert!(false, "{}: {:?} vs {:?}", u, p, q),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn scaling_sizes_and_balances_scales_every_money_figure(
        a in acct("a".into(), any_pos(), 8),
        k in prop_oneof![0.001..1.0f64, 1.0..1000.0f64],
    ) {
        let base = report(std::slice::from_ref(&a), 1.0, false);
        let scaled = report(std::slice::from_ref(&a), k, false);
        assert_scaled(&base[0], &scaled[0], k)?;
    }

    #[test]
    fn position_and_account_order_does_not_matter(
        ps in prop::collection::vec(any_pos(), 0..8).prop_flat_map(|ps| (Just(ps.clone()), Just(ps).prop_shuffle())),
        bal_a in balances(),
        bal_b in balances(),
        other in prop::collection::vec(any_pos(), 0..5),
    ) {
        let (ordered, shuffled) = ps;
        let a1 = Acct { id: "a".into(), balances: bal_a.clone(), positions: ordered };
        let a2 = Acct { id: "a".into(), balances: bal_a, positions: shuffled };
        let b1 = Acct { id: "b".into(), balances: bal_b.clone(), positions: other.clone() };
        let mut reversed = other;
        reversed.reverse();
        let b2 = Acct { id: "b".into(), balances: bal_b, positions: reversed };
        let first = report(&[a1, b1], 1.0, false);
        let second = report(&[b2, a2], 1.0, false);
        prop_assert_eq!(second[0].id.as_str(), "b");
        for id in ["a", "b"] {
            let x = first.iter().find(|r| r.id == id).unwrap();
            let y = second.iter().find(|r| r.id == id).unwrap();
            same(x, y)?;
        }
    }

    #[test]
    fn merging_two_linear_accounts_never_adds_grid_risk(
        a in acct("a".into(), linear_pos(), 6),
        b in acct("b".into(), linear_pos(), 6),
        delta in prop_oneof![Just(0.5), 0.0..1.0f64],
    ) {
        let mut balances: BTreeMap<&str, f64> = BTreeMap::new();
        for (k, v) in a.balances.iter().chain(&b.balances) {
            *balances.entry(k).or_default() += v;
        }
        let merged = Acct {
            id: "ab".into(),
            balances: balances.into_iter().collect(),
            positions: a.positions.iter().chain(&b.positions).cloned().collect(),
        };
        let prm = params_with(|v| v["grid"] = json!({ "decoupling_fraction": delta }));
        let p = portfolio(vec![a.json(1.0), b.json(1.0), merged.json(1.0)]);
        let r = run(&p, &prop_market(), &prm, NO_LIQ).accounts;
        let (ga, gb, gab) = (r[0].grid_risk, r[1].grid_risk, r[2].grid_risk);
        prop_assert!(gab <= ga + gb + 1e-9 * (ga + gb).max(1e6), "merged {} > {} + {}", gab, ga, gb);
    }

    #[test]
    fn reducing_a_perpetual_toward_flat_never_raises_grid_risk(
        u in 0..3usize,
        s in prop_oneof![-50.0..-0.01f64, 0.01..50.0f64],
        future in 0.0..3.0f64,
        t in prop_oneof![0.0..=1.0f64, Just(1.0), Just(0.5)],
        usdc in 0.0..1e5f64,
    ) {
        // Perp of size s (with a same-direction future of size future x sign(s)), then a
        // second perp position of -t s: the net perp goes from s to (1 - t) s.
        let perp = LINEAR[2 * u];
        let fut = LINEAR[2 * u + 1];
        let book = |hedge: Option<f64>| {
            let mut ps = vec![linear(perp.0, s, perp.1), linear(fut.0, future * s.signum(), fut.1)];
            if let Some(h) = hedge {
                ps.push(linear(perp.0, h, perp.1 * 1.01));
            }
            account("h", json!({"USDC": usdc}), ps)
        };
        let r = run(&portfolio(vec![book(None)]), &prop_market(), &prop_params(), NO_LIQ).accounts;
        let h = run(&portfolio(vec![book(Some(-t * s))]), &prop_market(), &prop_params(), NO_LIQ).accounts;
        let (before, after) = (r[0].grid_risk, h[0].grid_risk);
        prop_assert!(after <= before + 1e-9 * before.max(1.0), "hedged {} > unhedged {}", after, before);
        // For a linear one-underlying book the grid is |net notional| x range exactly.
        let range = [0.10, 0.12, 0.20][u];
        let net = (1.0 - t) * s * perp.1 + future * s.signum() * fut.1;
        prop_assert!(near(after, net.abs() * range, 1e3), "{} vs {}", after, net.abs() * range);
    }
}

proptest! {
    // The liquidation search is the costly part: fewer cases.
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn liquidation_prices_do_not_depend_on_the_scale_of_the_book(
        a in acct("a".into(), any_pos(), 4),
        k in prop_oneof![0.01..1.0f64, 1.0..100.0f64],
    ) {
        let base = report(std::slice::from_ref(&a), 1.0, true);
        let scaled = report(std::slice::from_ref(&a), k, true);
        same_liquidation(&base[0], &scaled[0])?;
    }

    #[test]
    fn liquidation_prices_do_not_depend_on_order(
        ps in prop::collection::vec(any_pos(), 1..5).prop_flat_map(|ps| (Just(ps.clone()), Just(ps).prop_shuffle())),
        bal in balances(),
    ) {
        let (ordered, shuffled) = ps;
        let x = report(&[Acct { id: "a".into(), balances: bal.clone(), positions: ordered }], 1.0, true);
        let y = report(&[Acct { id: "a".into(), balances: bal, positions: shuffled }], 1.0, true);
        same_liquidation(&x[0], &y[0])?;
    }
}
