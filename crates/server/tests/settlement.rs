//! Signed margin updates: verified with pmargin_settlement::verify, the configured signer is
//! recovered, nonces strictly increase, and access is enforced.

mod common;

use common::*;
use pmargin_server::demo::demo_genesis;
use pmargin_server::settlement::SettlementConfig;
use pmargin_server::{start, ServerConfig};
use pmargin_settlement::{verify, Eip712Domain, SettlementMessage, SignedMessage, Signer};

#[tokio::test]
async fn margin_update_verifies_and_recovers_the_configured_signer() {
    let secret = [7u8; 32];
    let contract = [0x42u8; 20];
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.settlement = SettlementConfig {
        chain_id: 8453,
        verifying_contract: contract,
        signing_key: Some(secret),
    };
    let r = start(cfg).await.unwrap();
    let expected = Signer::new(secret).unwrap().address();
    let domain = Eip712Domain::pmargin(8453, contract);
    let c = reqwest::Client::new();
    let mut last_nonce = 0u64;
    for _ in 0..3 {
        let (status, body) = send(
            c.get(url(&r, "/v1/accounts/vol-desk/settlement"))
                .bearer_auth(ADMIN),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let signed: SignedMessage = serde_json::from_value(body["signed"].clone()).unwrap();
        assert_eq!(verify(&signed, &domain).unwrap(), expected);
        // Another domain does not verify.
        assert!(verify(&signed, &Eip712Domain::pmargin(1, contract)).is_err());
        let SettlementMessage::MarginUpdate(m) = &signed.payload else {
            panic!("not a margin update: {body}");
        };
        assert_eq!(m.account, pmargin_settlement::account_id("vol-desk"));
        assert!(m.nonce > last_nonce, "nonce {} after {last_nonce}", m.nonce);
        last_nonce = m.nonce;
    }
    // Access: a trader reads only its own account.
    let trader = key(&r, "trader", &["vol-desk"]).await;
    let (status, body) = send(
        c.get(url(&r, "/v1/accounts/basis-fund/settlement"))
            .bearer_auth(&trader),
    )
    .await;
    assert_eq!((status, body["error"]["status"].as_u64()), (403, Some(403)));
    let (status, _) = send(c.get(url(&r, "/v1/accounts/vol-desk/settlement"))).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        c.get(url(&r, "/v1/accounts/nobody/settlement"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, 404);
    r.stop().await.unwrap();
}

// a: long 1 BTC at 60,000 with 7,000 USDC (liquidated below ~57,300); b: the short side.
use pmargin_core::testkit::{
    ONE_BTC_BOOK as LIQ_BOOK, ONE_BTC_MARKET as LIQ_MARKET, ONE_BTC_PARAMS as LIQ_PARAMS,
};

async fn liq_server(dir: &std::path::Path, secret: [u8; 32]) -> pmargin_server::Running {
    let genesis = pmargin_server::store::Genesis {
        portfolio: LIQ_BOOK.into(),
        market: LIQ_MARKET.into(),
        params: LIQ_PARAMS.into(),
        config: pmargin_engine::EngineConfig {
            insurance_fund: 1000.0,
            ..pmargin_engine::EngineConfig::default()
        },
    };
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.to_path_buf()), genesis);
    cfg.admin_key = Some(ADMIN.into());
    cfg.settlement = SettlementConfig {
        chain_id: 8453,
        verifying_contract: [0x42; 20],
        signing_key: Some(secret),
    };
    start(cfg).await.unwrap()
}

#[tokio::test]
async fn liquidation_fills_become_signed_instructions_recreated_identically_after_restart() {
    use pmargin_settlement::{instrument_id, verify_from, LiquidationInstruction};
    use serde_json::{json, Value};
    let dir = std::env::temp_dir().join(format!("pmargin-liq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let secret = [9u8; 32];
    let expected = Signer::new(secret).unwrap().address();
    let domain = Eip712Domain::pmargin(8453, [0x42; 20]);
    let r = liq_server(&dir, secret).await;
    let c = reqwest::Client::new();
    let (s, b) = send(c.get(url(&r, "/v1/liquidations")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["liquidations"].as_array().unwrap().len(), 0, "{b}");
    // Three price moves: only the second (57,000) takes a below maintenance.
    let mut seqs = Vec::new();
    for (i, price) in [59000.0, 57000.0, 56900.0].into_iter().enumerate() {
        let (s, b) = send(
            c.post(url(&r, "/v1/events"))
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", format!("p{i}"))
                .json(&json!({"type": "price", "underlying": "BTC", "price": price})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        seqs.push(b["sequence"].as_u64().unwrap());
    }
    let (s, first) = send(c.get(url(&r, "/v1/liquidations")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{first}");
    let items = first["liquidations"].as_array().unwrap().clone();
    assert!(!items.is_empty(), "{first}");
    assert_eq!(first["sequence"].as_u64(), Some(seqs[2]));
    let mut last_nonce = 0;
    for item in &items {
        assert_eq!(item["account"], "a", "{item}");
        assert_eq!(item["event_seq"].as_u64(), Some(seqs[1]), "{item}");
        let signed: SignedMessage = serde_json::from_value(item["signed"].clone()).unwrap();
        // What `pmargin verify --signer` checks.
        verify_from(&signed, &domain, &expected).unwrap();
        let SettlementMessage::LiquidationInstruction(m) = &signed.payload else {
            panic!("not a liquidation instruction: {item}");
        };
        let m: &LiquidationInstruction = m;
        assert_eq!(m.account, pmargin_settlement::account_id("a"));
        assert_eq!(m.instrument, instrument_id("BTC-PERPETUAL"));
        assert!(m.size < 0, "a long is sold: {item}");
        assert_eq!(m.price, 57_000_000_000);
        assert_eq!(m.params_version, 1);
        assert!(m.nonce > last_nonce);
        assert_eq!(m.nonce >> 20, seqs[1]);
        last_nonce = m.nonce;
    }
    // Paging: from after the liquidating event, nothing; from it, everything.
    let (_, b) = send(
        c.get(url(&r, &format!("/v1/liquidations?from={}", seqs[1] + 1)))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(b["liquidations"].as_array().unwrap().len(), 0, "{b}");
    assert_eq!(b["next"].as_u64(), Some(seqs[2] + 1));
    let (_, b) = send(
        c.get(url(
            &r,
            &format!("/v1/liquidations?from={}&limit=1", seqs[1]),
        ))
        .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(
        b["liquidations"].as_array().unwrap(),
        &items,
        "whole events per page"
    );
    // Access: staff only.
    let trader = key(&r, "trader", &["a"]).await;
    let (s, _) = send(c.get(url(&r, "/v1/liquidations")).bearer_auth(&trader)).await;
    assert_eq!(s, 403);
    let (s, _) = send(c.get(url(&r, "/v1/liquidations?from=x")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 400);
    r.stop().await.unwrap();

    // After a restart the same messages, byte for byte.
    let r = liq_server(&dir, secret).await;
    let (s, again) = send(c.get(url(&r, "/v1/liquidations")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["liquidations"], Value::Array(items));
    r.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
