//! On-chain check in an in-process EVM (revm): a small verifier contract, assembled here
//! opcode by opcode, does what a Solidity verifier would:
//!
//! ```text
//! domainSeparator = keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("pmargin"), keccak256("1"),
//!                                        block.chainid, address(this)))
//! structHash      = keccak256(abi.encode(TYPEHASH, <fields from calldata>))
//! digest          = keccak256(abi.encodePacked("\x19\x01", domainSeparator, structHash))
//! signer          = ecrecover(digest, v, r, s)
//! ```
//!
//! Calldata: the message's `n` fields as 32-byte words, then `v`, `r`, `s` as words. It returns
//! 288 bytes: `digest, v, r, s`, 128 zero bytes, then the recovered address as a word. The
//! chain id and the verifying contract come from the EVM (`CHAINID`, `ADDRESS`), so the test
//! also proves the domain binding matches what a deployed contract sees.

use pmargin_settlement::eip712::DOMAIN_TYPE;
use pmargin_settlement::*;
use revm::context::result::{ExecutionResult, Output};
use revm::context::TxEnv;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::{Address, Bytes, TxKind};
use revm::state::{AccountInfo, Bytecode};
use revm::{Context, ExecuteEvm, MainBuilder, MainContext};

const CHAIN_ID: u64 = 31337;
const VERIFIER: [u8; 20] = [
    0x5f, 0xbd, 0xb2, 0x31, 0x56, 0x78, 0xaf, 0xec, 0xb3, 0x67, 0xf0, 0x32, 0xd9, 0x3f, 0x64, 0x2f,
    0x64, 0x18, 0x0a, 0xa3,
];

/// A minimal assembler: PUSHn of the shortest width, and raw opcodes.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let bytes = &bytes[first..];
        assert!((1..=32).contains(&bytes.len()));
        self.0.push(0x5f + bytes.len() as u8); // PUSH1 = 0x60
        self.0.extend_from_slice(bytes);
        self
    }
    fn num(&mut self, n: u64) -> &mut Self {
        self.push(&n.to_be_bytes())
    }
    fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }
}

const KECCAK256: u8 = 0x20;
const ADDRESS: u8 = 0x30;
const CALLDATACOPY: u8 = 0x37;
const CHAINID: u8 = 0x46;
const POP: u8 = 0x50;
const MSTORE: u8 = 0x52;
const GAS: u8 = 0x5a;
const RETURN: u8 = 0xf3;
const STATICCALL: u8 = 0xfa;

/// The verifier for a message type with `fields` members and type hash `type_hash`.
fn verifier_code(type_hash: [u8; 32], fields: u64) -> Vec<u8> {
    let data = 32 * fields;
    let mut a = Asm::default();
    // Domain separator from constants, CHAINID and ADDRESS, at memory 0x00..0xa0.
    a.push(&keccak256(DOMAIN_TYPE)).num(0x00).op(MSTORE);
    a.push(&keccak256("pmargin")).num(0x20).op(MSTORE);
    a.push(&keccak256("1")).num(0x40).op(MSTORE);
    a.op(CHAINID).num(0x60).op(MSTORE);
    a.op(ADDRESS).num(0x80).op(MSTORE);
    a.num(0xa0).num(0x00).op(KECCAK256).num(0x420).op(MSTORE);
    // Struct hash: type hash then the field words from calldata, at 0x100.
    a.push(&type_hash).num(0x100).op(MSTORE);
    a.num(data).num(0).num(0x120).op(CALLDATACOPY);
    a.num(32 + data)
        .num(0x100)
        .op(KECCAK256)
        .num(0x440)
        .op(MSTORE);
    // 0x19 0x01 at 0x41e..0x420, then the separator and the struct hash.
    a.num(0x1901).num(0x400).op(MSTORE);
    a.num(66).num(0x41e).op(KECCAK256).num(0x500).op(MSTORE);
    // ecrecover(digest, v, r, s) through the precompile at address 1, into 0x600.
    a.num(96).num(data).num(0x520).op(CALLDATACOPY);
    a.num(32)
        .num(0x600)
        .num(128)
        .num(0x500)
        .num(1)
        .op(GAS)
        .op(STATICCALL)
        .op(POP);
    a.num(0x120).num(0x500).op(RETURN);
    a.0
}

