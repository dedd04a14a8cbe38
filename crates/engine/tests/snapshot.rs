//! Recovery: restoring the snapshot taken after event `k` and applying events `k+1..n` gives
//! the outputs and the state, byte for byte, of applying `1..n` from genesis. Sequences mix
//! venue quotes (with stale gaps, outliers and circuit-breaker jumps, a stable price),
//! direct price ticks, fills, deposits of stablecoin and coin collateral, withdrawals, vol
//! changes, funding, settlement of a future and liquidation rounds.

use pmargin_core::synthetic;
use pmargin_engine::oracle::{OracleConfig, StablePriceConfig};
use pmargin_engine::{Engine, EngineConfig, EngineSnapshot, Event, Output};
use proptest::prelude::*;
use std::collections::BTreeMap;

const ACCOUNTS: usize = 24;
const SOURCES: [&str; 3] = ["venue-a", "venue-b", "venue-c"];

fn genesis() -> Engine {
    genesis_with(true)
}

fn genesis_with(screening: bool) -> Engine {
    let book = synthetic::book(ACCOUNTS, 23).unwrap();
    // Collateral cut to between 40% and 110%, so accounts start on both sides of each boundary.
    let portfolio =
        synthetic::portfolio(&book, |i, _| 0.4 + 0.1 * (i % 8) as f64, |_, _| true, 1e10);
    let (market, params) = synthetic::market_and_params().unwrap();
    let config = EngineConfig {
        insurance_fund: 5e4,
        screening,
        oracle: Some(OracleConfig {
            circuit_breaker: 0.08,
            stable_price: Some(StablePriceConfig {
                max_move_per_second: 0.001,
            }),
            ..OracleConfig::default()
        }),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&portfolio, &market, &params, config).unwrap();
    e.ensure_settlement_asset().unwrap();
    e
}

#[derive(Debug, Clone)]
enum Op {
    /// Quotes from `sources` (a bit mask) around `move_` away from the index, after `gap_ms`.
    Quotes {
        u: usize,
        move_: f64,
        sources: u8,
        gap_ms: i64,
        outlier: bool,
    },
    Tick {
        u: usize,
        move_: f64,
    },
    Trade {
        a: usize,
        b: usize,
        instrument: usize,
        notional: f64,
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
    Funding {
        u: usize,
        rate: f64,
    },
    Settle,
    Liquidate,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, prop_oneof![4 => -0.02..0.02f64, 1 => -0.3..0.3f64], 1..8u8,
              prop_oneof![4 => 100..3_000i64, 1 => 5_000..40_000i64], prop::bool::weighted(0.15))
            .prop_map(|(u, move_, sources, gap_ms, outlier)| Op::Quotes { u, move_, sources, gap_ms, outlier }),
        2 => (2..5usize, -0.05..0.05f64).prop_map(|(u, move_)| Op::Tick { u, move_ }),
        6 => (0..ACCOUNTS, 0..ACCOUNTS, any::<prop::sample::Index>(), 100.0..40_000.0f64)
            .prop_map(|(a, b, i, notional)| Op::Trade { a, b, instrument: i.index(usize::MAX), notional }),
        1 => (0..ACCOUNTS, prop::option::of(0..5usize), 100.0..20_000.0f64)
            .prop_map(|(a, coin, amount)| Op::Deposit { a, coin, amount }),
        1 => (0..ACCOUNTS, 100.0..20_000.0f64).prop_map(|(a, amount)| Op::Withdraw { a, amount }),
        1 => (0..5usize, 0.3..1.2f64).prop_map(|(u, vol)| Op::Vol { u, vol }),
        1 => (0..5usize, -0.01..0.01f64).prop_map(|(u, rate)| Op::Funding { u, rate }),
        1 => Just(Op::Settle),
        1 => Just(Op::Liquidate),
    ]
}

