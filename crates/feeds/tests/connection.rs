//! Feeds against local venues (WebSocket servers on 127.0.0.1:0 that replay the fixtures and
//! stop with the test): a disconnect is followed by a reconnect, malformed and out-of-order
//! messages are counted and skipped, a silent feed turns stale and is reconnected, and one
//! venue diverging is dropped by the oracle's outlier rule while the index follows the median
//! of the others. Nothing panics; every case shows in the feed's health.

use futures_util::{SinkExt, StreamExt};
use pmargin_engine::oracle::{Oracle, OracleConfig, SourceHealth};
use pmargin_feeds::config::FeedsConfig;
use pmargin_feeds::connection::{self, Received};
use pmargin_feeds::health::Health;
use pmargin_feeds::pipeline::{Pipeline, Post};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const T0: i64 = 1_796_342_400_000;

#[derive(Clone)]
enum Step {
    Send(String),
    /// Close the connection.
    Close,
    /// Stay connected and silent.
    Hold,
}

/// A venue: connection `i` plays `sessions[i]` (a connection past the last plays nothing and
/// holds). Records the first message each connection sent (its subscription).
struct Venue {
    url: String,
    hellos: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Venue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn venue(sessions: Vec<Vec<Step>>) -> Venue {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let seen = hellos.clone();
    let task = tokio::spawn(async move {
        for i in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let steps = sessions.get(i).cloned().unwrap_or_else(|| vec![Step::Hold]);
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                if let Some(Ok(Message::Text(hello))) = ws.next().await {
                    seen.lock().unwrap().push(hello.to_string());
                }
                for step in steps {
                    match step {
                        Step::Send(text) => {
                            if ws.send(Message::text(text)).await.is_err() {
                                return;
                            }
                        }
                        Step::Close => {
                            let _ = ws.close(None).await;
                            return;
                        }
                        Step::Hold => {
                            // Read (and so answer pings) until the client leaves.
                            while let Some(Ok(_)) = ws.next().await {}
                            return;
                        }
                    }
                }
            });
        }
    });
    Venue { url, hellos, task }
}

fn fixture(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn feed(name: &str, venue: &str, url: &str, extra: &str) -> String {
    format!(
        "[[feed]]\nname = \"{name}\"\nvenue = \"{venue}\"\nurl = \"{url}\"\n\
         backoff_min_ms = 20\nbackoff_max_ms = 100\n{extra}\n"
    )
}

const BINANCE_EXTRA: &str = "subscribe = [\"btcusdt@markPrice@1s\"]\nmap = { BTCUSDT = \"BTC\" }";

/// Receives until `n` messages came (or 10 s passed), ingesting them.
async fn ingest(
    rx: &mut mpsc::Receiver<Received>,
    pipeline: &mut Pipeline,
    health: &Health,
    n: usize,
) -> Vec<Post> {
    let mut posts = Vec::new();
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(msg)) => posts.extend(pipeline.ingest(health, &msg)),
            _ => break,
        }
    }
    posts
}

