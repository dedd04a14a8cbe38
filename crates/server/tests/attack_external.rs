//! Attested positions in other protocols (issue 20) by attack: `POST /v1/external` takes an
//! EIP-712 `ExternalPositionAttestation` and its signature. A forged, tampered, replayed,
//! expired or unknown-protocol attestation is refused with a 4xx JSON error naming why, and
//! nothing changes (the engine's sequence, the account, its figures). A valid one changes the
//! margin balance as docs/MODEL.md section 12 says (expected figures by hand below), and when
//! it expires its deposit or liquidity stops counting while a borrow keeps counting.
//!
//! The attester is the first Hardhat/Anvil key (its address 0xf39F...2266 is published with
//! it), registered in the parameters as `external_protocols.<p>.attester`.

mod common;

use common::*;
use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, Running};
use pmargin_settlement::{
    parse_hex, to_hex, to_wad, ExternalKind, ExternalPositionAttestation, Signer, TypedMessage,
};
use serde_json::{json, Value};

const ATTESTER_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ATTESTER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn attester() -> Signer {
    Signer::new(parse_hex::<32>(ATTESTER_KEY).unwrap()).unwrap()
}

/// The demo set with two protocols: Aave (haircut 5 %) and Uniswap v3 (5 %), both attested
/// by the Hardhat key, and a third, `compound`, listed without an attester.
async fn server_with_protocols() -> Running {
    server_in(None).await
}