/// The events of `ops`, generated against an engine that applies them as it goes.
fn events(ops: &[Op]) -> Vec<Event> {
    let mut e = genesis();
    let mut now = 1_000i64;
    let mut out = Vec::new();
    for op in ops {
        let book = e.book();
        let id = |a: usize| book.accounts[a].id.clone();
        let name = |u: usize| book.underlyings[u].name.clone();
        let batch: Vec<Event> = match *op {
            Op::Quotes {
                u,
                move_,
                sources,
                gap_ms,
                outlier,
            } => {
                now += gap_ms;
                let index = e.market().prices[&name(u)];
                SOURCES
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| sources & (1 << k) != 0)
                    .map(|(k, source)| {
                        let skew = if outlier && k == 0 {
                            0.2
                        } else {
                            0.001 * k as f64
                        };
                        Event::Quote {
                            source: source.to_string(),
                            underlying: name(u),
                            price: index * (1.0 + move_) * (1.0 + skew),
                            ts_ms: now + k as i64,
                            confidence: None,
                            weight: None,
                        }
                    })
                    .collect()
            }
            Op::Tick { u, move_ } => vec![Event::Price {
                underlying: name(u),
                price: e.market().prices[&name(u)] * (1.0 + move_),
            }],
            Op::Trade {
                a,
                b,
                instrument,
                notional,
            } => {
                let i = instrument % book.instruments.len();
                let inst = &book.instruments[i];
                let spot = book.underlyings[inst.underlying].spot;
                vec![Event::Trade {
                    account: id(a),
                    instrument: inst.instrument.name.clone(),
                    size: notional / spot * if a % 2 == 0 { 1.0 } else { -1.0 },
                    price: inst.value_at(1.0, book.rate),
                    fee: 1.0,
                    counterparty: Some(id(if a == b { (b + 1) % ACCOUNTS } else { b })),
                }]
            }
            Op::Deposit { a, coin, amount } => vec![match coin {
                Some(u) => Event::Deposit {
                    account: id(a),
                    asset: name(u),
                    amount: amount / e.market().prices[&name(u)],
                },
                None => Event::Deposit {
                    account: id(a),
                    asset: "USDC".into(),
                    amount,
                },
            }],
            Op::Withdraw { a, amount } => vec![Event::Withdrawal {
                account: id(a),
                asset: "USDC".into(),
                amount,
            }],
            Op::Vol { u, vol } => vec![Event::Vol {
                underlying: name(u),
                vol,
                instrument: None,
            }],
            Op::Funding { u, rate } => vec![Event::Funding {
                instrument: format!("{}-PERPETUAL", name(u)),
                rate,
            }],
            Op::Settle => vec![Event::Settlement {
                instrument: "ETH-27DEC26".into(),
                price: e.market().prices["ETH"],
            }],
            Op::Liquidate => vec![Event::Liquidate],
        };
        for ev in batch {
            e.apply(&ev);
            out.push(ev);
        }
    }
    out
}

/// Where two texts part, with some context.
fn diff(a: &str, b: &str) -> String {
    let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let from = at.saturating_sub(150);
    let show = |s: &str| {
        s.get(from..(at + 150).min(s.len()))
            .unwrap_or("")
            .to_string()
    };
    format!("at byte {at}:\n  {}\n  {}", show(a), show(b))
}

fn json<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_string(x).unwrap()
}

/// Everything an engine holds and says (its screening setting aside).
fn state(e: &Engine) -> String {
    let risks: Vec<_> = e.risks().map(|(id, r)| (id.to_string(), *r)).collect();
    let mut snapshot = e.snapshot();
    snapshot.config.screening = true;
    format!(
        "{}\n{}\n{}\n{:?}",
        json(&snapshot),
        json(&risks),
        e.total_value().to_bits(),
        e.portfolio()
    )
}

