//! Liquidation across protocols (issue 20): once an account's derivatives are closed and it is
//! still below maintenance, the engine seizes the smallest amount of its collateral in other
//! protocols that restores maintenance (or all of it), never a borrow.
//!
//! Every expected amount is worked out by hand below from docs/MODEL.md sections 2-6 and 12.
//! The parameters (`testkit::SEIZE_PARAMS`): BTC and ETH, scan ranges 15 % and 10 %, no
//! history and no add-ons, so `initial = grid risk`, `maintenance = 0.75 x initial`; ETH
//! collateral haircut 10 %, USDC 0; Aave and Uniswap v3 each cut 5 %. Account `a` holds 1,000
//! USDC and is long 1 BTC perpetual from 60,000; the liquidator starts with 1,000,000 USDC.

use pmargin_core::input::portfolio::{ExternalPosition, LendingPosition, LiquidityPosition};
use pmargin_core::{Market, Params, Portfolio, Status};
use pmargin_engine::{Engine, EngineConfig, Event, Output};

use pmargin_core::testkit::SEIZE_PARAMS as PARAMS;

const MM_FRACTION: f64 = 0.75;
const R_ETH: f64 = 0.10;
const ETH: f64 = 3000.0;

fn deposit(asset: &str, amount: f64) -> ExternalPosition {
    ExternalPosition::LendingDeposit(LendingPosition {
        protocol: "aave-v3".into(),
        asset: asset.into(),
        amount,
    })
}

fn borrow(asset: &str, amount: f64) -> ExternalPosition {
    ExternalPosition::LendingBorrow(LendingPosition {
        protocol: "aave-v3".into(),
        asset: asset.into(),
        amount,
    })
}

fn lp(liquidity: f64, lower: f64, upper: f64) -> ExternalPosition {
    ExternalPosition::UniswapV3Lp(LiquidityPosition {
        protocol: "uniswap-v3".into(),
        token0: "ETH".into(),
        token1: "USDC".into(),
        liquidity,
        price_lower: lower,
        price_upper: upper,
    })
}

/// Account `a` (and the liquidator) with `external`, BTC at `btc`, ETH at 3,000.
fn engine(btc: f64, external: &[ExternalPosition], config: EngineConfig) -> Engine {
    let portfolio = serde_json::json!({"accounts": [
        {"id": "a", "balances": {"USDC": 1000},
         "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}],
         "external": external},
        {"id": "liquidator", "balances": {"USDC": 1000000}}]});
    let market = format!(
        r#"{{"as_of": "2026-11-24T08:00:00Z", "prices": {{"BTC": {btc}, "ETH": {ETH}, "USDC": 1}}}}"#
    );
    Engine::new(
        &Portfolio::parse("p.json", &portfolio.to_string()).unwrap(),
        &Market::parse("m.json", &market).unwrap(),
        &Params::parse("r.json", PARAMS).unwrap(),
        config,
    )
    .unwrap()
}

fn seizes(out: &[Output]) -> Vec<(ExternalPosition, f64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::LiquidationSeize {
                account,
                receiver,
                position,
                value,
            } => {
                assert_eq!((account.as_str(), receiver.as_str()), ("a", "liquidator"));
                Some((position.clone(), *value))
            }
            _ => None,
        })
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

fn usdc(e: &Engine, id: &str) -> f64 {
    e.account(id).unwrap().balances["USDC"]
}

