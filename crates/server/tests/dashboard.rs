//! The web dashboard: its assets and reads in Rust, then the page itself in headless Chromium
//! (`crates/server/e2e/dashboard.mjs`, driven through playwright-core) against servers on
//! 127.0.0.1: the demo book with a committee and an open proposal, and a book of 10,000
//! accounts for the first-render budget. Without Chromium, node or the e2e package the browser
//! test skips with its reason on stderr, unless `PMARGIN_REQUIRE_BROWSER=1` (as `.ci/run` sets).

mod common;

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::StreamExt;
use pmargin_governance::{approval_message, Committee, CommitteeMember};
use pmargin_server::dashboard::{ASSETS, WS_KEY_PREFIX, WS_PROTOCOL};
use pmargin_server::demo::demo_genesis;
use pmargin_server::store::Genesis;
use pmargin_server::{start, Running, ServerConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The SVG namespace is an identifier, not a fetch; every other absolute URL is refused.
const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// An `onclick=`-style attribute (which the policy would block).
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name > 0 && rest[name..].starts_with('=')
    })
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_offline_with_a_strict_policy() {
    let r = server(1024).await;
    let c = reqwest::Client::new();
    let resp = c.get(url(&r, "/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = resp.text().await.unwrap();
    // Without a key the page opens on the key prompt, and needs no key to load.
    assert!(html.contains(r#"id="login""#) && html.contains(r#"id="key-input""#));
    assert!(html.contains(r#"<script type="module" src="/assets/app.js"></script>"#));

    for asset in ASSETS {
        let resp = c.get(url(&r, asset.path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", asset.path);
        assert_eq!(
            resp.headers()["content-type"],
            asset.content_type,
            "{}",
            asset.path
        );
        let body = resp.text().await.unwrap();
        assert_eq!(body, asset.body, "{}", asset.path);
        let stripped = body.replace(SVG_NS, "");
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(
                !stripped.contains(scheme),
                "{} refers to `{scheme}`: every asset must be served by the binary",
                asset.path
            );
        }
        // Nothing the policy would block: no inline script or style attribute, no eval.
        assert!(!body.contains("style=\""), "{}", asset.path);
        assert!(!body.contains("eval("), "{}", asset.path);
        if asset.path.ends_with(".html") {
            let scripts = body.matches("<script").count();
            let external = body
                .matches("<script type=\"module\" src=\"/assets/")
                .count();
            assert_eq!(scripts, external, "inline script in {}", asset.path);
            assert!(
                !has_inline_handler(&body),
                "inline handler in {}",
                asset.path
            );
        }
    }
    // Every module the page imports is served.
    for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        for line in asset.body.lines().filter(|l| l.starts_with("import ")) {
            let module = line.split('\'').nth(1).unwrap().trim_start_matches("./");
            assert!(
                ASSETS.iter().any(|a| a.path == format!("/assets/{module}")),
                "{} imports {module}, which is not served",
                asset.path
            );
        }
    }
    let (status, body) = send(c.get(url(&r, "/assets/nothing.js"))).await;
    assert_eq!(status, 404, "{body}");
    // The page's reads keep the API's access rules.
    let (status, _) = send(c.get(url(&r, "/v1/dashboard/summary"))).await;
    assert_eq!(status, 401);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn the_page_reads_agree_with_the_api() {
    let r = server(1024).await;
    let c = reqwest::Client::new();
    let reader = key(&r, "read_only", &[]).await;
    let trader = key(&r, "trader", &["vol-desk"]).await;
    let feeder = key(&r, "oracle_feeder", &[]).await;

    let (status, s) = send(c.get(url(&r, "/v1/dashboard/summary")).bearer_auth(&reader)).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["role"], "read_only");
    let (_, list) = send(c.get(url(&r, "/v1/accounts")).bearer_auth(&reader)).await;
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), list["count"].as_u64().unwrap() as usize);
    let underlyings: Vec<&str> = s["underlyings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let mut im = 0.0;
    // The list pages in id order, the summary keeps the book's: match rows by id.
    let listed = list["accounts"].as_array().unwrap();
    for row in rows {
        let a = listed
            .iter()
            .find(|a| a["id"] == row[0])
            .unwrap_or_else(|| panic!("{} is not in the account list", row[0]));
        assert_eq!(row[1], a["status"]);
        assert_eq!(row[3], a["margin_balance"]);
        assert_eq!(row[4], a["initial_margin"]);
        assert_eq!(row[5], a["maintenance_margin"]);
        im += a["initial_margin"].as_f64().unwrap();
    }
    assert!((s["totals"]["initial_margin"].as_f64().unwrap() - im).abs() < 1e-6 * im.max(1.0));
    let counted: u64 = s["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted as usize, rows.len());
    let vol_desk = rows.iter().find(|r| r[0] == "vol-desk").unwrap();
    let names: Vec<&str> = vol_desk[6]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| underlyings[i.as_u64().unwrap() as usize])
        .collect();
    assert_eq!(names, ["BTC", "ETH"]);

    // A trader sees its own accounts only; a feeder reads no accounts.
    let (_, t) = send(c.get(url(&r, "/v1/dashboard/summary")).bearer_auth(&trader)).await;
    assert_eq!(
        (t["role"].as_str(), t["rows"].as_array().unwrap().len()),
        (Some("trader"), 1)
    );
    let (status, _) = send(c.get(url(&r, "/v1/dashboard/summary")).bearer_auth(&feeder)).await;
    assert_eq!(status, 403);
    let (status, _) = send(
        c.get(url(&r, "/v1/dashboard/accounts/basis-fund/positions"))
            .bearer_auth(&trader),
    )
    .await;
    assert_eq!(status, 403);

    // Positions: per-position greeks add up to the report's greeks per underlying.
    let (status, p) = send(
        c.get(url(&r, "/v1/dashboard/accounts/vol-desk/positions"))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    let (_, report) = send(c.get(url(&r, "/v1/accounts/vol-desk")).bearer_auth(&reader)).await;
    let positions = p["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 7);
    for u in ["BTC", "ETH"] {
        for g in ["delta", "gamma", "vega", "theta"] {
            let sum: f64 = positions
                .iter()
                .filter(|x| x["underlying"] == u)
                .map(|x| x["greeks"][g].as_f64().unwrap())
                .sum();
            let want = report["account"]["greeks"][u][g].as_f64().unwrap();
            assert!(
                (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{u} {g}: {sum} vs {want}"
            );
        }
    }
    assert!(p["balances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["asset"] == "USDT"));
    let (status, _) = send(
        c.get(url(&r, "/v1/dashboard/accounts/nobody/positions"))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(status, 404);

    // Without a committee the page is told so; the impact report has nothing to report on.
    let (status, g) = send(
        c.get(url(&r, "/v1/dashboard/proposals"))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!((status, &g["configured"]), (200, &json!(false)), "{g}");
    let (status, _) = send(
        c.get(url(&r, "/v1/dashboard/proposals"))
            .bearer_auth(&trader),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        c.get(url(&r, "/v1/dashboard/proposals/1/impact"))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(status, 409);
    r.stop().await.unwrap();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn browser_ws(r: &Running, protocols: &str) -> Result<(Ws, Option<String>), u16> {
    let mut req = format!("ws://{}/v1/dashboard/stream?from_seq=1", r.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            let p = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string());
            Ok((ws, p))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_browser_reads_the_stream_with_its_key_in_the_subprotocol() {
    let r = server(1024).await;
    let reader = key(&r, "read_only", &[]).await;
    let offered = format!("{WS_PROTOCOL}, {WS_KEY_PREFIX}{}", hex::encode(&reader));
    let (mut ws, chosen) = browser_ws(&r, &offered).await.unwrap();
    // The answer names the plain protocol, never the key.
    assert_eq!(chosen.as_deref(), Some(WS_PROTOCOL));
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(&r, "/v1/quotes"))
            .bearer_auth(ADMIN)
            .json(&json!({"source": "a", "underlying": "BTC", "price": 91500.0, "ts_ms": 1000})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let m = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => break serde_json::from_str::<Value>(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no message: {other:?}"),
        }
    };
    assert_eq!(m["seq"], 1, "{m}");
    let wrong = format!("{WS_PROTOCOL}, {WS_KEY_PREFIX}{}", hex::encode("pmk_wrong"));
    assert_eq!(browser_ws(&r, &wrong).await.err(), Some(401));
    assert_eq!(browser_ws(&r, WS_PROTOCOL).await.err(), Some(401));
    r.stop().await.unwrap();
}

// ----- the browser -----

fn member_key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

/// The demo book with a 2-of-3 committee (one hour timelock).
async fn demo_server() -> Running {
    let members = (1..=3)
        .map(|i| CommitteeMember {
            id: format!("m{i}"),
            public_key: member_key(i).verifying_key().to_bytes(),
        })
        .collect();
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.committee = Some(Committee::new(members, 2, 3_600_000, None).unwrap());
    start(cfg).await.unwrap()
}

/// An open proposal (wider BTC scan range) with one of its two approvals.
async fn open_proposal(r: &Running) {
    let c = reqwest::Client::new();
    let (_, body) = send(c.get(url(r, "/v1/params")).bearer_auth(ADMIN)).await;
    let mut p = body["params"].clone();
    p["version"] = json!(body["version"].as_u64().unwrap() + 1);
    let range = p["underlyings"]["BTC"]["price_scan_range"]
        .as_f64()
        .unwrap();
    p["underlyings"]["BTC"]["price_scan_range"] = json!(range * 1.25);
    let (status, body) = send(c.post(url(r, "/v1/proposals")).bearer_auth(ADMIN).json(
        &json!({ "params": p, "rationale": "Widen the BTC scan range by a quarter ahead of the quarterly expiry" }),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["proposal"]["id"].as_u64().unwrap();
    let hash: [u8; 32] = hex::decode(body["proposal"]["hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    // Approvals name the deployment they are for (the proposal record says which).
    let deployment = body["proposal"]["deployment_id"].as_str().unwrap();
    let sig = member_key(1)
        .sign(&approval_message(deployment, &hash))
        .to_bytes();
    let (status, body) = send(
        c.post(url(r, &format!("/v1/proposals/{id}/approvals")))
            .bearer_auth(ADMIN)
            .json(&json!({ "member": "m1", "signature": hex::encode(sig) })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("e2e-artifacts")
}

/// What the browser test needs, or why it cannot run.
fn browser_missing() -> Option<String> {
    let chromium = std::env::var("PMARGIN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "chromium not found at {chromium}; install it with `sudo apt-get install -y chromium chromium-driver` (or set PMARGIN_CHROMIUM)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some(
            "`node` not found; install it with `sudo apt-get install -y nodejs npm`".into(),
        );
    }
    if !e2e_dir().join("node_modules/playwright-core").exists() {
        return Some(
            "playwright-core is not installed; run `npm ci --prefix crates/server/e2e`".into(),
        );
    }
    None
}

/// Says on the process's stderr why the browser test did not run. Written to the handle, not
/// through `eprintln!`, which the test harness captures and shows only for a failing test: a
/// skip must be seen in a passing run.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: the dashboard's browser test did not run: {why}"
    );
}

/// Whether the browser test runs. A machine with only the Rust toolchain skips it, saying why
/// on stderr, so the README's test command passes there; CI (`.ci/run`) sets
/// `PMARGIN_REQUIRE_BROWSER=1` so that a missing browser fails instead of passing unseen.
fn browser_runs() -> bool {
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let required = flag("PMARGIN_REQUIRE_BROWSER");
    if flag("PMARGIN_SKIP_BROWSER") {
        assert!(
            !required,
            "PMARGIN_SKIP_BROWSER=1 and PMARGIN_REQUIRE_BROWSER=1 contradict each other"
        );
        skipped("PMARGIN_SKIP_BROWSER=1");
        return false;
    }
    match browser_missing() {
        None => true,
        Some(why) if required => {
            panic!("the dashboard's browser test cannot run and PMARGIN_REQUIRE_BROWSER=1: {why}")
        }
        Some(why) => {
            skipped(&format!(
                "{why}; or set PMARGIN_REQUIRE_BROWSER=1 to fail instead of skipping"
            ));
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_headless_browser() {
    if !browser_runs() {
        return;
    }
    let demo = demo_server().await;
    open_proposal(&demo).await;
    let reader = key(&demo, "read_only", &[]).await;
    let t = Instant::now();
    let big = {
        let mut cfg = ServerConfig::new("127.0.0.1:0", None, big_genesis(10_000));
        cfg.admin_key = Some(ADMIN.into());
        start(cfg).await.unwrap()
    };
    let big_reader = key(&big, "read_only", &[]).await;
    let external = {
        let genesis = Genesis {
            portfolio: include_str!("../../cli/demo/portfolio_external.json").into(),
            market: pmargin_server::demo::MARKET.into(),
            params: include_str!("../../cli/demo/params_external.json").into(),
            config: pmargin_server::demo::engine_config(0.0),
        };
        let mut cfg = ServerConfig::new("127.0.0.1:0", None, genesis);
        cfg.admin_key = Some(ADMIN.into());
        start(cfg).await.unwrap()
    };
    let external_reader = key(&external, "read_only", &[]).await;
    eprintln!(
        "10,000-account server started in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();

    let mut cmd = Command::new("node");
    cmd.arg(e2e_dir().join("dashboard.mjs"))
        .env("PMARGIN_URL", format!("http://{}", demo.addr))
        .env("PMARGIN_KEY", &reader)
        .env("PMARGIN_ADMIN_KEY", ADMIN)
        .env("PMARGIN_BIG_URL", format!("http://{}", big.addr))
        .env("PMARGIN_BIG_KEY", &big_reader)
        .env("PMARGIN_EXT_URL", format!("http://{}", external.addr))
        .env("PMARGIN_EXT_KEY", &external_reader)
        .env("PMARGIN_ARTIFACTS", &artifacts);
    let t = Instant::now();
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    eprintln!(
        "browser test took {:.1} s; screenshots in {}",
        t.elapsed().as_secs_f64(),
        artifacts.display()
    );
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all dashboard checks passed"), "{stdout}");
    demo.stop().await.unwrap();
    big.stop().await.unwrap();
    external.stop().await.unwrap();
}