fn start(
    toml: &str,
) -> (
    FeedsConfig,
    Health,
    Vec<tokio::task::JoinHandle<()>>,
    mpsc::Receiver<Received>,
    Pipeline,
) {
    let config = FeedsConfig::parse("feeds.toml", toml).unwrap();
    let health = Health::new(&config);
    let (tasks, rx) = connection::spawn(&config, &health);
    let pipeline = Pipeline::new(&config);
    (config, health, tasks, rx, pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_made_again_and_resubscribes() {
    let msgs = fixture("binance.jsonl");
    let v = venue(vec![
        vec![Step::Send(msgs[1].clone()), Step::Close],
        vec![
            Step::Send(msgs[1].replace(&(T0 + 1000).to_string(), &(T0 + 5000).to_string())),
            Step::Hold,
        ],
    ])
    .await;
    let (_c, health, tasks, mut rx, mut pipeline) =
        start(&feed("binance", "binance", &v.url, BINANCE_EXTRA));
    let posts = ingest(&mut rx, &mut pipeline, &health, 2).await;
    assert_eq!(posts.len(), 2, "{posts:?}");
    let h = &health.feeds[0];
    assert_eq!(h.connects.load(Relaxed), 2);
    assert!(h.disconnects.load(Relaxed) >= 1);
    assert!(h.connected.load(Relaxed));
    let hellos = v.hellos.lock().unwrap().clone();
    assert_eq!(hellos.len(), 2);
    assert!(hellos
        .iter()
        .all(|h| h.contains("SUBSCRIBE") && h.contains("btcusdt@markPrice@1s")));
    tasks.iter().for_each(|t| t.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_out_of_order_messages_are_counted_and_skipped() {
    let m = |ts: i64, px: &str| {
        format!(r#"{{"e":"markPriceUpdate","E":{ts},"s":"BTCUSDT","p":"{px}","i":"{px}"}}"#)
    };
    let v = venue(vec![vec![
        Step::Send(m(T0 + 2000, "91500")),
        Step::Send("{\"e\":\"markPriceUpdate\",".into()),
        Step::Send(m(T0 + 2000, "-1")),
        Step::Send(m(T0 + 1000, "1")),
        Step::Send(m(T0 + 3000, "91600")),
        Step::Hold,
    ]])
    .await;
    let (_c, health, tasks, mut rx, mut pipeline) =
        start(&feed("binance", "binance", &v.url, BINANCE_EXTRA));
    let posts = ingest(&mut rx, &mut pipeline, &health, 5).await;
    let prices: Vec<f64> = posts
        .iter()
        .map(|p| match p {
            Post::Quote { price, .. } => *price,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(prices, vec![91500.0, 91600.0]);
    let h = &health.feeds[0];
    assert_eq!(h.messages.load(Relaxed), 5);
    assert_eq!(h.malformed.load(Relaxed), 2);
    assert_eq!(h.out_of_order.load(Relaxed), 1);
    let metrics = health.prometheus(connection::now_ms());
    assert!(
        metrics.contains("pmargin_feed_malformed_total{feed=\"binance\"} 2"),
        "{metrics}"
    );
    tasks.iter().for_each(|t| t.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_turns_stale_and_is_reconnected() {
    let msgs = fixture("binance.jsonl");
    let v = venue(vec![vec![Step::Send(msgs[1].clone()), Step::Hold]]).await;
    let extra = format!("{BINANCE_EXTRA}\nstale_after_ms = 200\nidle_timeout_ms = 400");
    let (_c, health, tasks, mut rx, mut pipeline) =
        start(&feed("binance", "binance", &v.url, &extra));
    assert_eq!(ingest(&mut rx, &mut pipeline, &health, 1).await.len(), 1);
    let h = health.feeds[0].clone();
    assert!(!h.stale(connection::now_ms()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.stale(connection::now_ms()),
        "no message for 300 ms > stale_after_ms"
    );
    let view = health.to_json(connection::now_ms());
    assert_eq!(view[0]["stale"], true);
    // idle_timeout_ms (400) after the last message, the connection is dropped and made again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.connects.load(Relaxed) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.connects.load(Relaxed) >= 2);
    assert!(h.disconnects.load(Relaxed) >= 1);
    tasks.iter().for_each(|t| t.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_venue_diverging_is_an_outlier_and_the_index_follows_the_others() {
    let deribit = venue(vec![vec![
        Step::Send(fixture("deribit.jsonl")[1].clone()),
        Step::Hold,
    ]])
    .await;
    let binance = venue(vec![vec![
        Step::Send(fixture("binance.jsonl")[1].clone()),
        Step::Hold,
    ]])
    .await;
    // Pyth 10 % above the others (9150612000000 → 10065673200000 at expo −8).
    let pyth_msg = fixture("pyth.jsonl")[1].replace("9150612000000", "10065673200000");
    let pyth = venue(vec![vec![Step::Send(pyth_msg), Step::Hold]]).await;
    let toml = [
        feed("deribit", "deribit", &deribit.url, "subscribe = [\"deribit_price_index.btc_usd\"]\nmap = { btc_usd = \"BTC\" }"),
        feed("binance", "binance", &binance.url, BINANCE_EXTRA),
        feed("pyth", "pyth", &pyth.url, "subscribe = [\"e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43\"]\nmap = { e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43 = \"BTC\" }"),
    ]
    .concat();
    let (_c, health, tasks, mut rx, mut pipeline) = start(&toml);
    let posts = ingest(&mut rx, &mut pipeline, &health, 3).await;
    assert_eq!(posts.len(), 3, "{posts:?}");
    let mut oracle = Oracle::new(OracleConfig::default()).unwrap();
    let mut newest = 0;
    for post in posts {
        let Post::Quote {
            source,
            underlying,
            price,
            confidence,
            ts_ms,
            ..
        } = post
        else {
            panic!()
        };
        if source == "pyth" {
            // The venue's own uncertainty comes along: 4512345678 × 10⁻⁸.
            assert!((confidence.unwrap() - 45.12345678).abs() < 1e-9);
        }
        newest = newest.max(ts_ms);
        oracle
            .submit(pmargin_engine::oracle::Quote {
                source,
                underlying,
                price,
                ts_ms,
                confidence,
                weight: None,
            })
            .unwrap();
    }
    let update = oracle.update("BTC", newest);
    // The median of Deribit's 91502.37 and Binance's 91510.42340909.
    let expected = (91502.37 + 91510.42340909) / 2.0;
    assert!(
        (update.price.unwrap() - expected).abs() < 1e-6,
        "{update:?}"
    );
    let state = oracle.state("BTC").unwrap();
    let status = |s: &str| state.sources.iter().find(|q| q.source == s).unwrap().status;
    assert_eq!(status("pyth"), SourceHealth::Outlier);
    assert_eq!(status("deribit"), SourceHealth::Used);
    assert_eq!(status("binance"), SourceHealth::Used);
    tasks.iter().for_each(|t| t.abort());
}
