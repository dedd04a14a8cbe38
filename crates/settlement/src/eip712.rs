//! EIP-712 primitives: Keccak-256, 32-byte words, a small generic struct encoder and the domain.
//!
//! Follows <https://eips.ethereum.org/EIPS/eip-712>:
//! * `encodeType` = `Name(type1 name1,type2 name2,...)` followed by the encodings of every
//!   struct type it references (transitively), sorted by name;
//! * `typeHash` = `keccak256(encodeType)`;
//! * `hashStruct(s)` = `keccak256(typeHash || encodeData(s))`, each member encoded as one
//!   32-byte word: atomic values (`uintN`, `intN`, `address`, `bool`, `bytesN`) ABI-encoded
//!   (left-padded, two's complement sign-extended for `intN`, right-padded for `bytesN`),
//!   `string`/`bytes` as the keccak of their contents, nested structs as their `hashStruct`;
//! * the signed digest = `keccak256(0x19 || 0x01 || domainSeparator || hashStruct(message))`.
//!
//! Arrays are not needed by pmargin's messages and are rejected by the generic encoder.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::keccak::{keccak256, Word};
use crate::Error;

/// `uint256` word of an unsigned integer (big-endian, left-padded with zeros).
pub fn word_uint(v: u128) -> Word {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

/// `int256` word of a signed integer: two's complement, sign-extended to 256 bits.
pub fn word_int(v: i128) -> Word {
    let mut w = if v < 0 { [0xffu8; 32] } else { [0u8; 32] };
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

/// `address` word: the 20 bytes left-padded with zeros.
pub fn word_address(a: &[u8; 20]) -> Word {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a);
    w
}

/// `bool` word.
pub fn word_bool(b: bool) -> Word {
    word_uint(u128::from(b))
}

/// The value of one member, for the generic encoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An atomic value already ABI-encoded as a word (see the `word_*` helpers).
    Word(Word),
    /// A dynamic `string`.
    String(String),
    /// Dynamic `bytes`.
    Bytes(Vec<u8>),
    /// A nested struct: its members in declaration order.
    Struct(Vec<Value>),
}

/// One member of a struct type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Solidity type name (`uint256`, `address`, `string`, or a struct name).
    pub ty: String,
    /// Member name.
    pub name: String,
}

/// A set of struct type definitions, enough to encode nested structs with atomic, `string` and
/// `bytes` members.
#[derive(Clone, Debug, Default)]
pub struct Types {
    structs: BTreeMap<String, Vec<Field>>,
}

impl Types {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the struct `name` with members given as `(type, name)` pairs.
    pub fn with(mut self, name: &str, fields: &[(&str, &str)]) -> Self {
        let fields = fields
            .iter()
            .map(|(ty, name)| Field {
                ty: (*ty).to_string(),
                name: (*name).to_string(),
            })
            .collect();
        self.structs.insert(name.to_string(), fields);
        self
    }