/// Runs the verifier deployed at [`VERIFIER`] on a chain with id `chain_id`; returns the
/// digest it computed and the address ecrecover returned (zero when recovery failed).
fn run_verifier(
    code: Vec<u8>,
    chain_id: u64,
    fields: &[[u8; 32]],
    signature: &[u8; 65],
) -> ([u8; 32], [u8; 20]) {
    let mut db = CacheDB::<EmptyDB>::default();
    db.insert_account_info(
        Address::from(VERIFIER),
        AccountInfo::default().with_code(Bytecode::new_raw(Bytes::from(code))),
    );
    let mut evm = Context::mainnet()
        .modify_cfg_chained(|cfg| cfg.chain_id = chain_id)
        .with_db(db)
        .build_mainnet();

    let mut calldata: Vec<u8> = fields.concat();
    let mut v = [0u8; 32];
    v[31] = signature[64];
    calldata.extend_from_slice(&v);
    calldata.extend_from_slice(&signature[..64]);
    let tx = TxEnv::builder()
        .caller(Address::from([0x42; 20]))
        .kind(TxKind::Call(Address::from(VERIFIER)))
        .data(Bytes::from(calldata))
        .gas_limit(1_000_000)
        .chain_id(Some(chain_id))
        .build()
        .unwrap();
    let result = evm.transact(tx).unwrap().result;
    let ExecutionResult::Success {
        output: Output::Call(out),
        ..
    } = result
    else {
        panic!("verifier did not succeed: {result:?}");
    };
    assert_eq!(out.len(), 288);
    let digest: [u8; 32] = out[..32].try_into().unwrap();
    assert_eq!(out[256..268], [0u8; 12]);
    let signer: [u8; 20] = out[268..].try_into().unwrap();
    (digest, signer)
}

fn domain() -> Eip712Domain {
    Eip712Domain::pmargin(CHAIN_ID, VERIFIER)
}

fn margin_update() -> MarginUpdate {
    MarginUpdate {
        account: account_id("acct-0042"),
        equity: to_fixed(-1_234.567891).unwrap(),
        margin_balance: to_fixed(-5_000.25).unwrap(),
        initial_margin: to_fixed_unsigned(3_765.682109).unwrap(),
        maintenance_margin: to_fixed_unsigned(2_500.0).unwrap(),
        status: AccountStatus::Bankrupt.code(),
        params_version: 7,
        nonce: 1,
        timestamp: 1_718_000_000,
    }
}

/// Runs the verifier on `fields` with `signed`'s signature and asserts the contract neither
/// rebuilds `signed`'s digest nor recovers `signer` (a tampered field, another chain).
fn refused_on_chain(
    code: &[u8],
    chain_id: u64,
    fields: &[[u8; 32]],
    signed: &SignedMessage,
    signer: &Signer,
) {
    let (digest, recovered) = run_verifier(code.to_vec(), chain_id, fields, &signed.signature);
    assert_ne!(digest, signed.digest);
    assert_ne!(recovered, signer.address());
}

/// Signs `msg` with `signer`, runs it through the verifier of its type and checks that the
/// EVM computes the signed digest and recovers the signer; returns the verifier and the signed
/// message, to try tampered copies against.
fn signed_and_verified_on_chain<M>(signer: &mut Signer, msg: &M) -> (Vec<u8>, SignedMessage)
where
    M: TypedMessage + Clone + Into<SettlementMessage>,
{
    let signed = signer.sign(&domain(), msg.clone().into()).unwrap();
    let code = verifier_code(M::type_hash(), M::FIELDS.len() as u64);
    let (digest, recovered) = run_verifier(
        code.clone(),
        CHAIN_ID,
        &msg.encode_data(),
        &signed.signature,
    );
    assert_eq!(digest, signed.digest);
    assert_eq!(recovered, signer.address());
    (code, signed)
}

#[test]
fn evm_verifier_recovers_the_signer_of_a_margin_update() {
    let mut signer = Signer::new(keccak256(b"pmargin settlement test key")).unwrap();
    let msg = margin_update();
    // The EVM computes the same EIP-712 digest and its ecrecover returns the signer.
    let (code, signed) = signed_and_verified_on_chain(&mut signer, &msg);

    // A tampered field (equity + 1 unit): the contract recovers some other address.
    let mut tampered = msg.clone();
    tampered.equity += 1;
    refused_on_chain(&code, CHAIN_ID, &tampered.encode_data(), &signed, &signer);

    // The same message presented on another chain: the domain differs, recovery fails.
    refused_on_chain(&code, 1, &msg.encode_data(), &signed, &signer);
}

#[test]
fn evm_verifier_recovers_the_signer_of_a_liquidation() {
    let mut signer = Signer::new(keccak256(b"another key")).unwrap();
    let msg = LiquidationInstruction {
        account: account_id("acct-0042"),
        instrument: instrument_id("BTC-PERP"),
        size: to_fixed(-0.125).unwrap(),
        price: to_fixed_unsigned(64_250.5).unwrap(),
        penalty: to_fixed_unsigned(80.3125).unwrap(),
        params_version: 7,
        nonce: 2,
        timestamp: 1_718_000_001,
    };
    let (code, signed) = signed_and_verified_on_chain(&mut signer, &msg);

    // A flipped v: the precompile recovers another key.
    let mut sig = signed.signature;
    sig[64] ^= 27 ^ 28;
    let (_, recovered) = run_verifier(code, CHAIN_ID, &msg.encode_data(), &sig);
    assert_ne!(recovered, signer.address());
}

