//! The engine's typed events and refusals: why an event is refused ([`RejectReason`]) reads as
//! the text the service has always answered with, an account's status travels as a
//! [`Status`] but is written as before, and an `activate_params` event carries a parameter set
//! while reading and writing the JSON the event log holds.

use pmargin_core::{Market, Params, Portfolio, Status};
use pmargin_engine::{Engine, EngineConfig, Event, Output, RejectReason};

const PARAMS: &str = r#"{"version": 1,
  "underlyings": {"BTC": {"price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
                          "standard_im_rate": 0.10, "standard_mm_rate": 0.05}},
  "collateral": {"USDC": {"haircut": 0.0}}}"#;
const MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "USDC": 1},
  "vols": {"BTC": {"default": 0.6}}}"#;
const BOOK: &str = r#"{"accounts": [{"id": "a", "balances": {"USDC": 7000}},
  {"id": "b", "balances": {"USDC": 1000000}}]}"#;

/// `a` holds 7,000 USDC and has bought 1 BTC-PERPETUAL from `b` at the mark, 60,000: its
/// initial margin is the scan's 10% move, 6,000.
fn engine() -> Engine {
    let portfolio = Portfolio::parse("p.json", BOOK).unwrap();
    let market = Market::parse("m.json", MARKET).unwrap();
    let params = Params::parse("r.json", PARAMS).unwrap();
    let mut e = Engine::new(&portfolio, &market, &params, EngineConfig::default()).unwrap();
    e.ensure_settlement_asset().unwrap();
    let out = e.apply(&trade("a", "BTC-PERPETUAL", 1.0, 60_000.0, Some("b")));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Rejected { .. })),
        "{out:?}"
    );
    e
}

fn trade(account: &str, instrument: &str, size: f64, price: f64, cp: Option<&str>) -> Event {
    Event::Trade {
        account: account.into(),
        instrument: instrument.into(),
        size,
        price,
        fee: 0.0,
        counterparty: cp.map(str::to_string),
    }
}

fn money(account: &str, asset: &str, amount: f64, deposit: bool) -> Event {
    let (account, asset) = (account.to_string(), asset.to_string());
    if deposit {
        Event::Deposit {
            account,
            asset,
            amount,
        }
    } else {
        Event::Withdrawal {
            account,
            asset,
            amount,
        }
    }
}