async fn server_in(dir: Option<std::path::PathBuf>) -> Running {
    let mut genesis = demo_genesis();
    let mut params: Value = serde_json::from_str(&genesis.params).unwrap();
    params["external_protocols"] = json!({
        "aave-v3": { "haircut": 0.05, "attester": ATTESTER },
        "uniswap-v3": { "haircut": 0.05, "attester": ATTESTER.to_lowercase() },
        "compound": { "haircut": 0.05 }
    });
    genesis.params = params.to_string();
    let mut cfg = config(genesis, Default::default());
    cfg.data_dir = dir;
    start(cfg).await.unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn lending(
    account: &str,
    kind: ExternalKind,
    asset: &str,
    amount: f64,
    nonce: u64,
    valid_until: u64,
) -> ExternalPositionAttestation {
    ExternalPositionAttestation {
        account: account.into(),
        protocol: "aave-v3".into(),
        kind,
        token0: String::new(),
        token1: String::new(),
        liquidity: 0,
        price_lower: 0,
        price_upper: 0,
        asset: asset.into(),
        amount: to_wad(amount).unwrap(),
        nonce,
        valid_until,
    }
}

fn lp(account: &str, nonce: u64, valid_until: u64) -> ExternalPositionAttestation {
    ExternalPositionAttestation {
        account: account.into(),
        protocol: "uniswap-v3".into(),
        kind: ExternalKind::UniswapV3Lp,
        token0: "ETH".into(),
        token1: "USDC".into(),
        liquidity: to_wad(10_480.0).unwrap(),
        price_lower: to_wad(2_500.0).unwrap(),
        price_upper: to_wad(3_600.0).unwrap(),
        asset: String::new(),
        amount: 0,
        nonce,
        valid_until,
    }
}

/// The request body, signed by `signer` under the server's domain.
fn signed(r: &Running, att: &ExternalPositionAttestation, signer: &Signer) -> Value {
    let domain = &r.state.settlement.get().unwrap().domain;
    let signature = signer.sign_digest(&att.digest(domain)).unwrap();
    json!({ "attestation": att, "signature": to_hex(&signature) })
}

/// Posts `att` signed by the attester through the admin key; it must be accepted.
async fn accept(r: &Running, att: &ExternalPositionAttestation) -> Value {
    let (s, b) = post(r, ADMIN, &signed(r, att, &attester())).await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn post(r: &Running, key: &str, body: &Value) -> (u16, Value) {
    send(
        reqwest::Client::new()
            .post(url(r, "/v1/external"))
            .bearer_auth(key)
            .json(body),
    )
    .await
}

/// Everything a refused attestation must leave as it was.
fn state_of(r: &Running, account: &str) -> String {
    let engine = r.state.engine();
    format!(
        "{} {:?} {:?} {:?}",
        engine.sequence(),
        engine.account(account),
        engine.risk(account),
        engine.attested()
    )
}

fn margin_balance(r: &Running, account: &str) -> f64 {
    r.state.engine().risk(account).unwrap().margin_balance
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

async fn deposit_usdc(r: &Running, account: &str, amount: f64) {
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type":"deposit","account":account,"asset":"USDC","amount":amount})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// Section 12 by hand: 300,000 USDC at haircut 0.0299 count 291,030; 100 ETH deposited at
/// Aave at 3,050 count 305,000 x 0.95 x 0.92 = 266,570; a 210,000 USDC borrow counts in full.
#[tokio::test]
async fn valid_attestations_change_the_margin_balance_as_section_12_says() {
    let r = server_with_protocols().await;
    let until = now_s() + 3600;
    deposit_usdc(&r, "loop-bob", 300_000.0).await;
    assert!(close(margin_balance(&r, "loop-bob"), 291_030.0));

    let dep = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "ETH",
        100.0,
        1,
        until,
    );
    let b = accept(&r, &dep).await;
    assert!(close(margin_balance(&r, "loop-bob"), 291_030.0 + 266_570.0));
    assert!(
        close(b["figures"]["margin_balance"].as_f64().unwrap(), 557_600.0),
        "{b}"
    );
    assert_eq!(
        b["position_id"],
        to_hex(&pmargin_settlement::lending_position_id(
            ExternalKind::LendingDeposit,
            "ETH"
        ))
    );

    let borrow = lending(
        "loop-bob",
        ExternalKind::LendingBorrow,
        "USDC",
        210_000.0,
        2,
        until,
    );
    accept(&r, &borrow).await;
    assert!(close(margin_balance(&r, "loop-bob"), 347_600.0));
    let equity = r.state.engine().risk("loop-bob").unwrap().equity;
    assert!(close(equity, 300_000.0 + 305_000.0 - 210_000.0), "{equity}");

    // A newer attestation of the same deposit replaces it (50 ETH: 133,285).
    let half = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "ETH",
        50.0,
        3,
        until,
    );
    accept(&r, &half).await;
    assert!(close(
        margin_balance(&r, "loop-bob"),
        291_030.0 + 133_285.0 - 210_000.0
    ));
    // An older one (a lower nonce) no longer replaces it.
    let old = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "ETH",
        500.0,
        2,
        until,
    );
    let before = state_of(&r, "loop-bob");
    // (Nonce 2 is used already: the replay check refuses it first.)
    let (s, b) = post(&r, ADMIN, &signed(&r, &old, &attester())).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(state_of(&r, "loop-bob"), before);

    // A Uniswap v3 position, L = 10,480 on [2,500, 3,600] at 3,050: x = 15.096257 ETH,
    // y = 54,776.917 USDC, V = 100,820.501268, counted at 95 %: 95,779.476204.
    let (s, b) = post(
        &r,
        ADMIN,
        &signed(&r, &lp("lp-alice", 4, until), &attester()),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(close(margin_balance(&r, "lp-alice"), 95_779.476_204_497_06));
    r.stop().await.unwrap();
}

#[tokio::test]
async fn a_forged_or_tampered_attestation_is_forbidden_and_changes_nothing() {
    let r = server_with_protocols().await;
    let until = now_s() + 3600;
    deposit_usdc(&r, "loop-bob", 1_000.0).await;
    let dep = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "ETH",
        100.0,
        1,
        until,
    );
    let before = state_of(&r, "loop-bob");

    // Signed by a key that is not the registered attester.
    let mallory = Signer::new([0x4d; 32]).unwrap();
    let (s, b) = post(&r, ADMIN, &signed(&r, &dep, &mallory)).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "forged_attestation", "{b}");

    // Signed by the attester, then the amount raised.
    let mut body = signed(&r, &dep, &attester());
    body["attestation"]["amount"] = json!(to_wad(1_000.0).unwrap().to_string());
    let (s, b) = post(&r, ADMIN, &body).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "forged_attestation");

    // Signed by the attester for another deployment (another chain id).
    let mut other = r.state.settlement.get().unwrap().domain.clone();
    other.chain_id += 1;
    let sig = attester().sign_digest(&dep.digest(&other)).unwrap();
    let (s, b) = post(
        &r,
        ADMIN,
        &json!({"attestation": dep, "signature": to_hex(&sig)}),
    )
    .await;
    assert_eq!(s, 403, "{b}");

    // Not a signature at all; a member of another kind set.
    let (s, b) = post(
        &r,
        ADMIN,
        &json!({"attestation": dep, "signature": "0x1234"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["field"], "signature");
    let mut mixed = dep.clone();
    mixed.token0 = "ETH".into();
    let (s, b) = post(&r, ADMIN, &signed(&r, &mixed, &attester())).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["field"], "attestation.token0");

    assert_eq!(state_of(&r, "loop-bob"), before);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn replayed_expired_and_unknown_protocol_attestations_are_refused_naming_why() {
    let r = server_with_protocols().await;
    let until = now_s() + 3600;
    let dep = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "ETH",
        10.0,
        7,
        until,
    );
    accept(&r, &dep).await;
    let before = state_of(&r, "loop-bob");

    // The same body again, and another position under the same nonce.
    let (s, b) = post(&r, ADMIN, &signed(&r, &dep, &attester())).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "replayed_attestation", "{b}");
    let other = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "BTC",
        10.0,
        7,
        until,
    );
    let (s, b) = post(&r, ADMIN, &signed(&r, &other, &attester())).await;
    assert_eq!(s, 409, "{b}");

    // Expired ten seconds ago.
    let expired = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "ETH",
        99.0,
        8,
        now_s() - 10,
    );
    let (s, b) = post(&r, ADMIN, &signed(&r, &expired, &attester())).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["code"], "expired_attestation", "{b}");

    // A protocol the parameters do not list, and one listed without an attester.
    for protocol in ["euler-v2", "compound"] {
        let mut unknown = lending(
            "loop-bob",
            ExternalKind::LendingDeposit,
            "ETH",
            1.0,
            9,
            until,
        );
        unknown.protocol = protocol.into();
        let (s, b) = post(&r, ADMIN, &signed(&r, &unknown, &attester())).await;
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["error"]["code"], "unknown_protocol", "{b}");
        assert_eq!(b["error"]["field"], "attestation.protocol");
    }
    // A token that is not collateral.
    let odd = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "DOGE",
        1.0,
        10,
        until,
    );
    let (s, b) = post(&r, ADMIN, &signed(&r, &odd, &attester())).await;
    assert!((400..500).contains(&s), "{s} {b}");

    assert_eq!(state_of(&r, "loop-bob"), before);
    r.stop().await.unwrap();
}

