//! Published test vectors: each value below comes from a specification or a reference
//! implementation, not from this crate.

use pmargin_settlement::eip712::{word_address, DOMAIN_TYPE};
use pmargin_settlement::*;

fn h32(s: &str) -> [u8; 32] {
    parse_hex::<32>(s).unwrap()
}

/// Keccak-256 of the empty string (the constant `KECCAK_EMPTY` of every Ethereum client) and
/// of "abc" (the Keccak team's known answer, as used by go-ethereum's tests); not SHA3-256,
/// whose empty-string hash is a7ffc6f8...
#[test]
fn keccak256_known_answers() {
    assert_eq!(
        to_hex(&keccak256(b"")),
        "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    );
    assert_eq!(
        to_hex(&keccak256(b"abc")),
        "0x4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    );
}

/// The address of the secret key 1 (the generator point's address), well known as
/// 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf, in its EIP-55 form.
#[test]
fn address_of_secret_key_one() {
    let mut secret = [0u8; 32];
    secret[31] = 1;
    let signer = Signer::new(secret).unwrap();
    assert_eq!(
        to_checksum_address(&signer.address()),
        "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    );
}

/// EIP-55's own examples: the checksum form of each address, and refusal of a flipped case.
#[test]
fn eip55_checksum_examples() {
    for expected in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ] {
        let address = parse_address(&expected.to_lowercase()).unwrap();
        assert_eq!(to_checksum_address(&address), expected);
        assert_eq!(parse_address(expected).unwrap(), address);
    }
    // One letter's case flipped: a mistyped checksum is refused.
    assert!(parse_address("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    // All-uppercase digits carry no checksum and are accepted.
    assert!(parse_address("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED").is_ok());
}

/// EIP-155's worked example: the secret 0x4646..46 signs the transaction hash 0xdaf5a779...
/// with (v = 37 on chain 1, i.e. y parity 0, so v = 27 in the 27/28 convention) and the
/// published r and s (RFC 6979 deterministic), and recovery gives the sender
/// 0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f.
#[test]
fn eip155_signature_and_recovery() {
    let digest = h32("daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53");
    let signer = Signer::new([0x46; 32]).unwrap();
    let sig = signer.sign_digest(&digest).unwrap();
    assert_eq!(
        hex::encode(&sig[..32]),
        "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276"
    );
    assert_eq!(
        hex::encode(&sig[32..64]),
        "67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
    );
    assert_eq!(sig[64], 27);
    let sender = recover_signer(&digest, &sig).unwrap();
    assert_eq!(
        hex::encode(sender),
        "9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"
    );
    assert_eq!(sender, signer.address());
}

/// The well-known `EIP712Domain` type hash (OpenZeppelin's `EIP712` `TYPE_HASH`).
#[test]
fn eip712_domain_type_hash() {
    assert_eq!(
        to_hex(&keccak256(DOMAIN_TYPE)),
        "0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f"
    );
}

fn mail_types() -> Types {
    Types::new()
        .with("Person", &[("string", "name"), ("address", "wallet")])
        .with(
            "Mail",
            &[("Person", "from"), ("Person", "to"), ("string", "contents")],
        )
}

fn person(name: &str, wallet: &str) -> Value {
    Value::Struct(vec![
        Value::String(name.into()),
        Value::Word(word_address(&parse_address(wallet).unwrap())),
    ])
}

fn mail_message() -> Vec<Value> {
    vec![
        person("Cow", "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"),
        person("Bob", "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"),
        Value::String("Hello, Bob!".into()),
    ]
}

fn mail_domain() -> Eip712Domain {
    Eip712Domain {
        name: "Ether Mail".into(),
        version: "1".into(),
        chain_id: 1,
        verifying_contract: parse_address("0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC").unwrap(),
    }
}

/// The "Mail" example of EIP-712 and its reference implementation (Example.js and its test):
/// encodeType, typeHash, encodeData, hashStruct, the domain separator, the digest, the address
/// of the key keccak256("cow") and its signature (v = 28, r, s).
#[test]
fn eip712_mail_example() {
    let types = mail_types();
    assert_eq!(
        types.encode_type("Mail").unwrap(),
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)"
    );
    assert_eq!(
        to_hex(&types.type_hash("Mail").unwrap()),
        "0xa0cedeb2dc280ba39b857546d74f5549c3a1d7bdc2dd96bf881f76108e23dac2"
    );
    assert_eq!(
        to_hex(&types.encode_data("Mail", &mail_message()).unwrap()),
        "0xa0cedeb2dc280ba39b857546d74f5549c3a1d7bdc2dd96bf881f76108e23dac2\
         fc71e5fa27ff56c350aa531bc129ebdf613b772b6604664f5d8dbe21b85eb0c8\
         cd54f074a4af31b4411ff6a60c9719dbd559c221c8ac3492d9d872b041d703d1\
         b5aadf3154a261abdd9086fc627b61efca26ae5702701d05cd2305f7c52a2fc8"
    );
    let struct_hash = types.hash_struct("Mail", &mail_message()).unwrap();
    assert_eq!(
        to_hex(&struct_hash),
        "0xc52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    );

    let domain = mail_domain();
    let separator = domain.separator();
    assert_eq!(
        to_hex(&separator),
        "0xf2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    );
    // The same separator through the generic encoder.
    let domain_types = Types::new().with(
        "EIP712Domain",
        &[
            ("string", "name"),
            ("string", "version"),
            ("uint256", "chainId"),
            ("address", "verifyingContract"),
        ],
    );
    assert_eq!(
        domain_types.encode_type("EIP712Domain").unwrap(),
        DOMAIN_TYPE
    );
    let generic = domain_types
        .hash_struct(
            "EIP712Domain",
            &[
                Value::String(domain.name.clone()),
                Value::String(domain.version.clone()),
                Value::Word(eip712::word_uint(1)),
                Value::Word(word_address(&domain.verifying_contract)),
            ],
        )
        .unwrap();
    assert_eq!(generic, separator);

    let digest = typed_data_digest(&separator, &struct_hash);
    assert_eq!(
        to_hex(&digest),
        "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );

    let cow = Signer::new(keccak256(b"cow")).unwrap();
    assert_eq!(
        to_checksum_address(&cow.address()),
        "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
    );
    let sig = cow.sign_digest(&digest).unwrap();
    assert_eq!(
        hex::encode(&sig[..32]),
        "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    );
    assert_eq!(
        hex::encode(&sig[32..64]),
        "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
    );
    assert_eq!(sig[64], 28);
    assert_eq!(recover_signer(&digest, &sig).unwrap(), cow.address());
}

/// Changing any part of the Mail example changes the digest (the vector is not matched by a
/// constant path through the encoder).
#[test]
fn eip712_mail_example_is_sensitive_to_every_part() {
    let types = mail_types();
    let base = types.hash_struct("Mail", &mail_message()).unwrap();
    let mut other = mail_message();
    other[2] = Value::String("Hello, Bob?".into());
    assert_ne!(types.hash_struct("Mail", &other).unwrap(), base);
    let mut swapped = mail_message();
    swapped.swap(0, 1);
    assert_ne!(types.hash_struct("Mail", &swapped).unwrap(), base);
    let mut domain = mail_domain();
    domain.chain_id = 5;
    assert_ne!(domain.separator(), mail_domain().separator());
    // A member of the wrong kind is refused, not encoded.
    let mut wrong = mail_message();
    wrong[2] = Value::Word([0; 32]);
    assert!(types.hash_struct("Mail", &wrong).is_err());
    assert!(types.hash_struct("Mail", &mail_message()[..2]).is_err());
}