#[test]
fn refusals_read_as_they_always_have_and_carry_a_stable_label() {
    let price = |underlying: &str, price: f64| Event::Price {
        underlying: underlying.into(),
        price,
    };
    let cases: Vec<(Event, &str, &str)> = vec![
        (
            money("a", "USDC", -1.0, true),
            "deposit: amount must be positive and finite, got -1",
            "not_positive",
        ),
        (
            money("a", "USDC", 2e15, true),
            "deposit: amount 2000000000000000 exceeds the largest allowed, 1e15",
            "too_large",
        ),
        (
            money("bad id!", "USDC", 1.0, true),
            "account id `bad id!` must be 1 to 64 characters of A-Z a-z 0-9 _ . : -",
            "invalid_account_id",
        ),
        (
            money("zed", "USDC", 1.0, false),
            "withdrawal: no account `zed`",
            "unknown_account",
        ),
        (
            money("a", "ETH", 1.0, false),
            "withdrawal: account `a` holds no ETH",
            "no_balance",
        ),
        (
            trade("a", "BTC-PERPETUAL", 0.1, 60_000.0, Some("a")),
            "trade: an account cannot trade with itself",
            "self_trade",
        ),
        (
            trade("a", "BTC-PERPETUAL", 0.0, 60_000.0, Some("b")),
            "trade: size must be finite and nonzero, price and fee finite and non-negative",
            "invalid_trade",
        ),
        (
            trade("a", "BTC-PERPETUAL", 2e9, 60_000.0, Some("b")),
            "trade: size 2000000000 exceeds the largest allowed, 1e9",
            "too_large",
        ),
        (
            trade("zed", "BTC-PERPETUAL", 0.1, 60_000.0, Some("b")),
            "trade: no account `zed`",
            "unknown_account",
        ),
        // The band: 10% (the default max_fill_deviation) either side of the mark, 60,000.
        (
            trade("a", "BTC-PERPETUAL", 0.1, 70_000.0, Some("b")),
            "trade: price outside the band: 70000 for BTC-PERPETUAL, whose mark is 60000; a \
             fill may be at most 0.1 (max_fill_deviation of BTC) from it, within [54000, 66000]",
            "price_band",
        ),
        (
            price("ETH", 3000.0),
            "unknown underlying ETH: it has no parameters",
            "unknown_underlying",
        ),
        (
            price("BTC", -5.0),
            "price: BTC price must be positive and finite, got -5",
            "not_positive",
        ),
        (
            Event::Mark {
                instrument: "BTC-27DEC26-70000-C".into(),
                price: 100.0,
            },
            "mark: BTC-27DEC26-70000-C is an option; send its vol instead",
            "mark_of_option",
        ),
        (
            Event::Vol {
                underlying: "BTC".into(),
                vol: 0.5,
                instrument: Some("BTC-PERPETUAL".into()),
            },
            "vol: BTC-PERPETUAL is not an option on BTC",
            "not_an_option",
        ),
        (
            Event::Quote {
                source: "x".into(),
                underlying: "BTC".into(),
                price: 60_000.0,
                ts_ms: 0,
                confidence: None,
                weight: None,
            },
            "quote: the engine has no oracle configured",
            "no_oracle",
        ),
        (
            Event::OracleTick { now_ms: 1 },
            "oracle_tick: the engine has no oracle configured",
            "no_oracle",
        ),
        (
            Event::Settlement {
                instrument: "BTC-PERPETUAL".into(),
                price: 60_000.0,
            },
            "settlement: a perpetual never expires",
            "perpetual_settlement",
        ),
        (
            Event::Settlement {
                instrument: "BTC-27DEC26".into(),
                price: 60_000.0,
            },
            "settlement: no position in BTC-27DEC26",
            "no_position",
        ),
        (
            Event::Settlement {
                instrument: "BTC-27DEC26".into(),
                price: -1.0,
            },
            "settlement: price must be finite and non-negative, got -1",
            "settlement_price",
        ),
        (
            Event::Funding {
                instrument: "BTC-PERPETUAL".into(),
                rate: 2.0,
            },
            "funding: rate must be finite and below 1 in size, got 2",
            "funding_rate",
        ),
        (
            Event::Funding {
                instrument: "BTC-27DEC26".into(),
                rate: 0.01,
            },
            "funding: no position in BTC-27DEC26",
            "no_position",
        ),
    ];
    let mut e = engine();
    let value = e.total_value();
    let accounts = e.portfolio();
    for (event, text, label) in cases {
        let sequence = e.sequence();
        let refusal = e.try_apply(&event).expect_err(text);
        assert_eq!(refusal.reason.to_string(), text);
        assert_eq!(refusal.reason.label(), label, "{text}");
        assert_eq!(
            (refusal.required, refusal.available),
            (None, None),
            "{text}"
        );
        assert_eq!(e.sequence(), sequence, "a refusal does not count: {text}");
        // The untyped path answers with the same text, and counts the event.
        assert_eq!(
            e.apply(&event),
            vec![Output::Rejected {
                reason: text.to_string(),
                required: None,
                available: None
            }]
        );
        assert_eq!(e.sequence(), sequence + 1);
    }
    assert_eq!(e.total_value(), value, "refusals moved value");
    assert_eq!(e.portfolio(), accounts, "refusals changed holdings");
}

#[test]
fn a_margin_refusal_keeps_its_figures() {
    let mut e = engine();
    // A second contract: margin balance 7,000 (fills at the mark move nothing), initial margin
    // 2 x 6,000.
    let refusal = e
        .try_apply(&trade("a", "BTC-PERPETUAL", 1.0, 60_000.0, Some("b")))
        .unwrap_err();
    assert_eq!(
        refusal.reason,
        RejectReason::BelowInitialMargin {
            account: "a".into()
        }
    );
    assert_eq!(refusal.reason.label(), "initial_margin");
    assert_eq!(
        refusal.reason.to_string(),
        "account a would be below initial margin"
    );
    let (required, available) = (refusal.required.unwrap(), refusal.available.unwrap());
    assert!((required - 12_000.0).abs() < 1e-6, "{required}");
    assert!((available - 7_000.0).abs() < 1e-6, "{available}");
    assert_eq!(
        Output::from(refusal),
        Output::Rejected {
            reason: "account a would be below initial margin".into(),
            required: Some(required),
            available: Some(available),
        }
    );
}

