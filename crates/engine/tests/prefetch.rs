//! `Engine::apply_all` asks the memory for the accounts of the trades ahead before it applies
//! them (prefetch hints), looking them up as they stand when the hint is made. Names that are
//! not there (no such account, no such counterparty, an account that a deposit between creates)
//! must neither panic nor change a result: every event's outputs, the sequence numbers and
//! the final book equal those of `Engine::apply`, event by event, which makes no hint.

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::{Engine, EngineConfig, Event, Output};

use pmargin_core::testkit::{ONE_BTC_MARKET as MARKET, ONE_BTC_PARAMS as PARAMS};
const BOOK: &str = r#"{"accounts": [{"id": "a", "balances": {"USDC": 20000}},
  {"id": "b", "balances": {"USDC": 1000000}}]}"#;

fn engine() -> Engine {
    let portfolio = Portfolio::parse("p.json", BOOK).unwrap();
    let market = Market::parse("m.json", MARKET).unwrap();
    let params = Params::parse("r.json", PARAMS).unwrap();
    let mut e = Engine::new(&portfolio, &market, &params, EngineConfig::default()).unwrap();
    e.ensure_settlement_asset().unwrap();
    e
}

fn trade(account: &str, counterparty: &str, size: f64) -> Event {
    serde_json::from_value(serde_json::json!({
        "type": "trade", "account": account, "counterparty": counterparty,
        "instrument": "BTC-PERPETUAL", "size": size, "price": 60000.0,
    }))
    .unwrap()
}

fn deposit(account: &str, amount: f64) -> Event {
    serde_json::from_value(serde_json::json!({
        "type": "deposit", "account": account, "asset": "USDC", "amount": amount,
    }))
    .unwrap()
}

fn price(p: f64) -> Event {
    serde_json::from_value(serde_json::json!({"type": "price", "underlying": "BTC", "price": p}))
        .unwrap()
}

/// A run in which the hints look up names that are missing when the hint is made.
fn events() -> Vec<Event> {
    let mut events = vec![
        trade("a", "ghost", 0.1),      // no such counterparty
        trade("nobody", "b", 0.1),     // no such account
        trade("nobody", "ghost", 1.0), // neither side
        trade("late", "b", 0.1),       // before the deposit that creates it
        deposit("late", 50000.0),
        trade("late", "b", 0.2), // hinted while `late` did not exist yet
        trade("a", "b", 0.2),
        trade("b", "late", 0.1),
        price(59000.0),
        trade("a", "a", 0.1), // both sides the same account
    ];
    // Enough valid trades after them for every hint of the look-ahead window to be used.
    for i in 0..40 {
        let size = if i % 2 == 0 { 0.01 } else { -0.01 };
        events.push(trade(["a", "late"][i % 2], "b", size));
    }
    events
}

fn is_rejected(outputs: &[Output]) -> bool {
    matches!(outputs, [Output::Rejected { .. }])
}

#[test]
fn hints_on_missing_accounts_neither_panic_nor_change_a_result() {
    let events = events();
    let mut one = engine();
    let start = one.sequence();
    let expected: Vec<(u64, String)> = events
        .iter()
        .map(|e| {
            let out = one.apply(e);
            (one.sequence(), serde_json::to_string(&out).unwrap())
        })
        .collect();

    let mut all = engine();
    let mut got = Vec::new();
    all.apply_all(&events, |e, _, out| {
        got.push((e.sequence(), serde_json::to_string(&out).unwrap()))
    });
    assert_eq!(got.len(), events.len(), "every event is handed over once");
    for (i, (g, w)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, w, "event {i}: {:?}", events[i]);
    }
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (start + 1..=start + events.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(all.portfolio(), one.portfolio());
    assert_eq!(
        all.insurance_fund().to_bits(),
        one.insurance_fund().to_bits()
    );

    // The run means what it says: the trades naming a missing account are refused, and the
    // ones after `late` was created went through, so both paths did real work.
    let mut check = engine();
    let outcomes: Vec<bool> = events
        .iter()
        .map(|e| is_rejected(&check.apply(e)))
        .collect();
    assert!(
        outcomes[1] && outcomes[2],
        "a trade of a missing account is refused"
    );
    assert!(
        !outcomes[5] && !outcomes[6],
        "the later trades are accepted"
    );
    let late = check.risk("late").expect("the deposit created `late`");
    assert!(late.initial_margin > 0.0);
}
