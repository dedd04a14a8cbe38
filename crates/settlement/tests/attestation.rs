//! External position attestations and seize instructions against vectors computed outside this
//! crate: `tests/vectors/external_ethers.js` (ethers 6: `TypedDataEncoder.hash` for the digests,
//! `Wallet.signTypedData` for the RFC 6979 signatures), with the well-known first Hardhat/Anvil
//! key, whose address 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 is published with it.

use pmargin_settlement::*;

const HARDHAT_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const HARDHAT_ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn domain() -> Eip712Domain {
    Eip712Domain::pmargin(
        31337,
        parse_address("0x5FbDB2315678afecb367f032d93F642f64180aa3").unwrap(),
    )
}

fn lp() -> ExternalPositionAttestation {
    serde_json::from_str(
        r#"{"account":"lp-alice","protocol":"uniswap-v3","kind":"uniswap_v3_lp",
            "token0":"ETH","token1":"USDC","liquidity":"10480000000000000000000",
            "priceLower":"2500000000000000000000","priceUpper":"3600000000000000000000",
            "nonce":"7","validUntil":"1798761600"}"#,
    )
    .unwrap()
}

fn deposit() -> ExternalPositionAttestation {
    ExternalPositionAttestation {
        account: "loop-bob".into(),
        protocol: "aave-v3".into(),
        kind: ExternalKind::LendingDeposit,
        token0: String::new(),
        token1: String::new(),
        liquidity: 0,
        price_lower: 0,
        price_upper: 0,
        asset: "ETH".into(),
        amount: to_wad(100.0).unwrap(),
        nonce: 8,
        valid_until: 1_798_761_600,
    }
}

fn sig(s: &str) -> [u8; 65] {
    parse_hex::<65>(s).unwrap()
}

#[test]
fn hardhat_key_has_its_published_address() {
    let signer = Signer::new(parse_hex::<32>(HARDHAT_KEY).unwrap()).unwrap();
    assert_eq!(to_checksum_address(&signer.address()), HARDHAT_ADDRESS);
}

#[test]
fn attestation_hashes_and_signatures_match_ethers() {
    let lp_sig = sig("0xacd84b5b7f6c8b6a10d101887b6ced773c14dadd2f5b4190075be66ec58f84ee08d4e9ce041a7720ccd14b32f342d592ee72635657931168ddea00a9324257dc1c");
    let dep_sig = sig("0xa7ca39e56f7c32787a251a4576e20b4b9e7b6bf6b8fdeef4dad21ce7472b28ac5a854992ac4d54c63f99e6a921fbd2565f673ecb4a6005b42550a83dd868ad301c");
    assert_eq!(
        to_hex(&ExternalPositionAttestation::type_hash()),
        "0x1fd90c9defbdf39cff75a23d87f43c618997d45bacf1c845a0e7423f697f6c2e"
    );
    assert_eq!(
        to_hex(&domain().separator()),
        "0xa01354a3f00bf2f6aab13edfceb692d6a49db877d640133cb987babd4180eca7"
    );
    let cases = [
        (
            lp(),
            "0xefa1723be6a35bde9f7a9511fe09df7e791661bd5acb77a47e746082355a1b0e",
            "0xa47d35dcc85829e7aec532d23e1eea794c73c571de03ef351d513d5fa73d722f",
            lp_sig,
        ),
        (
            deposit(),
            "0xf0864ec7ab34a5ce187de6d455524b224c32b6a8a0491cd22e3950ef46e8a2a8",
            "0x09102155668f6817c04c5945a59fd3c5be245775a4363eccf477a3e6da4e5ee7",
            dep_sig,
        ),
    ];
    let signer = Signer::new(parse_hex::<32>(HARDHAT_KEY).unwrap()).unwrap();
    let attester = parse_address(HARDHAT_ADDRESS).unwrap();
    for (att, struct_hash, digest, signature) in cases {
        assert_eq!(to_hex(&att.struct_hash()), struct_hash);
        // The generic encoder (checked on EIP-712's Mail example) agrees with the hand encoding.
        let generic = ExternalPositionAttestation::eip712_types()
            .hash_struct(
                ExternalPositionAttestation::PRIMARY_TYPE,
                &att.eip712_values(),
            )
            .unwrap();
        assert_eq!(to_hex(&generic), struct_hash);
        assert_eq!(to_hex(&att.digest(&domain())), digest);
        assert_eq!(
            signer.sign_digest(&att.digest(&domain())).unwrap(),
            signature
        );
        assert_eq!(
            recover_attester(&att, &signature, &domain()).unwrap(),
            attester
        );
        assert_eq!(
            verify_attestation(&att, &signature, &domain(), &attester),
            Ok(())
        );
    }
}

