//! Signing, verification, tampering, nonces and the JSON form of pmargin's messages.

use pmargin_settlement::eip712::{word_int, word_uint};
use pmargin_settlement::*;

fn domain() -> Eip712Domain {
    Eip712Domain::pmargin(
        31337,
        parse_address("0x5FbDB2315678afecb367f032d93F642f64180aa3").unwrap(),
    )
}

fn secret(byte: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[0] = 0x01;
    s[31] = byte;
    s
}

fn update(nonce: u64) -> MarginUpdate {
    MarginUpdate {
        account: account_id("acct-0042"),
        equity: to_fixed(-1_234.567891).unwrap(),
        margin_balance: to_fixed(-5_000.25).unwrap(),
        initial_margin: to_fixed_unsigned(3_765.682109).unwrap(),
        maintenance_margin: to_fixed_unsigned(2_500.0).unwrap(),
        status: AccountStatus::Bankrupt.code(),
        params_version: 7,
        nonce,
        timestamp: 1_718_000_000,
    }
}

fn liquidation(nonce: u64) -> LiquidationInstruction {
    LiquidationInstruction {
        account: account_id("acct-0042"),
        instrument: instrument_id("BTC-PERP"),
        size: to_fixed(-0.125).unwrap(),
        price: to_fixed_unsigned(64_250.5).unwrap(),
        penalty: to_fixed_unsigned(80.3125).unwrap(),
        params_version: 7,
        nonce,
        timestamp: 1_718_000_001,
    }
}

#[test]
fn type_strings_follow_eip712_and_match_the_generic_encoder() {
    assert_eq!(
        MarginUpdate::TYPE_STRING,
        "MarginUpdate(bytes32 account,int256 equity,int256 marginBalance,uint256 initialMargin,\
         uint256 maintenanceMargin,uint8 status,uint64 paramsVersion,uint64 nonce,uint64 timestamp)"
    );
    assert_eq!(
        MarginUpdate::eip712_types()
            .encode_type("MarginUpdate")
            .unwrap(),
        MarginUpdate::TYPE_STRING
    );
    assert_eq!(
        LiquidationInstruction::eip712_types()
            .encode_type("LiquidationInstruction")
            .unwrap(),
        LiquidationInstruction::TYPE_STRING
    );
    let m = update(1);
    assert_eq!(
        MarginUpdate::eip712_types()
            .hash_struct("MarginUpdate", &m.eip712_values())
            .unwrap(),
        m.struct_hash()
    );
    let l = liquidation(1);
    assert_eq!(
        LiquidationInstruction::eip712_types()
            .hash_struct("LiquidationInstruction", &l.eip712_values())
            .unwrap(),
        l.struct_hash()
    );
}

#[test]
fn struct_hash_is_keccak_of_type_hash_and_words() {
    // Independently laid out: typeHash || 9 words, as Solidity's abi.encode would.
    let m = update(3);
    let mut enc = keccak256(MarginUpdate::TYPE_STRING).to_vec();
    enc.extend_from_slice(&keccak256("acct-0042"));
    // -1234.567891 -> -1234567891 as int256: 0xff..ff b66a_f72d (two's complement).
    let mut equity = [0xffu8; 32];
    equity[28..].copy_from_slice(&(-1_234_567_891i32).to_be_bytes());
    enc.extend_from_slice(&equity);
    enc.extend_from_slice(&word_int(-5_000_250_000));
    enc.extend_from_slice(&word_uint(3_765_682_109));
    enc.extend_from_slice(&word_uint(2_500_000_000));
    enc.extend_from_slice(&word_uint(3));
    enc.extend_from_slice(&word_uint(7));
    enc.extend_from_slice(&word_uint(3));
    enc.extend_from_slice(&word_uint(1_718_000_000));
    assert_eq!(enc.len(), 320);
    assert_eq!(m.struct_hash(), keccak256(&enc));
    assert_eq!(
        m.digest(&domain()),
        typed_data_digest(&domain().separator(), &keccak256(&enc))
    );
}

