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
