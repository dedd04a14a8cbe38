//! `pmargin market from-deribit`, `pmargin record --events` and `pmargin replay --feeds` on
//! the real chains and the feeds crate's fixtures.

use std::path::PathBuf;
use std::process::{Command, Output};

fn pmargin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmargin"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn from_deribit_prints_a_market_the_engine_reads() {
    for chain in [
        "../../data/real/chain_btc_20200514/btc_options_data.csv",
        "../../data/real/chain_btc_20200521/options_data.csv",
    ] {
        let text = stdout(&pmargin(&["market", "from-deribit", chain]));
        let market = pmargin_core::Market::parse("stdout", &text).unwrap();
        assert_eq!(market.future_marks.len(), 7, "{chain}: seven expiries");
        assert!(market.vols["BTC"].points.len() > 100);
    }
    let bad = pmargin(&["market", "from-deribit", "Cargo.toml"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
}

/// A recording of the fixtures' Deribit messages.
fn recording() -> PathBuf {
    let fixtures = format!("{}/../feeds/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let toml = "[[feed]]\nname = \"deribit\"\nvenue = \"deribit\"\nurl = \"ws://127.0.0.1:1\"\n\
                subscribe = [\"deribit_price_index.btc_usd\"]\nsurface = true\nmap = { btc_usd = \"BTC\" }\n\
                [[feed]]\nname = \"binance\"\nvenue = \"binance\"\nurl = \"ws://127.0.0.1:1\"\n\
                subscribe = [\"btcusdt@markPrice@1s\"]\nmap = { BTCUSDT = \"BTC\" }\n";
    let mut lines = vec![pmargin_feeds::record::header(toml)];
    for (feed, file) in [("deribit", "deribit.jsonl"), ("binance", "binance.jsonl")] {
        let text = std::fs::read_to_string(format!("{fixtures}/{file}")).unwrap();
        for (i, msg) in text.lines().enumerate() {
            lines.push(pmargin_feeds::record::line(
                1_796_342_400_000 + i as i64,
                feed,
                msg,
            ));
        }
    }
    let path = std::env::temp_dir().join(format!(
        "pmargin-feeds-recording-{}.jsonl",
        std::process::id()
    ));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_recording_replays_through_the_engine_the_same_way_twice() {
    let rec = recording();
    let rec = rec.to_str().unwrap();
    let events = stdout(&pmargin(&["record", "--feeds", rec, "--events"]));
    // Deribit: 5 data messages (index, option, future, perpetual tickers) and Binance 2.
    assert!(
        events.contains(r#""type":"vol""#)
            && events.contains(r#""instrument":"BTC-25DEC26-90000-C""#),
        "{events}"
    );
    assert!(events.contains(r#""source":"binance""#), "{events}");
    let engine =
        std::env::temp_dir().join(format!("pmargin-feeds-engine-{}.json", std::process::id()));
    std::fs::write(&engine, r#"{"oracle": {"max_age_ms": 10000}}"#).unwrap();
    let args = [
        "replay",
        "--feeds",
        rec,
        "--portfolio",
        "demo/portfolio.json",
        "--market",
        "demo/market.json",
        "--params",
        "demo/params.json",
        "--engine-config",
        engine.to_str().unwrap(),
        "--json",
    ];
    let first = stdout(&pmargin(&args));
    let second = stdout(&pmargin(&args));
    assert!(!first.is_empty());
    assert_eq!(first, second);
    // Every quote, mark and vol was taken (the index moved: margins changed).
    assert!(!first.contains(r#""type":"rejected""#), "{first}");
    assert!(first.contains("margin_change"), "{first}");
    let _ = std::fs::remove_file(rec);
    let _ = std::fs::remove_file(engine);
}
