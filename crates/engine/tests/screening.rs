//! Screening of price ticks and fills (see the `engine` module documentation) is exact: on
//! long random sequences of ticks of every size on several underlyings, fills at and away from
//! the mark, deposits of stablecoin and coin collateral, withdrawals, vol changes and
//! liquidation rounds, an engine that screens and one that re-margins every exposed account
//! at every event (`EngineConfig { screening: false, .. }`) give byte-identical outputs (so the
//! same margin-change events) and, after every event, every account's figures read from the
//! screening engine equal a full recompute bit for bit. The screening engine also re-margins
//! every account from its cached grid rows where they are still valid.

use pmargin_core::synthetic;
use pmargin_engine::{Engine, EngineConfig, Event, Output};
use proptest::prelude::*;

const ACCOUNTS: usize = 40;

fn collateral_cut(i: usize, _asset: &str) -> f64 {
    0.4 + 0.1 * (i % 8) as f64
}

/// The synthetic book (options, futures and perpetuals on five underlyings, many accounts
/// close to their margin) as an engine, screening or not, margined with MODEL.md version 1
/// or with every part of version 2 on (tenor-scaled vol shocks, extended moves, add-ons).
fn engine(screening: bool, v2: bool) -> Engine {
    let book = synthetic::book(ACCOUNTS, 17).unwrap();
    // Collateral cut to between 40% and 110% of the synthetic book's, so accounts start on
    // both sides of every status boundary (version 2 asks for more: cut less).
    let portfolio = if v2 {
        synthetic::portfolio(&book, |i, a| 1.5 * collateral_cut(i, a), |_, _| true, 1e10)
    } else {
        synthetic::portfolio(&book, collateral_cut, |_, _| true, 1e10)
    };
    let (market, params) = if v2 {
        synthetic::market_and_params_v2().unwrap()
    } else {
        synthetic::market_and_params().unwrap()
    };
    let config = EngineConfig {
        insurance_fund: 1e6,
        screening,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&portfolio, &market, &params, config).unwrap();
    e.ensure_settlement_asset().unwrap();
    // The screening engine keeps every account's grid rows between re-margins (the plain one
    // only those of large accounts), so the row cache is checked against full recomputes too.
    if screening {
        e.set_row_cache_min_positions(0);
    }
    e
}

#[derive(Debug, Clone)]
enum Op {
    /// A relative move of `10^-exponent` (either sign) on underlying `u`.
    Tick {
        u: usize,
        exponent: f64,
        up: bool,
    },
    /// A fill between two accounts of about `notional` USD, at the mark or `off` away from it.
    Trade {
        a: usize,
        b: usize,
        instrument: usize,
        notional: f64,
        off: f64,
    },
    Deposit {
        a: usize,
        coin: Option<usize>,
        amount: f64,
    },
    Withdraw {
        a: usize,
        amount: f64,
    },
    Vol {
        u: usize,
        vol: f64,
    },
    Liquidate,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..5usize, 0.5..5.0f64, any::<bool>())
            .prop_map(|(u, exponent, up)| Op::Tick { u, exponent, up }),
        8 => (0..ACCOUNTS, 0..ACCOUNTS, any::<prop::sample::Index>(), 100.0..50_000.0f64,
              prop_oneof![3 => Just(0.0), 1 => -0.05..0.05f64])
            .prop_map(|(a, b, i, notional, off)| Op::Trade {
                a,
                b,
                instrument: i.index(usize::MAX),
                notional,
                off
            }),
        1 => (0..ACCOUNTS, prop::option::of(0..5usize), 100.0..20_000.0f64)
            .prop_map(|(a, coin, amount)| Op::Deposit { a, coin, amount }),
        1 => (0..ACCOUNTS, 100.0..20_000.0f64).prop_map(|(a, amount)| Op::Withdraw { a, amount }),
        1 => (0..5usize, 0.3..1.2f64).prop_map(|(u, vol)| Op::Vol { u, vol }),
        1 => Just(Op::Liquidate),
    ]
}