    fn fields(&self, name: &str) -> Result<&[Field], Error> {
        self.structs
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Encoding(format!("unknown struct type `{name}`")))
    }

    fn collect_deps(&self, name: &str, deps: &mut BTreeSet<String>) -> Result<(), Error> {
        for field in self.fields(name)? {
            if field.ty.ends_with(']') {
                return Err(Error::Encoding(format!(
                    "array member `{}` is not supported",
                    field.name
                )));
            }
            if self.structs.contains_key(&field.ty) && deps.insert(field.ty.clone()) {
                self.collect_deps(&field.ty, deps)?;
            }
        }
        Ok(())
    }

    /// `encodeType(primary)`: the primary type then its referenced struct types sorted by name.
    pub fn encode_type(&self, primary: &str) -> Result<String, Error> {
        let mut deps = BTreeSet::new();
        self.collect_deps(primary, &mut deps)?;
        deps.remove(primary);
        let mut out = String::new();
        for name in std::iter::once(primary).chain(deps.iter().map(String::as_str)) {
            let members: Vec<String> = self
                .fields(name)?
                .iter()
                .map(|f| format!("{} {}", f.ty, f.name))
                .collect();
            out.push_str(&format!("{name}({})", members.join(",")));
        }
        Ok(out)
    }

    /// `typeHash(primary)` = keccak256 of [`Types::encode_type`].
    pub fn type_hash(&self, primary: &str) -> Result<Word, Error> {
        Ok(keccak256(self.encode_type(primary)?))
    }

    /// `hashStruct` of a value of struct type `primary`, members in declaration order.
    pub fn hash_struct(&self, primary: &str, values: &[Value]) -> Result<Word, Error> {
        Ok(keccak256(self.encode_data(primary, values)?))
    }

    /// `typeHash || encodeData(value)`: the bytes [`Types::hash_struct`] hashes.
    pub fn encode_data(&self, primary: &str, values: &[Value]) -> Result<Vec<u8>, Error> {
        let fields = self.fields(primary)?;
        if fields.len() != values.len() {
            return Err(Error::Encoding(format!(
                "`{primary}` has {} members, got {} values",
                fields.len(),
                values.len()
            )));
        }
        let mut enc = Vec::with_capacity(32 * (1 + fields.len()));
        enc.extend_from_slice(&self.type_hash(primary)?);
        for (field, value) in fields.iter().zip(values) {
            enc.extend_from_slice(&self.encode_value(field, value)?);
        }
        Ok(enc)
    }

    fn encode_value(&self, field: &Field, value: &Value) -> Result<Word, Error> {
        let mismatch = || {
            Error::Encoding(format!(
                "member `{}` of type `{}` got {value:?}",
                field.name, field.ty
            ))
        };
        match (field.ty.as_str(), value) {
            ("string", Value::String(s)) => Ok(keccak256(s.as_bytes())),
            ("bytes", Value::Bytes(b)) => Ok(keccak256(b)),
            (ty, Value::Struct(members)) if self.structs.contains_key(ty) => {
                self.hash_struct(ty, members)
            }
            (ty, Value::Word(w)) if is_atomic(ty) => Ok(*w),
            _ => Err(mismatch()),
        }
    }
}

fn is_atomic(ty: &str) -> bool {
    let sized = |prefix: &str, max: u32, step: u32| {
        ty.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 1 && n <= max && n % step == 0)
    };
    matches!(ty, "address" | "bool")
        || sized("uint", 256, 8)
        || sized("int", 256, 8)
        || sized("bytes", 32, 1)
}

/// `EIP712Domain` type string for the four members pmargin uses.
pub const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";

/// The signing domain: binds a message to one deployment (chain and verifying contract).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Eip712Domain {
    /// Application name: `"pmargin"` for pmargin's messages.
    pub name: String,
    /// Message format version: `"1"`.
    pub version: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The contract that verifies the messages.
    #[serde(with = "crate::serde_hex::address")]
    pub verifying_contract: [u8; 20],
}

impl Eip712Domain {
    /// Domain name of pmargin's messages.
    pub const NAME: &'static str = "pmargin";
    /// Version of pmargin's message formats.
    pub const VERSION: &'static str = "1";

    /// pmargin's domain on `chain_id` for the verifier at `verifying_contract`.
    pub fn pmargin(chain_id: u64, verifying_contract: [u8; 20]) -> Self {
        Self {
            name: Self::NAME.into(),
            version: Self::VERSION.into(),
            chain_id,
            verifying_contract,
        }
    }

    /// `domainSeparator` = `hashStruct(EIP712Domain)`.
    pub fn separator(&self) -> Word {
        let mut enc = Vec::with_capacity(5 * 32);
        enc.extend_from_slice(&keccak256(DOMAIN_TYPE));
        enc.extend_from_slice(&keccak256(self.name.as_bytes()));
        enc.extend_from_slice(&keccak256(self.version.as_bytes()));
        enc.extend_from_slice(&word_uint(u128::from(self.chain_id)));
        enc.extend_from_slice(&word_address(&self.verifying_contract));
        keccak256(enc)
    }
}

/// The digest to sign: `keccak256(0x19 0x01 || domainSeparator || structHash)`.
pub fn typed_data_digest(domain_separator: &Word, struct_hash: &Word) -> Word {
    let mut enc = [0u8; 66];
    enc[0] = 0x19;
    enc[1] = 0x01;
    enc[2..34].copy_from_slice(domain_separator);
    enc[34..].copy_from_slice(struct_hash);
    keccak256(enc)
}
