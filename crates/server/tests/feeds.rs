//! `serve --feeds` end to end (issue 18): Deribit-, Binance-, Pyth- and Uniswap-format venues
//! on 127.0.0.1:0 replay the feeds crate's fixtures; the service builds the BTC index from
//! three venues (their median), takes Deribit's forward and smile point into the market, and
//! shows each feed's health in `/v1/oracle` and `/metrics`.

mod common;

use common::{metric, send, url, ADMIN};
use futures_util::{SinkExt, StreamExt};
use pmargin_feeds::config::FeedsConfig;
use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, ServerConfig};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn fixture(name: &str) -> Vec<String> {
    let path = format!(
        "{}/../feeds/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(str::to_string)
        .collect()
}

/// A venue that sends `messages` to each connection after its subscription, then holds it.
async fn venue(messages: Vec<String>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let messages = messages.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let _ = ws.next().await;
                for m in messages {
                    if ws.send(Message::text(m)).await.is_err() {
                        return;
                    }
                }
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_feeds_builds_the_index_and_the_surface_and_shows_feed_health() {
    let deribit = fixture("deribit.jsonl");
    let (deribit_url, t1) = venue(deribit[..4].to_vec()).await;
    let (binance_url, t2) = venue(fixture("binance.jsonl")[..2].to_vec()).await;
    let (pyth_url, t3) = venue(fixture("pyth.jsonl")).await;
    let (uniswap_url, t4) = venue(fixture("uniswap_v3.jsonl")).await;
    let pyth_id = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43";
    let toml = format!(
        r#"
[[feed]]
name = "deribit"
venue = "deribit"
url = "{deribit_url}"
subscribe = ["deribit_price_index.btc_usd", "ticker.BTC-25DEC26-90000-C.100ms", "ticker.BTC-25DEC26.100ms"]
surface = true
map = {{ btc_usd = "BTC" }}

[[feed]]
name = "binance"
venue = "binance"
url = "{binance_url}"
subscribe = ["btcusdt@markPrice@1s"]
map = {{ BTCUSDT = "BTC" }}

[[feed]]
name = "pyth"
venue = "pyth"
url = "{pyth_url}"
subscribe = ["{pyth_id}"]
map = {{ {pyth_id} = "BTC" }}

[[feed]]
name = "uniswap"
venue = "uniswap_v3"
url = "{uniswap_url}"
pools = [ {{ address = "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640", decimals0 = 6, decimals1 = 18, base = "token1", symbol = "ETH/USDC" }} ]
map = {{ "ETH/USDC" = "ETH" }}
"#
    );
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.feeds = Some(FeedsConfig::parse("feeds.toml", &toml).unwrap());
    let r = start(cfg).await.unwrap();

    // Deribit 91502.37, Binance 91510.42340909, Pyth 91506.12: the median is Pyth's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let index = loop {
        let price = r
            .state
            .engine()
            .oracle()
            .and_then(|o| o.state("BTC"))
            .and_then(|s| (s.sources.len() == 3).then_some(s.price).flatten());
        if let Some(p) = price {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no BTC index from three venues"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!((index - 91506.12).abs() < 1e-6, "{index}");
    // Pyth's conf, 4512345678 x 10^-8, is the only source's band: the market's confidence.
    let confidence = r.state.engine().market().confidence.get("BTC").copied();
    assert!(
        confidence.is_some_and(|c| (c - 45.12345678).abs() < 1e-9),
        "{confidence:?}"
    );
    // The smile point (mark_iv 51.27 %) and the expiry's forward (the future's mark).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (iv, fwd) = {
            let engine = r.state.engine();
            let m = engine.market();
            (
                m.ivs.get("BTC-25DEC26-90000-C").copied(),
                m.future_marks
                    .iter()
                    .find(|((u, d), _)| u == "BTC" && d.to_string() == "2026-12-25")
                    .map(|(_, p)| *p),
            )
        };
        // The engine holds a future's basis to the index: a mark posted before the index
        // moved (91500 at genesis to 91506.12) moves with it, by at most 0.007 %.
        if iv == Some(0.5127) && fwd.is_some_and(|f| (f / 91881.12 - 1.0).abs() < 1e-4) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "surface: iv {iv:?}, forward {fwd:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The pool's price reached the oracle as the uniswap source's ETH quote (slot0, then two
    // swaps: 3049, 3050, 3052).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let eth = r
            .state
            .engine()
            .oracle()
            .and_then(|o| o.state("ETH"))
            .and_then(|s| {
                s.sources
                    .iter()
                    .find(|q| q.source == "uniswap")
                    .map(|q| q.price)
            });
        if eth.is_some_and(|p| (p - 3052.0).abs() < 1e-6) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "uniswap ETH: {eth:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, oracle) = send(
        reqwest::Client::new()
            .get(url(&r, "/v1/oracle"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, 200);
    let feeds = oracle["feeds"].as_array().unwrap();
    assert_eq!(feeds.len(), 4);
    for f in feeds {
        assert_eq!(f["connected"], true, "{f}");
        assert!(f["messages"].as_u64().unwrap() >= 2, "{f}");
        assert_eq!(f["malformed"], 0, "{f}");
        assert_eq!(f["rejected"], 0, "{f}");
        assert!(f["posted"].as_u64().unwrap() >= 1, "{f}");
    }
    assert_eq!(
        metric(&r, "pmargin_feed_connected{feed=\"deribit\"}").await,
        1.0
    );
    // The pool's three prices were each posted, or replaced by a newer one while the engine
    // was busy with the last.
    let uniswap = |what: &str| format!("pmargin_feed_{what}_total{{feed=\"uniswap\"}}");
    assert!(metric(&r, &uniswap("posted")).await + metric(&r, &uniswap("coalesced")).await >= 3.0);
    assert!(metric(&r, "pmargin_feed_max_lag_ms{feed=\"binance\"}").await >= 0.0);
    assert!(metric(&r, "pmargin_feed_lag_p99_ms{feed=\"binance\"}").await >= 0.0);
    for t in [t1, t2, t3, t4] {
        t.abort();
    }
    r.stop().await.unwrap();
}

/// A burst while the engine is busy (its lock held by a reader here, as a long report or a
/// starved CPU would) reaches it as the newest quote, not as a queue of every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_while_the_engine_is_busy_is_coalesced_to_the_newest_quote() {
    const BURST: u64 = 500;
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let binance_url = format!("ws://{}", listener.local_addr().unwrap());
    let venue_go = go.clone();
    let venue = tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let _ = ws.next().await;
        venue_go.notified().await;
        let now = chrono::Utc::now().timestamp_millis();
        for i in 0..BURST {
            let p = 91_000.0 + i as f64;
            let m =
                format!(r#"{{"e":"markPriceUpdate","E":{now},"s":"BTCUSDT","p":"{p}","i":"{p}"}}"#);
            if ws.feed(Message::text(m)).await.is_err() {
                return;
            }
        }
        let _ = ws.flush().await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    let toml = format!(
        "[[feed]]\nname = \"binance\"\nvenue = \"binance\"\nurl = \"{binance_url}\"\n\
         subscribe = [\"btcusdt@markPrice\"]\nmap = {{ BTCUSDT = \"BTC\" }}\n"
    );
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.feeds = Some(FeedsConfig::parse("feeds.toml", &toml).unwrap());
    let r = start(cfg).await.unwrap();
    let health = r.state.feeds.get().unwrap().clone();
    let h = health.feeds[0].clone();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !h.connected.load(std::sync::atomic::Ordering::Relaxed) {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sequence = r.state.engine().sequence();
    // The writer cannot apply anything while a reader holds the engine (here a thread until
    // told to let go).
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held_tx, held) = std::sync::mpsc::channel::<()>();
    let holder = {
        let state = r.state.clone();
        std::thread::spawn(move || {
            let _busy = state.engine();
            let _ = held_tx.send(());
            let _ = released.recv();
        })
    };
    held.recv().unwrap();
    {
        go.notify_one();
        // The first messages taken went to the writer (as their newest quote); every later
        // one waits for them, each replacing the last: at most two posts for the burst.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while load(&h.coalesced) < BURST - 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                health.to_json(0)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(load(&h.posted), 0);
        release.send(()).unwrap();
        holder.join().unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while load(&h.posted) + load(&h.coalesced) + load(&h.rejected) < BURST {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            health.to_json(0)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (posted, coalesced) = (load(&h.posted), load(&h.coalesced));
    assert!(
        posted <= 2 && posted + coalesced == BURST && load(&h.rejected) == 0,
        "{}",
        health.to_json(0)
    );
    assert_eq!(r.state.engine().sequence(), sequence + posted);
    let last = r
        .state
        .engine()
        .oracle()
        .and_then(|o| o.state("BTC"))
        .and_then(|s| {
            s.sources
                .iter()
                .find(|q| q.source == "binance")
                .map(|q| q.price)
        });
    assert_eq!(last, Some(91_000.0 + (BURST - 1) as f64));
    venue.abort();
    r.stop().await.unwrap();
}

/// A venue that sends `make(i, now_ms)` at `per_second` messages a second for `seconds`.
async fn paced_venue(
    per_second: u64,
    seconds: u64,
    make: fn(u64, i64) -> String,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let _ = ws.next().await;
        let start = tokio::time::Instant::now();
        let total = per_second * seconds;
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while sent < total {
            tick.tick().await;
            let due = (start.elapsed().as_micros() as u64 * per_second / 1_000_000).min(total);
            while sent < due {
                let now = chrono::Utc::now().timestamp_millis();
                if ws.feed(Message::text(make(sent, now))).await.is_err() {
                    return;
                }
                sent += 1;
            }
            if ws.flush().await.is_err() {
                return;
            }
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    (url, task)
}

/// A small deterministic walk around 91,500.
fn walk(i: u64) -> f64 {
    91_500.0 + ((i % 200) as f64 - 100.0) * 0.5
}

/// Issue 18's figure: a replay at 1,000 messages a second (two venues at 500 each: Binance
/// mark-price events, one quote each; Deribit option tickers, a quote, a forward and a smile
/// point each) keeps the lag, receipt to durable, under 100 ms. Ten minutes by default
/// (`PMARGIN_REPLAY_SECONDS` shortens it); ignored in the normal run for its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes; run with --ignored"]
async fn replay_at_1000_messages_a_second_keeps_the_lag_under_100_ms() {
    let seconds: u64 = std::env::var("PMARGIN_REPLAY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let (binance_url, t1) = paced_venue(500, seconds, |i, now| {
        let p = walk(i);
        format!(r#"{{"e":"markPriceUpdate","E":{now},"s":"BTCUSDT","p":"{p}","i":"{p}"}}"#)
    })
    .await;
    let (deribit_url, t2) = paced_venue(500, seconds, |i, now| {
        let p = walk(i + 7);
        let iv = 50.0 + (i % 10) as f64 * 0.1;
        format!(
            r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"ticker.BTC-25DEC26-90000-C.100ms","data":{{"timestamp":{now},"instrument_name":"BTC-25DEC26-90000-C","index_price":{p},"underlying_price":{},"mark_iv":{iv}}}}}}}"#,
            p + 380.0
        )
    })
    .await;
    let toml = format!(
        "[[feed]]\nname = \"binance\"\nvenue = \"binance\"\nurl = \"{binance_url}\"\n\
         subscribe = [\"btcusdt@markPrice\"]\nmap = {{ BTCUSDT = \"BTC\" }}\n\
         [[feed]]\nname = \"deribit\"\nvenue = \"deribit\"\nurl = \"{deribit_url}\"\n\
         subscribe = [\"ticker.BTC-25DEC26-90000-C.100ms\"]\nsurface = true\nmap = {{ btc_usd = \"BTC\" }}\n"
    );
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.feeds = Some(FeedsConfig::parse("feeds.toml", &toml).unwrap());
    let r = start(cfg).await.unwrap();
    let health = r.state.feeds.get().unwrap().clone();
    let total = 1000 * seconds;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 60);
    let mut worst_per_minute = Vec::new();
    let mut last_minute = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (messages, max_lag) = health.feeds.iter().fold((0, 0), |(m, l), f| {
            (
                m + f.messages.load(std::sync::atomic::Ordering::Relaxed),
                l.max(f.max_lag_ms.load(std::sync::atomic::Ordering::Relaxed)),
            )
        });
        let minute = messages / 60_000;
        if minute > last_minute {
            worst_per_minute.push(max_lag);
            last_minute = minute;
        }
        let settled = health.feeds.iter().all(|f| {
            f.posted.load(std::sync::atomic::Ordering::Relaxed)
                + f.rejected.load(std::sync::atomic::Ordering::Relaxed)
                > 0
        });
        if messages >= total && settled {
            tokio::time::sleep(Duration::from_millis(500)).await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {messages} of {total} messages"
        );
    }
    let view = health.to_json(chrono::Utc::now().timestamp_millis());
    let max_lag = health
        .feeds
        .iter()
        .map(|f| f.max_lag_ms.load(std::sync::atomic::Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let (p50, p99) = (health.lag_quantile(0.5), health.lag_quantile(0.99));
    println!("replay: {total} messages in {seconds} s; lag p50 {p50:?} ms, p99 {p99:?} ms, max {max_lag} ms; max lag by minute {worst_per_minute:?}; sequence {}; feeds {view}", r.state.engine().sequence());
    for f in view.as_array().unwrap() {
        assert_eq!(f["malformed"], 0, "{f}");
        assert_eq!(f["rejected"], 0, "{f}");
    }
    assert!(max_lag < 100, "max lag {max_lag} ms");
    t1.abort();
    t2.abort();
    r.stop().await.unwrap();
}