fn event(e: &Engine, op: &Op) -> Event {
    let book = e.book();
    let id = |a: usize| book.accounts[a].id.clone();
    match *op {
        Op::Tick { u, exponent, up } => {
            let name = book.underlyings[u].name.clone();
            let move_ = 10f64.powf(-exponent);
            let price = e.market().prices[&name] * if up { 1.0 + move_ } else { 1.0 - move_ };
            Event::Price {
                underlying: name,
                price,
            }
        }
        Op::Trade {
            a,
            b,
            instrument,
            notional,
            off,
        } => {
            let i = instrument % book.instruments.len();
            let inst = &book.instruments[i];
            let mark = inst.value_at(1.0, book.rate);
            let spot = book.underlyings[inst.underlying].spot;
            let size = notional / spot * if a % 2 == 0 { 1.0 } else { -1.0 };
            Event::Trade {
                account: id(a),
                instrument: inst.instrument.name.clone(),
                size,
                price: mark * (1.0 + off),
                fee: 0.5,
                counterparty: Some(id(if a == b { (b + 1) % ACCOUNTS } else { b })),
            }
        }
        Op::Deposit { a, coin, amount } => {
            let (asset, amount) = match coin {
                Some(u) => {
                    let name = book.underlyings[u].name.clone();
                    let units = amount / e.market().prices[&name];
                    (name, units)
                }
                None => ("USDC".to_string(), amount),
            };
            Event::Deposit {
                account: id(a),
                asset,
                amount,
            }
        }
        Op::Withdraw { a, amount } => Event::Withdrawal {
            account: id(a),
            asset: "USDC".into(),
            amount,
        },
        Op::Vol { u, vol } => Event::Vol {
            underlying: book.underlyings[u].name.clone(),
            vol,
            instrument: None,
        },
        Op::Liquidate => Event::Liquidate,
    }
}

/// Applies `ops` to a screening and a non-screening engine side by side, checking after every
/// event; returns how many events left some account's figures stale (screened).
fn run(ops: &[Op], v2: bool) -> Result<usize, TestCaseError> {
    let mut screened = engine(true, v2);
    let mut plain = engine(false, v2);
    let mut screened_events = 0;
    for (n, op) in ops.iter().enumerate() {
        let ev = event(&plain, op);
        let a = screened.apply(&ev);
        let b = plain.apply(&ev);
        prop_assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap(),
            "event {} {:?}",
            n,
            ev
        );
        prop_assert_eq!(plain.stale_accounts(), 0);
        screened_events += (screened.stale_accounts() > 0) as usize;
        let full = plain.full_requirements().unwrap();
        let bits = |r: &pmargin_engine::AccountRisk| {
            (
                r.equity.to_bits(),
                r.margin_balance.to_bits(),
                r.initial_margin.to_bits(),
                r.maintenance_margin.to_bits(),
                r.status,
            )
        };
        for ((id, s), (_, p)) in screened.risks().zip(plain.risks()) {
            prop_assert_eq!(bits(s), bits(p), "event {} {:?}: account {}", n, ev, id);
        }
        for (f, (id, p)) in full.iter().zip(plain.risks()) {
            prop_assert_eq!(
                bits(f),
                bits(p),
                "event {} {:?}: account {} vs full",
                n,
                ev,
                id
            );
        }
        prop_assert_eq!(
            screened.insurance_fund().to_bits(),
            plain.insurance_fund().to_bits()
        );
        prop_assert_eq!(
            screened.total_value().to_bits(),
            plain.total_value().to_bits()
        );
    }
    prop_assert_eq!(screened.portfolio(), plain.portfolio());
    Ok(screened_events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 50, ..ProptestConfig::default() })]

    #[test]
    fn screening_changes_no_output_and_no_figure(ops in prop::collection::vec(op(), 150)) {
        let screened = run(&ops, false)?;
        // The property is only worth something if screening happened.
        prop_assert!(screened > 0, "no event was screened");
    }

    /// The same with version 2's extended moves, tenor-scaled vol shocks and add-ons (the
    /// liquidity add-on of option books included), whose slopes the bands take in.
    #[test]
    fn screening_with_version_2_changes_no_output_and_no_figure(
        ops in prop::collection::vec(op(), 150)
    ) {
        let screened = run(&ops, true)?;
        prop_assert!(screened > 0, "no event was screened");
    }
}

/// Ticks of 0.01% to 1% on every underlying between fills, with margin changes and
/// liquidations along the way.
fn long_walk() -> Vec<Op> {
    let mut ops = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for k in 0..600 {
        let r = next();
        ops.push(if k % 3 == 0 {
            Op::Trade {
                a: (r % ACCOUNTS as u64) as usize,
                b: ((r >> 8) % ACCOUNTS as u64) as usize,
                instrument: (r >> 16) as usize,
                notional: 500.0 + (r >> 40) as f64 % 20_000.0,
                off: 0.0,
            }
        } else {
            Op::Tick {
                u: ((r >> 4) % 5) as usize,
                exponent: 2.0 + ((r >> 20) % 1000) as f64 / 500.0,
                up: (r >> 33) % 2 == 0 || k > 400,
            }
        });
    }
    ops
}

