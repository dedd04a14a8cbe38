//! Each adapter on its venue's documented messages (tests/fixtures, written from the venues'
//! public API documentation). Expected values are read off the fixtures by hand: a price in a
//! message, or a closed form (Uniswap's sqrtPriceX96, Pyth's and Chainlink's fixed point).

use pmargin_feeds::chainlink::{Aggregator, ANSWER_UPDATED_TOPIC};
use pmargin_feeds::config::FeedsConfig;
use pmargin_feeds::eth::{self, Message};
use pmargin_feeds::pipeline::{Pipeline, Post};
use pmargin_feeds::uniswap::{self, Base, Pool, Twap, SWAP_TOPIC};
use pmargin_feeds::{binance, chainlink, deribit, okx, pyth, Update};

/// 2026-12-04T00:00:00Z, the fixtures' base time.
const T0: i64 = 1_796_342_400_000;

fn fixture(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(str::to_string)
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

fn quote(u: &Update) -> (&str, f64, Option<f64>, i64) {
    match u {
        Update::Quote {
            symbol,
            price,
            confidence,
            ts_ms,
        } => (symbol, *price, *confidence, *ts_ms),
        other => panic!("not a quote: {other:?}"),
    }
}

#[test]
fn deribit_index_ticker_forward_and_smile() {
    let msgs = fixture("deribit.jsonl");
    assert!(
        deribit::parse(&msgs[0]).unwrap().is_empty(),
        "subscription answer"
    );
    assert_eq!(
        deribit::parse(&msgs[1]).unwrap(),
        vec![Update::Quote {
            symbol: "btc_usd".into(),
            price: 91502.37,
            confidence: None,
            ts_ms: T0 + 100
        }]
    );
    let option = deribit::parse(&msgs[2]).unwrap();
    assert_eq!(option.len(), 3);
    assert_eq!(quote(&option[0]), ("btc_usd", 91502.37, None, T0 + 200));
    assert_eq!(
        option[1],
        Update::Forward {
            currency: "BTC".into(),
            expiry: "25DEC26".into(),
            price: 91880.5,
            ts_ms: T0 + 200
        }
    );
    match &option[2] {
        Update::Vol {
            instrument,
            expiry,
            strike,
            iv,
            ..
        } => {
            assert_eq!(
                (instrument.as_str(), expiry.as_str(), *strike),
                ("BTC-25DEC26-90000-C", "25DEC26", 90000.0)
            );
            // mark_iv 51.27 (percent)
            assert!(close(*iv, 0.5127, 1e-12), "{iv}");
        }
        other => panic!("{other:?}"),
    }
    let future = deribit::parse(&msgs[3]).unwrap();
    assert_eq!(
        future[1],
        Update::Forward {
            currency: "BTC".into(),
            expiry: "25DEC26".into(),
            price: 91881.12,
            ts_ms: T0 + 300
        }
    );
    let perp = deribit::parse(&msgs[4]).unwrap();
    assert_eq!(perp.len(), 1);
    assert_eq!(quote(&perp[0]), ("btc_usd", 91503.11, None, T0 + 400));
    assert!(deribit::parse(&msgs[5]).unwrap().is_empty(), "heartbeat");
}

#[test]
fn binance_mark_price_update_gives_index_and_mark() {
    let msgs = fixture("binance.jsonl");
    assert!(binance::parse(&msgs[0]).unwrap().is_empty());
    let u = binance::parse(&msgs[1]).unwrap();
    assert_eq!(quote(&u[0]), ("BTCUSDT", 91510.42340909, None, T0 + 1000));
    assert_eq!(quote(&u[1]), ("BTCUSDT:mark", 91540.1, None, T0 + 1000));
    let eth = binance::parse(&msgs[2]).unwrap();
    assert_eq!(quote(&eth[0]), ("ETHUSDT", 3050.60227273, None, T0 + 2000));
}

#[test]
fn okx_mark_and_index_channels() {
    let msgs = fixture("okx.jsonl");
    assert!(okx::parse(&msgs[0]).unwrap().is_empty());
    assert_eq!(
        quote(&okx::parse(&msgs[1]).unwrap()[0]),
        ("BTC-USDT-SWAP:mark", 91533.4, None, T0 + 1500)
    );
    assert_eq!(
        quote(&okx::parse(&msgs[2]).unwrap()[0]),
        ("BTC-USDT", 91498.7, None, T0 + 1600)
    );
    assert!(okx::parse(r#"{"event":"error","code":"60012","msg":"Invalid request"}"#).is_err());
}

#[test]
fn pyth_price_and_confidence_scale_by_expo() {
    let msgs = fixture("pyth.jsonl");
    assert!(pyth::parse(&msgs[0]).unwrap().is_empty());
    let u = pyth::parse(&msgs[1]).unwrap();
    let (symbol, price, conf, ts) = quote(&u[0]);
    assert_eq!(
        symbol,
        "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
    );
    // 9150612000000 × 10⁻⁸ and 4512345678 × 10⁻⁸; publish_time is in seconds.
    assert!(close(price, 91506.12, 1e-12));
    assert!(close(conf.unwrap(), 45.12345678, 1e-12));
    assert_eq!(ts, T0 + 3000);
}

fn usdc_weth() -> Pool {
    Pool {
        address: "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640"
            .parse()
            .unwrap(),
        decimals0: 6,
        decimals1: 18,
        base: Base::Token1,
        symbol: "ETH/USDC".into(),
        twap_s: 0,
    }
}

#[test]
fn uniswap_swap_logs_and_slot0_give_the_pool_price() {
    let msgs = fixture("uniswap_v3.jsonl");
    let pool = usdc_weth();
    // The fixture's sqrtPriceX96 were made as sqrt(10¹² / P) × 2⁹⁶ for ETH at P USDC.
    match eth::parse("test", &msgs[1]).unwrap() {
        Message::Answer { id: 100, result } => {
            let bytes: alloy_primitives::Bytes = result.as_str().unwrap().parse().unwrap();
            assert!(close(
                uniswap::slot0_price(&bytes, &pool).unwrap(),
                3049.0,
                1e-9
            ));
        }
        other => panic!("{other:?}"),
    }
    for (i, expected) in [(2, 3050.0), (3, 3052.0)] {
        let Message::Logs(logs) = eth::parse("test", &msgs[i]).unwrap() else {
            panic!()
        };
        assert_eq!(logs[0].topics[0], SWAP_TOPIC);
        assert!(close(
            uniswap::swap_price(&logs[0], &pool).unwrap(),
            expected,
            1e-9
        ));
    }
    // Token0 as the base: USDC priced in WETH is the inverse.
    let usdc = Pool {
        base: Base::Token0,
        ..pool.clone()
    };
    let Message::Logs(logs) = eth::parse("test", &msgs[2]).unwrap() else {
        panic!()
    };
    assert!(close(
        uniswap::swap_price(&logs[0], &usdc).unwrap(),
        1.0 / 3050.0,
        1e-9
    ));
    // sqrtPriceX96 = 2⁹⁶ is a price of 1 in raw units: 10^(6-18) for token0 in token1.
    let one = alloy_primitives::aliases::U160::from(1u64) << 96;
    assert!(close(uniswap::price(one, &usdc).unwrap(), 1e-12, 1e-9));
}

#[test]
fn uniswap_twap_is_the_time_weighted_geometric_mean() {
    let mut twap = Twap::new(10);
    twap.push(0, 3000.0);
    twap.push(6_000, 3100.0);
    // Over [0, 10 s]: 3000 for 6 s, 3100 for 4 s.
    let expected = ((6.0 * 3000f64.ln() + 4.0 * 3100f64.ln()) / 10.0).exp();
    assert!(close(twap.value(10_000).unwrap(), expected, 1e-12));
    // Over [5 s, 15 s]: 3000 for 1 s, 3100 for 9 s.
    let later = ((3000f64.ln() + 9.0 * 3100f64.ln()) / 10.0).exp();
    assert!(close(twap.value(15_000).unwrap(), later, 1e-12));
    twap.push(5_000, 1.0); // out of order: ignored
    assert!(close(twap.value(15_000).unwrap(), later, 1e-12));
}

#[test]
fn chainlink_answer_updated() {
    let msgs = fixture("chainlink.jsonl");
    let agg = Aggregator {
        address: "0xe62bcfaf7c7a0ac16f1b6d2ad4e1ea64e4dd8db9"
            .parse()
            .unwrap(),
        decimals: 8,
        symbol: "ETH/USD".into(),
    };
    let Message::Logs(logs) = eth::parse("test", &msgs[1]).unwrap() else {
        panic!()
    };
    assert_eq!(logs[0].topics[0], ANSWER_UPDATED_TOPIC);
    let (price, ts) = chainlink::answer(&logs[0], &agg).unwrap();
    assert!(close(price, 3050.12345678, 1e-12), "{price}");
    assert_eq!(ts, T0 + 4000);
}

#[test]
fn event_signatures_are_the_published_topics() {
    // keccak256("Swap(address,address,int256,int256,uint160,uint128,int24)") and
    // keccak256("AnswerUpdated(int256,uint256,uint256)"), as Etherscan shows them.
    assert_eq!(
        SWAP_TOPIC.to_string(),
        "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
    );
    assert_eq!(
        ANSWER_UPDATED_TOPIC.to_string(),
        "0x0559884fd3a460db3073b7fc896cc77986f16e378210ded43186175bf646fc5f"
    );
}

type Parser = fn(&str) -> Result<Vec<Update>, pmargin_feeds::ParseError>;

#[test]
fn malformed_messages_are_errors_naming_the_field_never_panics() {
    let cases: [(&str, Parser, &str, &str); 7] = [
        ("deribit", deribit::parse, "not json", "message"),
        (
            "deribit",
            deribit::parse,
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"deribit_price_index.btc_usd","data":{"timestamp":1,"index_name":"btc_usd"}}}"#,
            "price",
        ),
        (
            "deribit",
            deribit::parse,
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.100ms","data":{"timestamp":1,"instrument_name":"BTC-25DEC26-90000-C","index_price":-5}}}"#,
            "index_price",
        ),
        (
            "binance",
            binance::parse,
            r#"{"e":"markPriceUpdate","E":1,"s":"BTCUSDT","p":"abc","i":"1"}"#,
            "p",
        ),
        (
            "okx",
            okx::parse,
            r#"{"arg":{"channel":"mark-price","instId":"X"},"data":[{"instId":"X","markPx":"NaN","ts":"1"}]}"#,
            "markPx",
        ),
        (
            "pyth",
            pyth::parse,
            r#"{"type":"price_update","price_feed":{"id":"ab","price":{"price":"1","conf":"1","expo":-400,"publish_time":1}}}"#,
            "expo",
        ),
        (
            "pyth",
            pyth::parse,
            r#"{"type":"price_update","price_feed":{"id":"ab","price":{"price":"-5","conf":"1","expo":-8,"publish_time":1}}}"#,
            "price",
        ),
    ];
    for (venue, parse, text, field) in cases {
        let err = parse(text).expect_err(text);
        assert_eq!((err.venue, err.field.as_str()), (venue, field), "{err}");
    }
    // A log of another event at a pool's address is an error, not a price.
    let msgs = fixture("chainlink.jsonl");
    let Message::Logs(logs) = eth::parse("test", &msgs[1]).unwrap() else {
        panic!()
    };
    assert!(uniswap::swap_price(&logs[0], &usdc_weth()).is_err());
    assert!(eth::parse(
        "test",
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x"}}"#
    )
    .is_err());
}

const PIPELINE_TOML: &str = r#"
[[feed]]
name = "binance"
venue = "binance"
url = "ws://127.0.0.1:1"
subscribe = ["btcusdt@markPrice@1s", "btcusdc@markPrice@1s"]
weight = 2.5
[feed.map]
BTCUSDT = { underlying = "BTC", weight = 3 }
BTCUSDC = "BTC"

[[feed]]
name = "deribit"
venue = "deribit"
url = "ws://127.0.0.1:1"
subscribe = ["ticker.BTC-25DEC26-90000-C.100ms"]
surface = true
min_interval_ms = 1000
[feed.map]
btc_usd = "BTC"
"#;

fn binance_msg(symbol: &str, ts: i64, index: &str) -> String {
    format!(r#"{{"e":"markPriceUpdate","E":{ts},"s":"{symbol}","p":"1","i":"{index}"}}"#)
}

#[test]
fn pipeline_maps_weighs_drops_out_of_order_and_thins() {
    let config = FeedsConfig::parse("test.toml", PIPELINE_TOML).unwrap();
    let mut p = Pipeline::new(&config);
    let b = p.feed_index("binance").unwrap();
    let post = |p: &mut Pipeline, text: &str| p.on_message(b, 0, text).unwrap();
    let first = post(&mut p, &binance_msg("BTCUSDT", 1000, "100"));
    assert_eq!(
        first.posts,
        vec![Post::Quote {
            source: "binance".into(),
            underlying: "BTC".into(),
            price: 100.0,
            confidence: None,
            weight: Some(2.5),
            ts_ms: 1000
        }]
    );
    // Weighted 3:1 → (3 × 100 + 1 × 104) / 4 = 101.
    let second = post(&mut p, &binance_msg("BTCUSDC", 1100, "104"));
    assert_eq!(
        second.posts,
        vec![Post::Quote {
            source: "binance".into(),
            underlying: "BTC".into(),
            price: 101.0,
            confidence: None,
            weight: Some(2.5),
            ts_ms: 1100
        }]
    );
    // Older than the last BTCUSDT: dropped and counted.
    let late = post(&mut p, &binance_msg("BTCUSDT", 900, "50"));
    assert_eq!((late.posts.len(), late.out_of_order), (0, 1));

    let d = p.feed_index("deribit").unwrap();
    let ticker = |ts: i64, iv: f64| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"ticker.BTC-25DEC26-90000-C.100ms","data":{{"timestamp":{ts},"instrument_name":"BTC-25DEC26-90000-C","index_price":91500,"underlying_price":91880,"mark_iv":{iv}}}}}}}"#
        )
    };
    let out = p.on_message(d, 0, &ticker(10_000, 50.0)).unwrap();
    assert_eq!(out.posts.len(), 3, "{out:?}");
    assert!(out.posts.contains(&Post::Mark {
        instrument: "BTC-25DEC26".into(),
        price: 91880.0,
        ts_ms: 10_000
    }));
    assert!(out.posts.contains(&Post::Vol {
        underlying: "BTC".into(),
        instrument: "BTC-25DEC26-90000-C".into(),
        iv: 0.5,
        ts_ms: 10_000
    }));
    // 500 ms later: within min_interval_ms, nothing is posted.
    assert!(p
        .on_message(d, 0, &ticker(10_500, 51.0))
        .unwrap()
        .posts
        .is_empty());
    assert_eq!(
        p.on_message(d, 0, &ticker(11_000, 52.0))
            .unwrap()
            .posts
            .len(),
        3
    );
}

