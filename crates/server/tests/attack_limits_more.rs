//! Issue 15, the limits left open after the first round, by attack: a client that never
//! finishes its request head (slowloris), streams opened through the dashboard's endpoint to
//! escape the per-key count, a flood of heavy computations beyond the heavy pool's queue, and
//! fills that would grow an underlying's instrument list beyond its cap. Each test performs the
//! attack, shows it refused, and shows that nothing changed.

mod common;

use common::*;
use pmargin_server::demo::demo_genesis;
use pmargin_server::limits::Limits;
use pmargin_server::{start, Running};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn serve(limits: Limits) -> Running {
    start(config(demo_genesis(), limits)).await.unwrap()
}

async fn event(r: &Running, body: Value) -> (u16, Value) {
    send(
        reqwest::Client::new()
            .post(url(r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&body),
    )
    .await
}

// ----- slowloris -----

#[tokio::test]
async fn a_partial_request_head_is_cut_off_within_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let r = serve(limits).await;
    let seq = sequence(&r);
    // Half a request line, then nothing: the client would hold the connection forever.
    let mut slow = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    slow.write_all(b"GET /hea").await.unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let took = sent.elapsed();
    assert!(closed.is_ok(), "the connection is still open after 10 s");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}, the header timeout is 1 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "{answer}");
    // A whole head sent slowly, within the timeout, is served (the timer is on the head, not
    // on each byte) ...
    let mut patient = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    for part in [
        &b"GET /healthz HTTP/1.1\r\n"[..],
        b"Host: 127.0.0.1\r\n",
        b"Connection: close\r\n\r\n",
    ] {
        patient.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut served = String::new();
    patient.read_to_string(&mut served).await.unwrap();
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    // ... and the service was never affected.
    let (s, health) = send(reqwest::Client::new().get(url(&r, "/healthz"))).await;
    assert_eq!(
        (s, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    assert_eq!(sequence(&r), seq);
    r.stop().await.unwrap();
}

// ----- streams -----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A stream on `/v1/stream` (`dashboard`: on `/v1/dashboard/stream`, the key in the
/// subprotocol as a browser sends it), or the refusal's status.
async fn open_stream(r: &Running, key: &str, dashboard: bool) -> Result<Ws, u16> {
    let path = if dashboard {
        "/v1/dashboard/stream"
    } else {
        "/v1/stream"
    };
    let mut req = format!("ws://{}{path}", r.addr)
        .into_client_request()
        .unwrap();
    if dashboard {
        let offered = format!(
            "{}, {}{}",
            pmargin_server::dashboard::WS_PROTOCOL,
            pmargin_server::dashboard::WS_KEY_PREFIX,
            hex::encode(key)
        );
        req.headers_mut()
            .insert("sec-websocket-protocol", offered.parse().unwrap());
    } else {
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect {path}: {e}"),
    }
}

#[tokio::test]
async fn dashboard_streams_count_in_the_per_key_stream_limit() {
    let r = serve(Limits::default()).await;
    assert_eq!(Limits::default().streams_per_key, 8);
    let seq = sequence(&r);
    let mut open = Vec::new();
    // Eight streams of one key, alternating between the two endpoints.
    for i in 0..8 {
        let ws = open_stream(&r, ADMIN, i % 2 == 1).await;
        open.push(ws.unwrap_or_else(|s| panic!("stream {i}: {s}")));
    }
    // The ninth is refused on either endpoint.
    assert_eq!(open_stream(&r, ADMIN, true).await.err(), Some(429));
    assert_eq!(open_stream(&r, ADMIN, false).await.err(), Some(429));
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"too_many_streams\"}").await,
        2.0
    );
    // Another key has its own eight.
    let reader = key(&r, "read_only", &[]).await;
    assert!(open_stream(&r, &reader, true).await.is_ok());
    // Closing a dashboard stream frees its place, for either endpoint.
    let mut last = open.pop().unwrap();
    last.close(None).await.unwrap();
    drop(last);
    let freed = Instant::now();
    loop {
        match open_stream(&r, ADMIN, false).await {
            Ok(ws) => {
                open.push(ws);
                break;
            }
            Err(429) if freed.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => panic!("{s}"),
        }
    }
    assert_eq!(open_stream(&r, ADMIN, true).await.err(), Some(429));
    assert_eq!(sequence(&r), seq);
    drop(open);
    r.stop().await.unwrap();
}

// ----- the heavy pool -----

fn what_if(size: f64) -> Value {
    json!({"account": "basis-fund", "trades": [{"instrument": "BTC-PERPETUAL", "size": size}]})
}