#[test]
fn a_long_walk_of_small_ticks_is_screened_and_exact() {
    // Screening on and off agree at every step.
    let ops = long_walk();
    let screened = run(&ops, false).map_err(|e| e.to_string()).unwrap();
    eprintln!("screened events: {screened} of {}", ops.len());
    assert!(screened > 100, "only {screened} events screened");
    let mut e = engine(true, false);
    let outputs: Vec<Output> = ops.iter().flat_map(|op| e.apply(&event(&e, op))).collect();
    let kinds: Vec<String> = outputs
        .iter()
        .map(|o| serde_json::to_value(o).unwrap()["type"].to_string())
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| x.trim_matches('"') == k).count();
    eprintln!(
        "margin changes {}, liquidation fills {}, close-outs {}, rejected {}",
        count("margin_change"),
        count("liquidation_fill"),
        count("close_out"),
        count("rejected")
    );
    assert!(
        count("margin_change") > 0 && count("liquidation_fill") > 0,
        "the walk must change statuses and liquidate"
    );
}

#[test]
fn a_run_of_events_applied_on_the_thread_pool_is_applied_one_by_one() {
    let mut one = engine(true, false);
    let start = one.sequence();
    let (mut events, mut expected) = (Vec::new(), Vec::new());
    for op in long_walk() {
        let ev = event(&one, &op);
        expected.push(serde_json::to_string(&one.apply(&ev)).unwrap());
        events.push(ev);
    }
    let mut all = engine(true, false);
    let mut got = Vec::new();
    all.apply_all(&events, |e, ev, out| {
        got.push((
            e.sequence(),
            ev.clone(),
            serde_json::to_string(&out).unwrap(),
        ));
    });
    let n = events.len() as u64;
    assert_eq!(
        got.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        (start + 1..=start + n).collect::<Vec<_>>()
    );
    assert_eq!(
        got.iter().map(|(_, e, _)| e.clone()).collect::<Vec<_>>(),
        events
    );
    assert_eq!(
        got.into_iter().map(|(_, _, o)| o).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(all.portfolio(), one.portfolio());
    assert_eq!(
        all.insurance_fund().to_bits(),
        one.insurance_fund().to_bits()
    );
    // Runs shorter than the events it looks ahead at, and none: each event once, in order.
    for n in [0, 1, 3, 9] {
        let mut short = engine(true, false);
        let mut handed = Vec::new();
        short.apply_all(&events[..n], |e, ev, out| {
            handed.push((
                e.sequence(),
                ev.clone(),
                serde_json::to_string(&out).unwrap(),
            ))
        });
        let want: Vec<_> = (1..=n as u64)
            .map(|k| start + k)
            .zip(events[..n].iter().cloned())
            .zip(expected[..n].iter().cloned())
            .map(|((s, e), o)| (s, e, o))
            .collect();
        assert_eq!(handed, want, "a run of {n} events");
    }
}

/// Every underlying drifts 40% one way and back in steps of 0.5%, with fills between: far past
/// the window where the options' tighter slope bounds hold (4%), so accounts whose bands would
/// reach beyond it (those with room to spare) are re-margined when the price leaves it, and
/// the two engines agree throughout.
#[test]
fn a_drift_far_beyond_the_slope_window_is_screened_and_exact() {
    let mut ops = Vec::new();
    for (k, up) in [true, false, false, true].into_iter().enumerate() {
        for step in 0..70 {
            for u in 0..5 {
                ops.push(Op::Tick {
                    u,
                    exponent: 2.0 + (2.0f64).log10(),
                    up,
                });
            }
            if step % 10 == 0 {
                let a = (7 * step + k) % ACCOUNTS;
                ops.push(Op::Trade {
                    a,
                    b: (a + 1 + step % 5) % ACCOUNTS,
                    instrument: 31 * step + k,
                    notional: 2_000.0,
                    off: 0.0,
                });
            }
        }
    }
    let screened = run(&ops, false).map_err(|e| e.to_string()).unwrap();
    assert!(screened > 100, "only {screened} events screened");
}

/// The long walk with version 2 on: screened and plain engines agree at every step, and
/// screening still spares most re-margins.
#[test]
fn a_long_walk_with_version_2_is_screened_and_exact() {
    let ops = long_walk();
    let screened = run(&ops, true).map_err(|e| e.to_string()).unwrap();
    eprintln!("version 2: screened events: {screened} of {}", ops.len());
    assert!(screened > 100, "only {screened} events screened");
    let mut e = engine(true, true);
    let outputs: Vec<Output> = ops.iter().flat_map(|op| e.apply(&event(&e, op))).collect();
    let changes = outputs
        .iter()
        .filter(|o| matches!(o, Output::MarginChange { .. }))
        .count();
    assert!(changes > 0, "the walk must change statuses");
}