/// A deposit seized after a perpetual loss. BTC at 46,000: the long has lost 14,000, so the
/// margin balance is 1,000 - 14,000 + 5 x 3,000 x 0.95 x 0.90 = -175 < 0, bankrupt: no
/// partial steps; the perpetual goes to the liquidator at 46,000 without penalty (USDC
/// -13,000). Left: the deposit alone, worth V = 15,000, requirement 0.10 V = 1,500 (the -10 %
/// ETH move; the 2x extreme counts 0.35 x 0.20 V = 1,050), maintenance 1,125.
/// Seizing a fraction f: margin balance -13,000 + f V + (1 - f) 0.855 V = -175 + 2,175 f,
/// maintenance 1,125 (1 - f); equal at f = 1,300 / 3,300 = 13/33: 5 x 13/33 = 1.969697 ETH,
/// worth 15,000 x 13/33 = 5,909.09.
#[test]
fn a_deposit_is_seized_by_the_smallest_amount_that_restores_maintenance() {
    let mut e = engine(46000.0, &[deposit("ETH", 5.0)], EngineConfig::default());
    let total = e.total_value();
    let out = e.apply(&Event::Liquidate);
    let fills: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::LiquidationFill { .. }))
        .collect();
    assert_eq!(
        fills,
        vec![&Output::LiquidationFill {
            account: "a".into(),
            instrument: "BTC-PERPETUAL".into(),
            size: -1.0,
            price: 46000.0,
            penalty: 0.0
        }],
        "{out:?}"
    );
    // The fill comes before the seizure: derivatives first.
    let fill_at = out
        .iter()
        .position(|o| matches!(o, Output::LiquidationFill { .. }));
    let seize_at = out
        .iter()
        .position(|o| matches!(o, Output::LiquidationSeize { .. }));
    assert!(fill_at < seize_at, "{out:?}");
    let seized = seizes(&out);
    assert_eq!(seized.len(), 1, "{out:?}");
    let ExternalPosition::LendingDeposit(part) = &seized[0].0 else {
        panic!("{seized:?}");
    };
    let (f, v) = (13.0 / 33.0, 15000.0);
    assert_eq!(
        (part.protocol.as_str(), part.asset.as_str()),
        ("aave-v3", "ETH")
    );
    assert!(close(part.amount, 5.0 * f, 1e-9), "{}", part.amount);
    assert!(close(seized[0].1, v * f, 1e-9), "{}", seized[0].1);
    assert!(!out.iter().any(|o| matches!(o, Output::CloseOut { .. })));
    // Back at maintenance exactly (restricted, not liquidatable).
    let risk = e.risk("a").unwrap();
    assert!(
        close(risk.maintenance_margin, 1125.0 * (1.0 - f), 1e-9),
        "{risk:?}"
    );
    assert!(risk.margin_balance >= risk.maintenance_margin, "{risk:?}");
    assert!(
        close(risk.margin_balance, risk.maintenance_margin, 1e-9),
        "{risk:?}"
    );
    assert_eq!(risk.status, Status::Restricted);
    // The account keeps the rest of its deposit and is paid for what was seized; the
    // liquidator holds the seized part and paid for it; nothing is created or lost.
    let a = e.account("a").unwrap();
    assert_eq!(a.external.len(), 1);
    assert!(close(usdc(&e, "a"), -13000.0 + v * f, 1e-9));
    let ExternalPosition::LendingDeposit(rest) = &a.external[0] else {
        panic!("{a:?}");
    };
    assert!(close(rest.amount, 5.0 * (1.0 - f), 1e-9));
    let l = e.account("liquidator").unwrap();
    assert_eq!(l.external, vec![seized[0].0.clone()]);
    assert!(close(usdc(&e, "liquidator"), 1_000_000.0 - v * f, 1e-12));
    assert!(close(e.total_value(), total, 1e-12));
    // A later round seizes nothing more: the account is at maintenance.
    let again = e.apply(&Event::Liquidate);
    assert!(seizes(&again).is_empty(), "{again:?}");
}

/// The independent value of the LP {L, [pa, pb]} at ETH price p inside its range (MODEL
/// section 12): x p + y = L (2 sqrt p - p / sqrt pb - sqrt pa).
fn lp_value_in_range(l: f64, pa: f64, pb: f64, p: f64) -> f64 {
    assert!(pa < p && p < pb);
    l * (2.0 * p.sqrt() - p / pb.sqrt() - pa.sqrt())
}

