//! Liquidation across protocols through the service (issue 20): a liquidated account's
//! collateral in another protocol is seized once its perpetual is closed, and the seizure is
//! served by `GET /v1/liquidations` as an EIP-712 `SeizeInstruction` signed with the settlement
//! key, whose signature recovers to the engine's settlement address.

mod common;

use common::*;
use pmargin_core::testkit::{SEIZE_ACCOUNT, SEIZE_PARAMS};
use pmargin_server::settlement::{SettlementConfig, SEIZE_DEADLINE_S};
use pmargin_server::start;
use pmargin_settlement::{
    account_id, lending_position_id, protocol_id, verify_from, Eip712Domain, ExternalKind,
    SettlementMessage, SignedMessage, Signer,
};
use serde_json::{json, Value};

/// `testkit::SEIZE_ACCOUNT` under `SEIZE_PARAMS` (BTC and ETH, Aave cutting 5 %): `a`, 1,000
/// USDC, long 1 BTC perpetual from 60,000, 5 ETH deposited on Aave; `b` the short side.
fn genesis() -> pmargin_server::store::Genesis {
    pmargin_server::store::Genesis {
        portfolio: format!(
            r#"{{"accounts": [{SEIZE_ACCOUNT},
              {{"id": "b", "balances": {{"USDC": 100000}},
               "positions": [{{"instrument": "BTC-PERPETUAL", "size": -1, "entry_price": 60000}}]}},
              {{"id": "liquidator", "balances": {{"USDC": 1000000}}}}]}}"#
        ),
        market:
            r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "ETH": 3000, "USDC": 1},
          "vols": {"BTC": {"default": 0.6}, "ETH": {"default": 0.7}}}"#
                .into(),
        params: SEIZE_PARAMS.into(),
        config: pmargin_engine::EngineConfig::default(),
    }
}

const SECRET: [u8; 32] = [0x5e; 32];
const CONTRACT: [u8; 20] = [0x42; 20];

async fn seize_server(dir: &std::path::Path) -> pmargin_server::Running {
    let mut cfg = config(genesis(), Default::default());
    cfg.data_dir = Some(dir.to_path_buf());
    cfg.settlement = SettlementConfig {
        chain_id: 8453,
        verifying_contract: CONTRACT,
        signing_key: Some(SECRET),
    };
    start(cfg).await.unwrap()
}

fn now_s() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap()
}

/// BTC 60,000 -> 46,000: `a`'s margin balance 1,000 - 14,000 + 5 x 3,000 x 0.95 x 0.90 = -175,
/// bankrupt. Its perpetual is closed at 46,000, then 13/33 of the deposit (1.969697 ETH) is
/// seized: -175 + 2,175 f = 0.75 x 0.10 x 15,000 (1 - f) (crates/engine/tests/seize.rs works it
/// out). The instruction recovers to the settlement key's address, names the deposit as an
/// attestation of it would, and is re-created byte for byte after a restart.
#[tokio::test]
async fn a_seizure_is_served_as_a_seize_instruction_signed_by_the_settlement_key() {
    let dir = std::env::temp_dir().join(format!("pmargin-seize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = seize_server(&dir).await;
    let c = reqwest::Client::new();
    let expected = Signer::new(SECRET).unwrap().address();
    let domain = Eip712Domain::pmargin(8453, CONTRACT);

    let (s, b) = send(c.get(url(&r, "/v1/liquidations")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["seizes"], json!([]), "{b}");

    let before = now_s();
    let (s, b) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", "crash")
            .json(&json!({"type": "price", "underlying": "BTC", "price": 46000.0})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let seq = b["sequence"].as_u64().unwrap();
    let kinds: Vec<&str> = b["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["type"].as_str())
        .collect();
    let fill = kinds.iter().position(|k| *k == "liquidation_fill");
    let seize = kinds.iter().position(|k| *k == "liquidation_seize");
    assert!(fill.is_some() && fill < seize, "perpetual first: {kinds:?}");

    let (s, page) = send(c.get(url(&r, "/v1/liquidations")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["liquidations"].as_array().unwrap().len(), 1, "{page}");
    let seizes = page["seizes"].as_array().unwrap().clone();
    assert_eq!(seizes.len(), 1, "{page}");
    let item = &seizes[0];
    assert_eq!(
        (
            &item["account"],
            &item["receiver"],
            item["event_seq"].as_u64()
        ),
        (&json!("a"), &json!("liquidator"), Some(seq)),
        "{item}"
    );
    let signed: SignedMessage = serde_json::from_value(item["signed"].clone()).unwrap();
    // What a controller (and `pmargin verify --signer`) checks: the signature recovers to the
    // engine's settlement address, which the response and the margin updates state too.
    verify_from(&signed, &domain, &expected).unwrap();
    assert_eq!(
        page["signer"],
        json!(pmargin_settlement::to_checksum_address(&expected))
    );
    let (_, update) = send(
        c.get(url(&r, "/v1/accounts/a/settlement"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(update["signer"], page["signer"], "{update}");
    let SettlementMessage::SeizeInstruction(m) = &signed.payload else {
        panic!("not a seize instruction: {item}");
    };
    assert_eq!(m.account, account_id("a"));
    assert_eq!(m.protocol, protocol_id("aave-v3"));
    assert_eq!(
        m.position,
        lending_position_id(ExternalKind::LendingDeposit, "ETH")
    );
    assert_eq!(m.receiver, account_id("liquidator"));
    // 5 x 13/33 ETH = 1.969696969696969697 ETH in wei; the engine's root finder is exact to
    // far below the 1e-6 relative MODEL allows it.
    let hand: u128 = 1_969_696_969_696_969_697;
    assert!(m.amount.abs_diff(hand) < 1_000_000_000, "{}", m.amount);
    assert_eq!(m.liquidation_id, seq);
    assert_eq!(m.params_version, 1);
    assert_eq!(m.nonce >> 20, seq);
    assert!(
        (before + SEIZE_DEADLINE_S..=now_s() + SEIZE_DEADLINE_S).contains(&m.deadline),
        "{}",
        m.deadline
    );
    // A tampered amount no longer verifies.
    let mut tampered = signed.clone();
    if let SettlementMessage::SeizeInstruction(t) = &mut tampered.payload {
        t.amount += 1;
    }
    assert!(verify_from(&tampered, &domain, &expected).is_err());

    // Paging: from after the liquidating event, nothing.
    let (_, b) = send(
        c.get(url(&r, &format!("/v1/liquidations?from={}", seq + 1)))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(b["seizes"], json!([]), "{b}");
    // The liquidator holds the seized ETH on Aave.
    let (_, l) = send(c.get(url(&r, "/v1/accounts/liquidator")).bearer_auth(ADMIN)).await;
    assert!(l.to_string().contains("lending_deposit"), "{l}");
    r.stop().await.unwrap();

    // After a restart (the log replayed) the same instruction, byte for byte.
    let r = seize_server(&dir).await;
    let (s, again) = send(c.get(url(&r, "/v1/liquidations")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["seizes"], Value::Array(seizes));
    r.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