#[test]
fn int256_words_are_twos_complement() {
    assert_eq!(word_int(-1), [0xff; 32]);
    assert_eq!(word_int(0), [0; 32]);
    let mut one = [0u8; 32];
    one[31] = 1;
    assert_eq!(word_int(1), one);
    let mut min = [0xffu8; 32];
    min[16] = 0x80;
    min[17..].fill(0);
    assert_eq!(word_int(i128::MIN), min);
    assert_eq!(word_uint(u128::MAX)[..16], [0; 16]);
}

#[test]
fn margin_update_round_trip_recovers_signer() {
    let mut signer = Signer::new(secret(1)).unwrap();
    let nonce = signer.next_nonce().unwrap();
    assert_eq!(nonce, 1);
    let signed = signer
        .sign_margin_update(&domain(), &update(nonce))
        .unwrap();
    assert!(matches!(signed.signature[64], 27 | 28));
    assert_eq!(verify(&signed, &domain()).unwrap(), signer.address());
    verify_from(&signed, &domain(), &signer.address()).unwrap();
    assert_eq!(
        recover_signer(&signed.digest, &signed.signature).unwrap(),
        signer.address()
    );

    // Through JSON and back.
    let json = serde_json::to_string(&signed).unwrap();
    let back: SignedMessage = serde_json::from_str(&json).unwrap();
    assert_eq!(back, signed);
    assert_eq!(verify(&back, &domain()).unwrap(), signer.address());
}

#[test]
fn liquidation_round_trip_recovers_signer() {
    let mut signer = Signer::new(secret(2)).unwrap();
    let signed = signer.sign_liquidation(&domain(), &liquidation(5)).unwrap();
    assert_eq!(verify(&signed, &domain()).unwrap(), signer.address());
    let back: SignedMessage =
        serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
    assert_eq!(verify(&back, &domain()).unwrap(), signer.address());
}

#[test]
fn json_form_uses_decimal_strings_and_eip712_names() {
    let mut signer = Signer::new(secret(1)).unwrap();
    let signed = signer.sign_margin_update(&domain(), &update(1)).unwrap();
    let v = serde_json::to_value(&signed).unwrap();
    assert_eq!(v["primaryType"], "MarginUpdate");
    let m = &v["message"];
    assert_eq!(m["equity"], "-1234567891");
    assert_eq!(m["marginBalance"], "-5000250000");
    assert_eq!(m["initialMargin"], "3765682109");
    assert_eq!(m["maintenanceMargin"], "2500000000");
    assert_eq!(m["status"], 3);
    assert_eq!(m["paramsVersion"], "7");
    assert_eq!(m["nonce"], "1");
    assert_eq!(m["account"], to_hex(&keccak256("acct-0042")));
    assert_eq!(v["signer"], to_checksum_address(&signer.address()));
    assert_eq!(v["digest"].as_str().unwrap().len(), 66);
    assert_eq!(v["signature"].as_str().unwrap().len(), 2 + 130);

    // A number where a decimal string is required, or an unknown member, is refused.
    let mut bad = v.clone();
    bad["message"]["equity"] = serde_json::json!(-1234567891);
    assert!(serde_json::from_value::<SignedMessage>(bad).is_err());
    let mut bad = v.clone();
    bad["message"]["extra"] = serde_json::json!("1");
    assert!(serde_json::from_value::<SignedMessage>(bad).is_err());
}