/// A Uniswap v3 position seized after a perpetual loss: L = 1,000 on [2,000, 4,500] at 3,000,
/// worth V = 1,000 (2 sqrt 3,000 - 3,000 / sqrt 4,500 - sqrt 2,000) = 20,101.7, counting
/// 0.95 V. It is short gamma: the worst single-ETH scenario is the -10 % move (V - V(2,700)
/// = 1,149.3 against 0.35 (V - V(2,400)) = 917.2 at the extreme), requirement 1,149.3,
/// maintenance M = 862.0. BTC at 39,800: margin balance B + 0.95 V with B = 1,000 - 20,200
/// = -19,200, so -103.3 < 0: bankrupt, the perpetual closed at mark, then the LP seized:
/// -19,200 + f V + (1 - f) 0.95 V = (1 - f) M gives f = (M - B - 0.95 V) / (0.05 V + M).
#[test]
fn a_liquidity_position_is_seized_by_the_smallest_liquidity_that_restores_maintenance() {
    let (l, pa, pb) = (1000.0, 2000.0, 4500.0);
    let mut e = engine(39800.0, &[lp(l, pa, pb)], EngineConfig::default());
    let v = lp_value_in_range(l, pa, pb, ETH);
    let down = v - lp_value_in_range(l, pa, pb, ETH * (1.0 - R_ETH));
    let extreme = 0.35 * (v - lp_value_in_range(l, pa, pb, ETH * (1.0 - 2.0 * R_ETH)));
    assert!(down > extreme);
    let m = MM_FRACTION * down;
    let b = 1000.0 - 20200.0;
    assert!(b + 0.95 * v < 0.0);
    let f = (m - b - 0.95 * v) / (0.05 * v + m);
    assert!(0.0 < f && f < 1.0);
    let out = e.apply(&Event::Liquidate);
    let seized = seizes(&out);
    assert_eq!(seized.len(), 1, "{out:?}");
    let ExternalPosition::UniswapV3Lp(part) = &seized[0].0 else {
        panic!("{seized:?}");
    };
    assert_eq!((part.price_lower, part.price_upper), (pa, pb));
    // Through a root finder: 1e-6 relative (MODEL's tolerance for those).
    assert!(
        close(part.liquidity, l * f, 1e-6),
        "{} vs {}",
        part.liquidity,
        l * f
    );
    assert!(
        close(seized[0].1, v * f, 1e-6),
        "{} vs {}",
        seized[0].1,
        v * f
    );
    let risk = e.risk("a").unwrap();
    assert!(close(risk.margin_balance, (1.0 - f) * m, 1e-6), "{risk:?}");
    assert_eq!(risk.status, Status::Restricted);
}

/// No seizure when closing the derivatives is enough. BTC at 47,400: the long has lost
/// 12,600; margin balance 1,000 - 12,600 + 12,825 = 1,225, requirement 0.15 x 47,400 + 1,500
/// = 8,610 (both fall together), maintenance 6,457.5: liquidatable, not bankrupt. With whole
/// steps and no penalty, partial liquidation closes the perpetual in one step (USDC -11,600);
/// the margin balance stays 1,225, now against a requirement of 1,500 and a maintenance of
/// 1,125: restricted, above maintenance, so the deposit is left alone.
#[test]
fn nothing_is_seized_when_closing_the_derivatives_restores_maintenance() {
    let whole_steps = EngineConfig {
        liquidation_penalty: 0.0,
        liquidation_step: 1.0,
        ..EngineConfig::default()
    };
    let mut e = engine(47400.0, &[deposit("ETH", 5.0)], whole_steps);
    assert_eq!(e.risk("a").unwrap().status, Status::Liquidatable);
    let out = e.apply(&Event::Liquidate);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::LiquidationFill { size, .. } if *size == -1.0)),
        "{out:?}"
    );
    assert!(seizes(&out).is_empty(), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::CloseOut { .. })));
    let risk = e.risk("a").unwrap();
    assert!(close(risk.margin_balance, 1225.0, 1e-9), "{risk:?}");
    assert!(close(risk.maintenance_margin, 1125.0, 1e-9), "{risk:?}");
    assert_eq!(risk.status, Status::Restricted);
    assert_eq!(e.account("a").unwrap().external, vec![deposit("ETH", 5.0)]);
}