#[test]
fn feeds_toml_errors_name_the_field() {
    for (text, field) in [
        ("[[feed]]\nname = \"a b\"\nvenue = \"deribit\"\nurl = \"ws://x\"\nsubscribe = [\"x\"]", "name"),
        ("[[feed]]\nname = \"a\"\nvenue = \"deribit\"\nurl = \"http://x\"\nsubscribe = [\"x\"]", "url"),
        ("[[feed]]\nname = \"a\"\nvenue = \"deribit\"\nurl = \"ws://x\"", "subscribe"),
        ("[[feed]]\nname = \"a\"\nvenue = \"deribit\"\nurl = \"ws://x\"\nsubscribe = [\"x\"]\nmap = { x = { underlying = \"BTC\", weight = 0 } }", "map.x"),
        ("[[feed]]\nname = \"a\"\nvenue = \"deribit\"\nurl = \"ws://x\"\nsubscribe = [\"x\"]\nweight = -1", ").weight"),
        ("[[feed]]\nname = \"a\"\nvenue = \"kraken\"\nurl = \"ws://x\"", "venue"),
        ("[[feed]]\nname = \"a\"\nvenue = \"deribit\"\nurl = \"ws://x\"\nsubscribe = [\"x\"]\nsurfce = true", "surfce"),
    ] {
        let err = FeedsConfig::parse("feeds.toml", text).expect_err(text);
        assert!(err.contains("feeds.toml") && err.contains(field), "{field}: {err}");
    }
}