/// A seize instruction for an external protocol's controller verifies on-chain as the margin
/// updates do: the contract rebuilds the digest from the nine members, `CHAINID` and `ADDRESS`
/// and ecrecovers the engine's key; a changed amount, receiver or deadline does not recover it.
#[test]
fn evm_verifier_recovers_the_signer_of_a_seize_instruction() {
    let mut signer = Signer::new(keccak256(b"pmargin engine settlement key")).unwrap();
    let msg = SeizeInstruction {
        account: account_id("loop-bob"),
        protocol: protocol_id("aave-v3"),
        position: lending_position_id(ExternalKind::LendingDeposit, "ETH"),
        amount: to_wad(12.5).unwrap(),
        receiver: account_id("liquidator"),
        liquidation_id: 42,
        params_version: 7,
        nonce: 42 * (1 << 20) + 3,
        deadline: 1_718_003_600,
    };
    let (code, signed) = signed_and_verified_on_chain(&mut signer, &msg);

    let mut more = msg.clone();
    more.amount += 1;
    let mut to_mallory = msg.clone();
    to_mallory.receiver = account_id("mallory");
    let mut later = msg.clone();
    later.deadline += 3600;
    let mut other_position = msg.clone();
    other_position.position = lp_position_id("ETH", "USDC", 2500.0, 3600.0);
    for tampered in [more, to_mallory, later, other_position] {
        refused_on_chain(&code, CHAIN_ID, &tampered.encode_data(), &signed, &signer);
    }
    // Another deployment's chain: the domain differs, the engine's key is not recovered.
    refused_on_chain(&code, 10, &msg.encode_data(), &signed, &signer);
}

/// A seize instruction the engine decided, not built by hand, verifies on-chain. The engine
/// liquidates an account whose BTC perpetual lost more than its margin and which holds 5 ETH
/// on Aave (the book of crates/engine/tests/seize.rs: BTC at 46,000, margin balance -175): it
/// closes the perpetual, then seizes 13/33 of the deposit. Its `liquidation_seize` output goes
/// through [`SeizeInstruction::for_seized`], as the service's does, is numbered as the service
/// numbers it (event 1) and signed; the EVM verifier recovers the signer from it.
#[test]
fn evm_verifier_recovers_the_signer_of_a_seize_instruction_the_engine_produced() {
    use pmargin_core::testkit::{SEIZE_ACCOUNT, SEIZE_PARAMS};
    use pmargin_engine::{Engine, EngineConfig, Event, Output};
    let portfolio = format!(r#"{{"accounts": [{SEIZE_ACCOUNT}]}}"#);
    let market =
        r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 46000, "ETH": 3000, "USDC": 1}}"#;
    let mut engine = Engine::new(
        &pmargin_core::Portfolio::parse("p.json", &portfolio).unwrap(),
        &pmargin_core::Market::parse("m.json", market).unwrap(),
        &pmargin_core::Params::parse("r.json", SEIZE_PARAMS).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    let outputs = engine.apply(&Event::Liquidate);
    let seized: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::LiquidationSeize {
                account,
                receiver,
                position,
                ..
            } => Some(SeizeInstruction::for_seized(account, position, receiver).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(seized.len(), 1, "{outputs:?}");
    let msg = SeizeInstruction {
        liquidation_id: engine.sequence(),
        params_version: engine.params().version,
        nonce: engine.sequence() << 20,
        deadline: 1_718_086_400,
        ..seized[0].clone()
    };
    // What the engine decided, checked against the hand figures: 5 x 13/33 ETH to the
    // liquidator, from `a`, of its Aave ETH deposit.
    assert!(msg.amount.abs_diff(1_969_696_969_696_969_697) < 1_000_000_000);
    assert_eq!(msg.account, account_id("a"));
    assert_eq!(msg.receiver, account_id("liquidator"));
    assert_eq!(msg.protocol, protocol_id("aave-v3"));
    assert_eq!(
        msg.position,
        lending_position_id(ExternalKind::LendingDeposit, "ETH")
    );

    let mut signer = Signer::new(keccak256(b"pmargin engine settlement key")).unwrap();
    let (code, signed) = signed_and_verified_on_chain(&mut signer, &msg);
    let mut more = msg.clone();
    more.amount += 1;
    refused_on_chain(&code, CHAIN_ID, &more.encode_data(), &signed, &signer);
}