/// A borrow is never seized. With a USDC borrow of 2,000 beside the deposit the equation of
/// the first test gains -2,000: -2,175 + 2,175 f = 1,125 (1 - f), f = 3,300 / 3,300 = 1:
/// exactly all of the deposit, and the borrow stays. With a borrow of 20,000 even all of it
/// cannot restore the account: the deposit is seized in full (15,000 into USDC, -13,000 +
/// 15,000 = 2,000 >= 0, so no deficit for the fund), and what is left, below zero by the
/// borrow the engine cannot settle, is closed out once and not again.
#[test]
fn a_borrow_is_never_seized() {
    for (owed, closes_out) in [(2000.0, false), (20000.0, true)] {
        let held = [borrow("USDC", owed), deposit("ETH", 5.0)];
        let mut e = engine(46000.0, &held, EngineConfig::default());
        let total = e.total_value();
        let out = e.apply(&Event::Liquidate);
        let seized = seizes(&out);
        assert_eq!(seized.len(), 1, "{out:?}");
        let ExternalPosition::LendingDeposit(part) = &seized[0].0 else {
            panic!("a borrow was seized: {seized:?}");
        };
        assert!(close(part.amount, 5.0, 1e-9), "{owed}: {}", part.amount);
        assert!(close(seized[0].1, 15000.0, 1e-9));
        assert_eq!(e.account("a").unwrap().external, vec![borrow("USDC", owed)]);
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Output::CloseOut { .. }))
                .count(),
            usize::from(closes_out),
            "{owed}: {out:?}"
        );
        assert!(close(usdc(&e, "a"), 2000.0, 1e-9));
        assert!(close(e.total_value(), total, 1e-12));
        // Nothing is left to act on: another round emits nothing for `a`.
        let again = e.apply(&Event::Liquidate);
        assert!(
            !again.iter().any(|o| matches!(
                o,
                Output::LiquidationSeize { .. }
                    | Output::CloseOut { .. }
                    | Output::LiquidationFill { .. }
            )),
            "{owed}: {again:?}"
        );
    }
}

/// An account whose only collateral sits in another protocol is liquidated too: nothing to
/// close, so a fall of ETH alone leads straight to the seizure. 5 ETH deposited against a
/// USDC borrow of 11,000 at 3,000: margin balance 12,825 - 11,000 = 1,825 >= maintenance
/// 1,125. At 2,700: 5 x 2,700 = 13,500 counts 11,542.5, so 542.5 against a maintenance of
/// 0.75 x 1,350 = 1,012.5: liquidatable. Seizing f: 542.5 + 13,500 x 0.145 f = 1,012.5
/// (1 - f), f = 470 / 2,970.
#[test]
fn collateral_alone_in_another_protocol_is_seized_when_its_price_falls() {
    let portfolio = serde_json::json!({"accounts": [
        {"id": "a", "balances": {}, "external": [borrow("USDC", 11000.0), deposit("ETH", 5.0)]}]});
    let market =
        r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "ETH": 3000, "USDC": 1}}"#;
    let mut e = Engine::new(
        &Portfolio::parse("p.json", &portfolio.to_string()).unwrap(),
        &Market::parse("m.json", market).unwrap(),
        &Params::parse("r.json", PARAMS).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    assert_eq!(e.risk("a").unwrap().status, Status::Healthy);
    let out = e.apply(&Event::Price {
        underlying: "ETH".into(),
        price: 2700.0,
    });
    let seized = seizes(&out);
    assert_eq!(seized.len(), 1, "{out:?}");
    let f = 470.0 / 2970.0;
    let ExternalPosition::LendingDeposit(part) = &seized[0].0 else {
        panic!("{seized:?}");
    };
    assert!(
        close(part.amount, 5.0 * f, 1e-9),
        "{} vs {}",
        part.amount,
        5.0 * f
    );
    assert!(close(seized[0].1, 13500.0 * f, 1e-9));
    assert_eq!(e.risk("a").unwrap().status, Status::Restricted);
}