/// Expiry is conservative: the deposit and the liquidity position stop counting, the borrow
/// keeps counting. 300,000 USDC count 291,030; less the 210,000 borrow: 81,030.
#[tokio::test]
async fn on_expiry_deposits_and_liquidity_stop_counting_and_borrows_keep_counting() {
    let r = server_with_protocols().await;
    deposit_usdc(&r, "loop-bob", 300_000.0).await;
    let soon = now_s() + 2;
    for att in [
        lending(
            "loop-bob",
            ExternalKind::LendingDeposit,
            "ETH",
            100.0,
            1,
            soon,
        ),
        lending(
            "loop-bob",
            ExternalKind::LendingBorrow,
            "USDC",
            210_000.0,
            2,
            soon,
        ),
        lp("loop-bob", 3, soon),
    ] {
        accept(&r, &att).await;
    }
    let live = 291_030.0 + 266_570.0 - 210_000.0 + 95_779.476_204_497_06;
    assert!(close(margin_balance(&r, "loop-bob"), live));
    // The clock looks every second; the attestations lapse after `soon`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while r.state.engine().account("loop-bob").unwrap().external.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "attestations did not expire"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let account = r.state.engine().account("loop-bob").unwrap();
    assert_eq!(account.external.len(), 1);
    assert_eq!(account.external[0].kind(), "lending_borrow");
    assert!(close(margin_balance(&r, "loop-bob"), 81_030.0));
    r.stop().await.unwrap();
}

#[tokio::test]
async fn who_may_relay_an_attestation() {
    let r = server_with_protocols().await;
    let until = now_s() + 3600;
    let mine = key(&r, "trader", &["loop-bob"]).await;
    let body = signed(
        &r,
        &lending(
            "mallory-target",
            ExternalKind::LendingBorrow,
            "USDC",
            1e6,
            1,
            until,
        ),
        &attester(),
    );
    let before = state_of(&r, "mallory-target");
    // A trader only for its own accounts; feeders, the committee and read-only keys never.
    let (s, b) = post(&r, &mine, &body).await;
    assert_eq!(s, 403, "{b}");
    for role in ["oracle_feeder", "read_only", "risk_committee"] {
        let k = key(&r, role, &[]).await;
        let (s, b) = post(&r, &k, &body).await;
        assert_eq!(s, 403, "{role}: {b}");
    }
    let (s, _) = post(&r, "not-a-key", &body).await;
    assert_eq!(s, 401);
    // An attestation event sent straight to the event log, signature-free: refused even for
    // the admin.
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type":"attestation","account":"mallory-target",
                "position":{"kind":"lending_deposit","protocol":"aave-v3","asset":"ETH","amount":1e6},
                "attester":ATTESTER.to_lowercase(),"nonce":99,"valid_until":until,"now_s":now_s()})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(state_of(&r, "mallory-target"), before);

    // The trader for its own account, and a venue for any.
    let own = signed(
        &r,
        &lending(
            "loop-bob",
            ExternalKind::LendingDeposit,
            "ETH",
            1.0,
            2,
            until,
        ),
        &attester(),
    );
    let (s, b) = post(&r, &mine, &own).await;
    assert_eq!(s, 200, "{b}");
    let venue = key(&r, "venue", &[]).await;
    let (s, b) = post(&r, &venue, &body).await;
    assert_eq!(s, 200, "{b}");
    r.stop().await.unwrap();
}

/// An accepted attestation is an event of the log: a restart (snapshot and replay) holds the
/// position with the same figures, and still refuses the attestation as a replay.
#[tokio::test]
async fn a_restart_keeps_attested_positions_and_their_nonces() {
    let dir = std::env::temp_dir().join(format!("pmargin-attested-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = server_in(Some(dir.clone())).await;
    let dep = lending(
        "loop-bob",
        ExternalKind::LendingDeposit,
        "ETH",
        100.0,
        1,
        now_s() + 3600,
    );
    accept(&r, &dep).await;
    let body = signed(&r, &dep, &attester());
    let before = state_of(&r, "loop-bob");
    assert!(close(margin_balance(&r, "loop-bob"), 266_570.0));
    r.stop().await.unwrap();

    let r = server_in(Some(dir.clone())).await;
    assert_eq!(state_of(&r, "loop-bob"), before);
    let (s, b) = post(&r, ADMIN, &body).await;
    assert_eq!(s, 409, "{b}");
    r.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