#[test]
fn a_changed_member_domain_or_signature_does_not_verify_from_the_attester() {
    let attester = parse_address(HARDHAT_ADDRESS).unwrap();
    let dep_sig = sig("0xa7ca39e56f7c32787a251a4576e20b4b9e7b6bf6b8fdeef4dad21ce7472b28ac5a854992ac4d54c63f99e6a921fbd2565f673ecb4a6005b42550a83dd868ad301c");
    let mut more = deposit();
    more.amount += 1;
    let mut other_account = deposit();
    other_account.account = "mallory".into();
    let mut later = deposit();
    later.valid_until += 1;
    let mut borrow = deposit();
    borrow.kind = ExternalKind::LendingBorrow;
    for tampered in [more, other_account, later, borrow] {
        assert!(matches!(
            verify_attestation(&tampered, &dep_sig, &domain(), &attester),
            Err(Error::UntrustedSigner(_)) | Err(Error::InvalidSignature(_))
        ));
    }
    let mut elsewhere = domain();
    elsewhere.chain_id = 1;
    assert!(verify_attestation(&deposit(), &dep_sig, &elsewhere, &attester).is_err());
    // The same message signed by another key: a valid signature, an untrusted signer.
    let other = Signer::new([9; 32]).unwrap();
    let forged = other.sign_digest(&deposit().digest(&domain())).unwrap();
    assert_eq!(
        verify_attestation(&deposit(), &forged, &domain(), &attester),
        Err(Error::UntrustedSigner(other.address()))
    );
    // The high-s twin of a valid signature is refused (one valid form per signature).
    let mut high_s = dep_sig;
    let n = parse_hex::<32>("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
        .unwrap();
    let s: [u8; 32] = high_s[32..64].try_into().unwrap();
    high_s[32..64].copy_from_slice(&sub_be(&n, &s));
    high_s[64] ^= 27 ^ 28;
    assert!(matches!(
        verify_attestation(&deposit(), &high_s, &domain(), &attester),
        Err(Error::InvalidSignature(_))
    ));
}

/// `a - b` on 256-bit big-endian numbers (`a >= b`).
fn sub_be(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

#[test]
fn members_of_another_kind_and_bad_ranges_are_refused_by_name() {
    let field = |att: ExternalPositionAttestation| match att.validate() {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("expected a refusal naming a field, got {other:?}"),
    };
    let mut a = lp();
    a.asset = "ETH".into();
    assert_eq!(field(a), "asset");
    let mut a = lp();
    a.price_upper = a.price_lower;
    assert_eq!(field(a), "priceUpper");
    let mut a = lp();
    a.price_lower = 0;
    assert_eq!(field(a), "priceLower");
    let mut a = lp();
    a.token1 = "ETH".into();
    assert_eq!(field(a), "token1");
    let mut a = deposit();
    a.liquidity = 1;
    assert_eq!(field(a), "liquidity");
    let mut a = deposit();
    a.token0 = "ETH".into();
    assert_eq!(field(a), "token0");
    let mut a = deposit();
    a.asset.clear();
    assert_eq!(field(a), "asset");
    let mut a = deposit();
    a.account.clear();
    assert_eq!(field(a), "account");
    // A refused attestation is refused before recovery, whoever signed it.
    let mut a = deposit();
    a.price_upper = 5;
    let signer = Signer::new([3; 32]).unwrap();
    let s = signer.sign_digest(&a.digest(&domain())).unwrap();
    assert!(matches!(
        verify_attestation(&a, &s, &domain(), &signer.address()),
        Err(Error::InvalidField {
            field: "priceUpper",
            ..
        })
    ));
}

#[test]
fn attestation_json_reads_what_it_writes_and_refuses_unknown_members() {
    let text = serde_json::to_string(&lp()).unwrap();
    assert!(text.contains(r#""priceLower":"2500000000000000000000""#));
    assert!(text.contains(r#""kind":"uniswap_v3_lp""#));
    assert_eq!(
        serde_json::from_str::<ExternalPositionAttestation>(&text).unwrap(),
        lp()
    );
    assert!(serde_json::from_str::<ExternalPositionAttestation>(
        &text.replace(r#""nonce""#, r#""extra":"1","nonce""#)
    )
    .is_err());
    assert!(serde_json::from_str::<ExternalPositionAttestation>(
        &text.replace("uniswap_v3_lp", "perpetual_swap")
    )
    .is_err());
    // A number that is not a decimal string (a JSON number loses precision beyond 2^53).
    assert!(serde_json::from_str::<ExternalPositionAttestation>(
        &text.replace(r#""nonce":"7""#, r#""nonce":7"#)
    )
    .is_err());
    let doc = lp().typed_data_json(&domain());
    assert_eq!(doc["primaryType"], "ExternalPositionAttestation");
    assert_eq!(
        doc["types"]["ExternalPositionAttestation"][6]["name"],
        "priceLower"
    );
    assert_eq!(doc["message"]["validUntil"], "1798761600");
}

#[test]
fn wad_conversion_is_exact_on_decimals_and_reads_back() {
    assert_eq!(WAD_DECIMALS, 18);
    assert_eq!(to_wad(1.0), Ok(1_000_000_000_000_000_000));
    assert_eq!(to_wad(2500.0), Ok(2_500_000_000_000_000_000_000));
    assert_eq!(to_wad(0.0003), Ok(300_000_000_000_000));
    assert_eq!(to_wad(0.1 + 0.2), Ok(300_000_000_000_000_040));
    assert_eq!(to_wad(5e-19), Ok(1));
    assert_eq!(to_wad(4.9e-19), Ok(0));
    assert!(matches!(to_wad(-1.0), Err(Error::Negative(_))));
    assert!(matches!(to_wad(f64::NAN), Err(Error::NonFinite)));
    assert!(matches!(to_wad(1e21), Err(Error::OutOfRange(_))));
    assert_eq!(
        format_wad(1_500_000_000_000_000_000),
        "1.500000000000000000"
    );
    for x in [
        0.0,
        1.0,
        0.0003,
        2500.25,
        10480.0,
        123_456.789_012_345,
        1e15,
    ] {
        assert_eq!(from_wad(to_wad(x).unwrap()), x, "{x}");
    }
}

#[test]
fn seize_instruction_matches_ethers_and_the_position_ids() {
    assert_eq!(
        to_hex(&SeizeInstruction::type_hash()),
        "0x76fb9c0b6fbd45a05ea3f25779621fc86f63e5434f158c9ab0ac50ec344c3c7d"
    );
    let seize = SeizeInstruction {
        account: account_id("loop-bob"),
        protocol: protocol_id("aave-v3"),
        position: lending_position_id(ExternalKind::LendingDeposit, "ETH"),
        amount: to_wad(25.0).unwrap(),
        receiver: account_id("liquidator"),
        liquidation_id: 42,
        params_version: 3,
        nonce: 44_040_192,
        deadline: 1_718_003_600,
    };
    let mut signer = Signer::new(parse_hex::<32>(HARDHAT_KEY).unwrap()).unwrap();
    let signed = signer.sign_seize(&domain(), &seize).unwrap();
    assert_eq!(
        to_hex(&signed.digest),
        "0x7c1d4d5a7b3d862f00c3f04c502ffa1a8833c78b7c45fe3995d488dcfa52f039"
    );
    assert_eq!(
        to_hex(&signed.signature),
        "0x7b1eef3b7fefe3e1044f1b9e66a56404ee8398d2f545ba992d1e973bcdf6efe661a978f80addb478ea892b3130b5512496c84af667201e32b0a8fbfaf204ac361c"
    );
    assert_eq!(
        verify_from(&signed, &domain(), &parse_address(HARDHAT_ADDRESS).unwrap()),
        Ok(())
    );
    // The JSON of a signed message reads back and names its primary type.
    let json = serde_json::to_value(&signed).unwrap();
    assert_eq!(json["primaryType"], "SeizeInstruction");
    assert_eq!(json["message"]["liquidationId"], "42");
    assert_eq!(
        serde_json::from_value::<SignedMessage>(json).unwrap(),
        signed
    );
    // The LP position id is keccak256 of its key with the range in shortest decimals, and the
    // attestation names the same position.
    assert_eq!(
        to_hex(&lp_position_id("ETH", "USDC", 2500.0, 3600.0)),
        "0x3e0dcb79b83f7f7f1e4f379167a6578379583b0424b41f4a1c89b9babbd1849c"
    );
    assert_eq!(
        lp().position_id(),
        lp_position_id("ETH", "USDC", 2500.0, 3600.0)
    );
    assert_eq!(deposit().position_id(), keccak256("lending_deposit:ETH"));
    // Nothing to seize, or seizing to the account itself, is refused before signing.
    let mut zero = seize.clone();
    zero.amount = 0;
    zero.nonce += 1;
    assert!(signer.sign_seize(&domain(), &zero).is_err());
    let mut to_self = seize;
    to_self.receiver = to_self.account;
    to_self.nonce += 2;
    assert!(signer.sign_seize(&domain(), &to_self).is_err());
}