/// Of two kinds of collateral, the one whose seizure frees the most surplus per dollar goes
/// first. A USDC deposit (cut 5 %, no market risk) frees 0.05 per dollar; an ETH deposit frees
/// its cuts, 1 - 0.855 = 0.145, and its maintenance 0.75 x 0.10 = 0.075 per dollar: the ETH
/// is seized first (0.22 per dollar against 0.05), and it suffices: BTC at 45,050 leaves the
/// margin balance at -175 as in the first test (the USDC deposit's 950 against 950 more
/// lost), so the same f = 13/33 of the ETH.
#[test]
fn the_collateral_that_frees_the_most_per_dollar_is_seized_first() {
    let held = [deposit("USDC", 1000.0), deposit("ETH", 5.0)];
    let mut e = engine(45050.0, &held, EngineConfig::default());
    // BTC at 45,050: -14,950 on the long, margin balance 1,000 - 14,950 + 12,825 + 950 = -175.
    assert!(close(e.risk("a").unwrap().margin_balance, -175.0, 1e-9));
    let out = e.apply(&Event::Liquidate);
    let seized = seizes(&out);
    assert_eq!(seized.len(), 1, "{out:?}");
    let ExternalPosition::LendingDeposit(part) = &seized[0].0 else {
        panic!("{seized:?}");
    };
    assert_eq!(part.asset, "ETH");
    assert!(
        close(part.amount, 5.0 * 13.0 / 33.0, 1e-9),
        "{}",
        part.amount
    );
    let usdc_deposit = e.account("a").unwrap().external;
    assert!(
        usdc_deposit.contains(&deposit("USDC", 1000.0)),
        "{usdc_deposit:?}"
    );
}

/// Replaying the same events gives the same seizures, bit for bit, and a snapshot of the
/// engine after them restores the liquidator's seized collateral.
#[test]
fn seizures_replay_identically() {
    let run = || {
        let mut e = engine(
            39800.0,
            &[lp(1000.0, 2000.0, 4500.0)],
            EngineConfig::default(),
        );
        let out = e.apply(&Event::Liquidate);
        (e, out)
    };
    let (e1, o1) = run();
    let (_, o2) = run();
    assert_eq!(
        serde_json::to_string(&o1).unwrap(),
        serde_json::to_string(&o2).unwrap()
    );
    let restored = Engine::restore(e1.snapshot()).unwrap();
    assert_eq!(restored.account("liquidator"), e1.account("liquidator"));
    assert_eq!(restored.account("a"), e1.account("a"));
}