/// Applies `events` from genesis; restores the snapshot taken after each of `cuts` (through
/// JSON) and replays the rest: outputs and final state must be those of the straight run.
fn check(events: &[Event], cuts: &[usize]) -> Result<(usize, usize), TestCaseError> {
    let mut e = genesis();
    let mut snapshots = BTreeMap::new();
    let mut outputs: Vec<Vec<Output>> = Vec::new();
    for (k, ev) in events.iter().enumerate() {
        if cuts.contains(&k) {
            let snap = json(&e.snapshot());
            // A restored engine snapshots to the very same text.
            let restored = Engine::restore(serde_json::from_str::<EngineSnapshot>(&snap).unwrap())
                .map_err(|err| TestCaseError::fail(err.to_string()))?;
            let again = json(&restored.snapshot());
            prop_assert!(
                again == snap,
                "snapshot round trip at {}: {}",
                k,
                diff(&again, &snap)
            );
            let (a, b) = (state(&restored), state(&e));
            prop_assert!(a == b, "restored state at {}: {}", k, diff(&a, &b));
            snapshots.insert(k, snap);
        }
        outputs.push(e.apply(ev));
    }
    let end = state(&e);
    for (&k, snap) in &snapshots {
        let mut r = Engine::restore(serde_json::from_str::<EngineSnapshot>(snap).unwrap())
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(r.sequence(), k as u64);
        for (j, ev) in events.iter().enumerate().skip(k) {
            let out = r.apply(ev);
            prop_assert_eq!(
                json(&out),
                json(&outputs[j]),
                "event {} after a cut at {}",
                j,
                k
            );
        }
        let after = state(&r);
        prop_assert!(
            after == end,
            "state after a cut at {}: {}",
            k,
            diff(&after, &end)
        );
    }
    let liquidations = outputs
        .iter()
        .flatten()
        .filter(|o| matches!(o, Output::LiquidationFill { .. }))
        .count();
    let suspensions = outputs
        .iter()
        .flatten()
        .filter(|o| matches!(o, Output::LiquidationsSuspended { .. }))
        .count();
    Ok((liquidations, suspensions))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 30, ..ProptestConfig::default() })]

    #[test]
    fn screening_with_an_oracle_changes_nothing(ops in prop::collection::vec(op(), 60..120)) {
        let events = events(&ops);
        let (mut screened, mut plain) = (genesis_with(true), genesis_with(false));
        for (k, ev) in events.iter().enumerate() {
            let (a, b) = (json(&screened.apply(ev)), json(&plain.apply(ev)));
            prop_assert!(a == b, "event {} {:?}: {}", k, ev, diff(&a, &b));
            let (a, b) = (state(&screened), state(&plain));
            prop_assert!(a == b, "event {}: {}", k, diff(&a, &b));
        }
    }

    #[test]
    fn restore_then_replay_equals_the_straight_run(
        ops in prop::collection::vec(op(), 60..120),
        cuts in prop::collection::vec(0..200usize, 3),
    ) {
        let events = events(&ops);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % events.len()).collect();
        check(&events, &cuts)?;
    }
}

#[test]
fn a_fixed_sequence_with_liquidations_and_suspensions_recovers_exactly() {
    // A crash of BTC through quotes (a circuit-breaker jump confirmed, then a venue going
    // quiet), fills in between, then a recovery: snapshots everywhere along the way.
    let mut ops = Vec::new();
    for k in 0..40 {
        ops.push(Op::Trade {
            a: k % ACCOUNTS,
            b: (k * 7 + 3) % ACCOUNTS,
            instrument: k * 37,
            notional: 5_000.0 + 1_000.0 * (k % 5) as f64,
        });
        ops.push(Op::Quotes {
            u: 0,
            move_: if k == 10 || k == 11 { -0.15 } else { -0.01 },
            sources: if k % 9 == 8 { 1 } else { 7 },
            gap_ms: if k % 13 == 12 { 20_000 } else { 1_000 },
            outlier: k % 6 == 5,
        });
    }
    ops.push(Op::Liquidate);
    let events = events(&ops);
    let cuts: Vec<usize> = (0..events.len()).step_by(7).collect();
    let (liquidations, suspensions) = check(&events, &cuts).map_err(|e| e.to_string()).unwrap();
    assert!(liquidations > 0, "the crash must liquidate");
    assert!(suspensions > 0, "the quiet venue must suspend liquidations");
}

#[test]
fn a_snapshot_of_another_format_is_refused() {
    let mut snap = genesis().snapshot();
    snap.format += 1;
    assert!(Engine::restore(snap).is_err());
}