async fn post_what_if(r: &Running, size: f64) -> (u16, Value) {
    send(
        reqwest::Client::new()
            .post(url(r, "/v1/what-if"))
            .bearer_auth(ADMIN)
            .json(&what_if(size)),
    )
    .await
}

#[tokio::test]
async fn heavy_computations_beyond_the_queue_get_503_and_are_counted() {
    let limits = Limits {
        heavy_queue: 1,
        ..Limits::default()
    };
    let r = serve(limits).await;
    let seq = sequence(&r);
    let held_balance = balance(&r, "basis-fund", "USDC");
    // A job that holds the pool's only place until told to finish.
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let state = r.state.clone();
    let holder = tokio::spawn(async move {
        state
            .heavy_job(move || {
                let _ = wait.recv();
                Ok::<(), pmargin_server::error::ServiceError>(())
            })
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.state.heavy.queued() < 1 {
        assert!(Instant::now() < deadline, "the holding job never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Eight different what-ifs at once (no cache, no shared flight) and a scenario table:
    // every one is refused at once, not queued.
    let started = Instant::now();
    let answers = futures_util::future::join_all((1..=8).map(|n| post_what_if(&r, n as f64))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    let (s, b) = send(
        reqwest::Client::new()
            .get(url(&r, "/v1/accounts/basis-fund/scenarios"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(s, 503, "{b}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"heavy_queue_full\"}").await,
        9.0
    );
    assert_eq!(r.state.heavy.queued(), 1, "refusals take no place");
    // Nothing changed.
    assert_eq!(sequence(&r), seq);
    assert_eq!(balance(&r, "basis-fund", "USDC"), held_balance);
    // Once the place is free, a what-if is answered.
    release.send(()).unwrap();
    holder.await.unwrap().expect("the holding job ends");
    assert_eq!(r.state.heavy.queued(), 0);
    let (s, b) = post_what_if(&r, 1.0).await;
    assert_eq!(s, 200, "{b}");
    // Under a concurrent burst each request is answered or refused, and every refusal counted.
    let before = metric(&r, "pmargin_refused_total{reason=\"heavy_queue_full\"}").await;
    let answers =
        futures_util::future::join_all((1..=12).map(|n| post_what_if(&r, 100.0 + n as f64))).await;
    let refused = answers.iter().filter(|(s, _)| *s == 503).count();
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{answers:?}"
    );
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"heavy_queue_full\"}").await - before,
        refused as f64
    );
    assert_eq!(sequence(&r), seq);
    r.stop().await.unwrap();
}

// ----- the instrument cap -----

#[tokio::test]
async fn a_fill_naming_one_instrument_beyond_the_cap_is_refused_and_lists_nothing() {
    let genesis = demo_genesis();
    let engine = pmargin_server::state::genesis_engine(&genesis).unwrap();
    let book = engine.book();
    let btc = book.underlying_index("BTC").unwrap();
    let listed_btc = book
        .instruments
        .iter()
        .filter(|p| p.underlying == btc)
        .count();
    assert!(listed_btc >= 2, "the demo book lists BTC instruments");
    // The cap is what BTC lists already: not one more.
    let limits = Limits {
        instruments_per_underlying: listed_btc,
        ..Limits::default()
    };
    assert_eq!(
        Limits::default().instruments_per_underlying,
        4096,
        "the documented default"
    );
    let r = start(config(genesis, limits)).await.unwrap();
    let (s, b) = event(
        &r,
        json!({"type":"deposit","account":"rich","asset":"USDC","amount":1_000_000}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let seq = sequence(&r);
    let names = |r: &Running| -> Vec<String> {
        let engine = r.state.engine();
        engine
            .book()
            .instruments
            .iter()
            .map(|p| p.instrument.name.clone())
            .collect()
    };
    let before = names(&r);
    let new = "BTC-25JUN27";
    assert!(!before.iter().any(|n| n == new));
    // A fill the account could margin, on a new name: refused before the engine lists it.
    let (s, b) = event(
        &r,
        json!({"type":"trade","account":"rich","instrument":new,"size":1,"price":91_540,"counterparty":"basis-fund"}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("instrument")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the most allowed"),
        "{b}"
    );
    assert_eq!(names(&r), before, "the instrument list is unchanged");
    assert_eq!(sequence(&r), seq);
    assert_eq!(balance(&r, "rich", "USDC"), 1_000_000.0);
    assert!(r.state.engine().risk("rich").is_some());
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"instrument_cap\"}").await,
        1.0
    );
    // Fills on instruments already listed go on.
    let (s, b) = event(
        &r,
        json!({"type":"trade","account":"rich","instrument":"BTC-PERPETUAL","size":1,"price":91_540,"counterparty":"basis-fund"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(names(&r), before);
    r.stop().await.unwrap();
}