mod laws {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the loss and the mix of collateral: a borrow is never seized nor changed;
        /// nothing is seized beyond what is held, nor before the derivatives are closed; value
        /// is conserved; and afterwards the account is at maintenance or has nothing seizable
        /// left, and a seizure that took only part of a position left it exactly at maintenance
        /// (no more was taken than needed); the engine's figures are a fresh evaluation's.
        #[test]
        fn seizures_obey_the_rule(
            btc in 30000.0f64..60000.0,
            eth in 0.0f64..10.0,
            liquidity in prop::option::of(1.0f64..2000.0),
            owed in 0.0f64..8000.0,
        ) {
            let mut held = vec![borrow("USDC", owed), deposit("ETH", eth)];
            if let Some(l) = liquidity {
                held.push(lp(l, 2000.0, 4500.0));
            }
            let mut e = engine(btc, &held, EngineConfig::default());
            let total = e.total_value();
            let out = e.apply(&Event::Liquidate);
            let last_fill = out.iter().rposition(|o| matches!(o, Output::LiquidationFill { .. }));
            let first_seize = out.iter().position(|o| matches!(o, Output::LiquidationSeize { .. }));
            if let (Some(f), Some(s)) = (last_fill, first_seize) {
                prop_assert!(f < s, "{out:?}");
            }
            let after = e.account("a").unwrap();
            prop_assert!(after.external.contains(&borrow("USDC", owed)));
            prop_assert!(after.positions.is_empty() || first_seize.is_none());
            let mut partial = false;
            for (part, value) in seizes(&out) {
                prop_assert!(value > 0.0);
                let (seized, had, rest) = match &part {
                    ExternalPosition::LendingDeposit(d) => (d.amount, eth, after.external.iter().find_map(|x| match x {
                        ExternalPosition::LendingDeposit(r) => Some(r.amount),
                        _ => None,
                    })),
                    ExternalPosition::UniswapV3Lp(p) => (p.liquidity, liquidity.unwrap_or(0.0), after.external.iter().find_map(|x| match x {
                        ExternalPosition::UniswapV3Lp(r) => Some(r.liquidity),
                        _ => None,
                    })),
                    ExternalPosition::LendingBorrow(_) => return Err(TestCaseError::fail("a borrow was seized")),
                };
                prop_assert!(seized > 0.0 && seized <= had, "{seized} of {had}");
                if let Some(rest) = rest {
                    partial = true;
                    prop_assert!(close(rest + seized, had, 1e-12), "{rest} + {seized} != {had}");
                }
            }
            let risk = e.risk("a").unwrap();
            let nothing_left = !after.external.iter().any(|x| !matches!(x, ExternalPosition::LendingBorrow(_)));
            if first_seize.is_some() {
                prop_assert!(risk.margin_balance >= risk.maintenance_margin || nothing_left, "{risk:?}");
            }
            if partial {
                prop_assert!(close(risk.margin_balance, risk.maintenance_margin, 1e-9), "{risk:?}");
            }
            prop_assert!(close(e.total_value(), total, 1e-9), "{} vs {total}", e.total_value());
            // The engine's figures after the seizures are a fresh evaluation's (the liquidator's
            // included, which now holds the seized collateral).
            let fresh = e.full_requirements().unwrap();
            for (f, c) in fresh.iter().zip(&e.cached_requirements()) {
                prop_assert!(close(c.margin_balance, f.margin_balance, 1e-9), "{f:?} vs {c:?}");
                prop_assert!(close(c.initial_margin, f.initial_margin, 1e-9), "{f:?} vs {c:?}");
                prop_assert_eq!(c.status, f.status);
            }
        }
    }
}

/// An attested deposit is seized like one from the portfolio. Attested into the first test's
/// book (BTC at 46,000), it makes the same liquidation: 13/33 of it is seized and the rest
/// still rests on its attestation; beside a 2,000 USDC borrow all of it goes (see
/// `a_borrow_is_never_seized`) and its attestation with it.
#[test]
fn an_attested_deposit_is_seized_and_a_fully_seized_one_drops_its_attestation() {
    const ATTESTER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
    for (owed, kept) in [(None, true), (Some(2000.0), false)] {
        let params = PARAMS.replace(
            r#""aave-v3": {"haircut": 0.05}"#,
            &format!(r#""aave-v3": {{"haircut": 0.05, "attester": "{ATTESTER}"}}"#),
        );
        let held: Vec<ExternalPosition> = owed.map(|o| borrow("USDC", o)).into_iter().collect();
        let portfolio = serde_json::json!({"accounts": [
            {"id": "a", "balances": {"USDC": 1000},
             "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}],
             "external": held}]});
        let market = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 46000, "ETH": 3000, "USDC": 1}}"#;
        let mut e = Engine::new(
            &Portfolio::parse("p.json", &portfolio.to_string()).unwrap(),
            &Market::parse("m.json", market).unwrap(),
            &Params::parse("r.json", &params).unwrap(),
            EngineConfig::default(),
        )
        .unwrap();
        let out = e.apply(&Event::Attestation {
            account: "a".into(),
            position: deposit("ETH", 5.0),
            attester: ATTESTER.into(),
            nonce: 1,
            valid_until: 2_000_000_000,
            now_s: 1_900_000_000,
        });
        let seized = seizes(&out);
        assert_eq!(seized.len(), 1, "{out:?}");
        let ExternalPosition::LendingDeposit(part) = &seized[0].0 else {
            panic!("{seized:?}");
        };
        let f = if kept { 13.0 / 33.0 } else { 1.0 };
        assert!(close(part.amount, 5.0 * f, 1e-9), "{}", part.amount);
        assert_eq!(
            e.attested().positions.contains_key("a"),
            kept,
            "{:?}",
            e.attested()
        );
    }
}