#[test]
fn typed_data_document_describes_the_message() {
    let msg = SettlementMessage::from(liquidation(9));
    let doc = msg.typed_data_json(&domain());
    assert_eq!(doc["primaryType"], "LiquidationInstruction");
    assert_eq!(doc["domain"]["name"], "pmargin");
    assert_eq!(doc["domain"]["chainId"], 31337);
    assert_eq!(
        doc["domain"]["verifyingContract"],
        "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    );
    let fields = doc["types"]["LiquidationInstruction"].as_array().unwrap();
    let rebuilt: Vec<String> = fields
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["type"].as_str().unwrap(),
                f["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        format!("LiquidationInstruction({})", rebuilt.join(",")),
        LiquidationInstruction::TYPE_STRING
    );
    assert_eq!(doc["message"]["size"], "-125000");
}

fn signed_update() -> (Signer, SignedMessage) {
    let mut signer = Signer::new(secret(3)).unwrap();
    let signed = signer.sign_margin_update(&domain(), &update(1)).unwrap();
    (signer, signed)
}

#[test]
fn tampered_message_fails_verification() {
    let (_, signed) = signed_update();
    let tamper: [fn(&mut MarginUpdate); 9] = [
        |m| m.account[0] ^= 1,
        |m| m.equity += 1,
        |m| m.margin_balance = -m.margin_balance,
        |m| m.initial_margin -= 1,
        |m| m.maintenance_margin += 1_000_000,
        |m| m.status = 2,
        |m| m.params_version += 1,
        |m| m.nonce += 1,
        |m| m.timestamp -= 1,
    ];
    for (i, f) in tamper.iter().enumerate() {
        let mut bad = signed.clone();
        let SettlementMessage::MarginUpdate(m) = &mut bad.payload else {
            unreachable!()
        };
        f(m);
        // With the stated digest kept, the mismatch is caught.
        assert_eq!(
            verify(&bad, &domain()),
            Err(Error::DigestMismatch),
            "field {i}"
        );
        // With the digest recomputed too, the signature recovers another address.
        bad.digest = bad.payload.digest(&domain());
        assert!(
            matches!(verify(&bad, &domain()), Err(Error::SignerMismatch { .. })),
            "field {i}"
        );
    }
}

#[test]
fn wrong_domain_fails_verification() {
    let (_, signed) = signed_update();
    let mut other = domain();
    other.chain_id = 1;
    assert_eq!(verify(&signed, &other), Err(Error::DigestMismatch));
    let mut other = domain();
    other.verifying_contract[19] ^= 1;
    assert_eq!(verify(&signed, &other), Err(Error::DigestMismatch));
    let mut other = domain();
    other.version = "2".into();
    assert_eq!(verify(&signed, &other), Err(Error::DigestMismatch));
}

#[test]
fn tampered_signature_fails_verification() {
    let (signer, signed) = signed_update();
    // A flipped bit in r or s: another key (or none) recovers.
    for byte in [0usize, 17, 31, 32, 50, 63] {
        let mut bad = signed.clone();
        bad.signature[byte] ^= 0x01;
        match verify(&bad, &domain()) {
            Err(Error::SignerMismatch { recovered, .. }) => assert_ne!(recovered, signer.address()),
            Err(Error::InvalidSignature(_)) => {}
            other => panic!("byte {byte}: {other:?}"),
        }
    }
    // The other parity recovers another key.
    let mut bad = signed.clone();
    bad.signature[64] = if signed.signature[64] == 27 { 28 } else { 27 };
    assert!(matches!(
        verify(&bad, &domain()),
        Err(Error::SignerMismatch { .. })
    ));
    // v outside 27/28.
    for v in [0u8, 1, 29, 37] {
        let mut bad = signed.clone();
        bad.signature[64] = v;
        assert!(
            matches!(verify(&bad, &domain()), Err(Error::InvalidSignature(_))),
            "v = {v}"
        );
    }
    // r = 0 and s = 0.
    let mut bad = signed.clone();
    bad.signature[..32].fill(0);
    assert!(matches!(
        verify(&bad, &domain()),
        Err(Error::InvalidSignature(_))
    ));
    let mut bad = signed.clone();
    bad.signature[32..64].fill(0);
    assert!(matches!(
        verify(&bad, &domain()),
        Err(Error::InvalidSignature(_))
    ));
}

/// The malleable twin (r, n - s, v ^ 1) recovers the same key under raw ecrecover but is
/// refused (EIP-2), so each message has a single valid signature.
#[test]
fn high_s_twin_is_refused() {
    let (_, signed) = signed_update();
    // n, the order of secp256k1.
    let n = parse_hex::<32>("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
        .unwrap();
    let s = &signed.signature[32..64];
    let mut twin_s = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        twin_s[i] = d.rem_euclid(256) as u8;
    }
    let mut twin = signed.clone();
    twin.signature[32..64].copy_from_slice(&twin_s);
    twin.signature[64] = if signed.signature[64] == 27 { 28 } else { 27 };
    assert!(matches!(
        verify(&twin, &domain()),
        Err(Error::InvalidSignature(_))
    ));
}

#[test]
fn untrusted_and_misattributed_signers_are_refused() {
    let (signer, signed) = signed_update();
    let other = Signer::new(secret(4)).unwrap();
    assert_eq!(
        verify_from(&signed, &domain(), &other.address()),
        Err(Error::UntrustedSigner(signer.address()))
    );
    // Claiming another signer does not pass.
    let mut bad = signed.clone();
    bad.signer = other.address();
    assert!(matches!(
        verify(&bad, &domain()),
        Err(Error::SignerMismatch { .. })
    ));
}

#[test]
fn nonces_strictly_increase_per_signer() {
    let mut signer = Signer::new(secret(5)).unwrap();
    signer.sign_margin_update(&domain(), &update(1)).unwrap();
    // Reuse and going back are refused, for either message type (one counter per signer).
    assert_eq!(
        signer.sign_margin_update(&domain(), &update(1)),
        Err(Error::NonceNotIncreasing { last: 1, got: 1 })
    );
    assert_eq!(
        signer.sign_liquidation(&domain(), &liquidation(1)),
        Err(Error::NonceNotIncreasing { last: 1, got: 1 })
    );
    signer
        .sign_liquidation(&domain(), &liquidation(10))
        .unwrap();
    assert!(signer.sign_margin_update(&domain(), &update(9)).is_err());
    assert_eq!(signer.next_nonce().unwrap(), 11);
    // A refused message does not consume a nonce.
    let mut bad = update(11);
    bad.status = 4;
    assert_eq!(
        signer.sign_margin_update(&domain(), &bad),
        Err(Error::InvalidStatus(4))
    );
    assert_eq!(signer.nonces().last(), 10);
    signer.sign_margin_update(&domain(), &update(11)).unwrap();

    // Verifier side: a counter per trusted signer refuses replays.
    let mut seen = NonceCounter::new();
    assert_eq!(
        seen.check(0),
        Err(Error::NonceNotIncreasing { last: 0, got: 0 })
    );
    seen.accept(3).unwrap();
    assert!(seen.accept(3).is_err());
    assert!(seen.accept(2).is_err());
    assert_eq!(seen.take().unwrap(), 4);
    let mut full = NonceCounter::resume_after(u64::MAX);
    assert_eq!(full.take(), Err(Error::NonceExhausted));
}

#[test]
fn invalid_inputs_are_refused() {
    assert_eq!(Signer::new([0; 32]).err(), Some(Error::InvalidKey));
    assert_eq!(Signer::new([0xff; 32]).err(), Some(Error::InvalidKey));
    let mut signer = Signer::new(secret(6)).unwrap();
    let mut zero = liquidation(1);
    zero.size = 0;
    assert!(signer.sign_liquidation(&domain(), &zero).is_err());
    assert_eq!(
        AccountStatus::from_code(2).unwrap(),
        AccountStatus::Liquidatable
    );
    assert_eq!(AccountStatus::from_code(9), Err(Error::InvalidStatus(9)));
    // A signed message whose status is out of range is refused on verification too.
    let signed = signer.sign_margin_update(&domain(), &update(2)).unwrap();
    let mut bad = signed.clone();
    let SettlementMessage::MarginUpdate(m) = &mut bad.payload else {
        unreachable!()
    };
    m.status = 200;
    assert_eq!(verify(&bad, &domain()), Err(Error::InvalidStatus(200)));
}

#[test]
fn signing_is_deterministic_and_debug_hides_the_secret() {
    let mut a = Signer::new(secret(7)).unwrap();
    let mut b = Signer::new(secret(7)).unwrap();
    assert_eq!(
        a.sign_margin_update(&domain(), &update(1)).unwrap(),
        b.sign_margin_update(&domain(), &update(1)).unwrap()
    );
    let shown = format!("{a:?}");
    assert!(shown.contains(&to_checksum_address(&a.address())));
    assert!(
        !shown.to_lowercase().contains("secret") && !shown.contains("SigningKey"),
        "{shown}"
    );
}