#[test]
fn a_status_change_carries_statuses_written_as_before() {
    let mut e = engine();
    // At 58,000: margin balance 7,000 - 2,000 = 5,000, below initial margin (5,800) and above
    // maintenance: restricted.
    let out = e.apply(&Event::Price {
        underlying: "BTC".into(),
        price: 58_000.0,
    });
    let change = out
        .iter()
        .find(|o| matches!(o, Output::MarginChange { .. }))
        .expect("a status change");
    let Output::MarginChange {
        account,
        from,
        to,
        margin_balance,
        ..
    } = change
    else {
        unreachable!()
    };
    assert_eq!(
        (account.as_str(), *from, *to),
        ("a", Status::Healthy, Status::Restricted)
    );
    assert!((margin_balance - 5_000.0).abs() < 1e-6, "{margin_balance}");
    // On the wire, the statuses are their names, as when they were strings.
    let json = serde_json::to_value(change).unwrap();
    assert_eq!(json["from"], "healthy");
    assert_eq!(json["to"], "restricted");
    let back: Output = serde_json::from_value(json).unwrap();
    assert_eq!(&back, change);
    // (And a status still compares with its name.)
    assert!(*to == "restricted" && *from != "restricted");
}

/// A line as the event log holds it today: the event's type, then its parameter set as a JSON
/// value (keys in order, as a JSON value writes them).
const LOGGED_ACTIVATION: &str = r#"{"type":"activate_params","params":{"collateral":{"USDC":{"haircut":0.0}},"underlyings":{"BTC":{"price_scan_range":0.2,"standard_im_rate":0.1,"standard_mm_rate":0.05,"vol_scan_down":0.1,"vol_scan_up":0.1}},"version":2}}"#;

#[test]
fn an_activate_params_line_of_todays_log_replays() {
    let event: Event = serde_json::from_str(LOGGED_ACTIVATION).unwrap();
    let Event::ActivateParams { params } = &event else {
        panic!("{event:?}")
    };
    assert_eq!(params.version, 2);
    assert_eq!(params.underlyings["BTC"].price_scan_range, 0.2);
    let mut e = engine();
    let im = e.risk("b").unwrap().initial_margin;
    assert!((im - 6_000.0).abs() < 1e-6, "{im}");
    let out = e.apply(&event);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Rejected { .. })),
        "{out:?}"
    );
    assert_eq!(e.params().version, 2);
    // `b`, short one contract at 60,000 with 1,000,000 USDC: a 20% scan gives 12,000 of initial
    // margin (from 6,000 at 10%). (`a`, with 7,000, is liquidated under the new set.)
    let im = e.risk("b").unwrap().initial_margin;
    assert!((im - 12_000.0).abs() < 1e-6, "{im}");
}

#[test]
fn an_activate_params_event_is_written_as_the_json_value_it_carried() {
    let params = Params::parse("activate_params", PARAMS).unwrap();
    let event = Event::ActivateParams {
        params: Box::new(params.clone()),
    };
    let line = serde_json::to_string(&event).unwrap();
    // What the event wrote when it carried `serde_json::to_value(&params)`.
    let before = format!(
        r#"{{"type":"activate_params","params":{}}}"#,
        serde_json::to_value(&params).unwrap()
    );
    assert_eq!(line, before);
    let back: Event = serde_json::from_str(&line).unwrap();
    assert_eq!(back, event);
}

#[test]
fn an_activate_params_event_that_breaks_a_rule_is_refused_when_read() {
    let zero = LOGGED_ACTIVATION.replace(r#""version":2"#, r#""version":0"#);
    let err = serde_json::from_str::<Event>(&zero)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("activate_params") && err.contains("version"),
        "{err}"
    );
    let unknown = LOGGED_ACTIVATION.replace(r#""version":2"#, r#""version":2,"colour":1"#);
    let err = serde_json::from_str::<Event>(&unknown)
        .unwrap_err()
        .to_string();
    assert!(err.contains("colour"), "{err}");
}
