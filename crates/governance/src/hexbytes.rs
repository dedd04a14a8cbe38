//! Fixed-size byte arrays (keys, hashes, signatures) as lower-case hex strings in JSON.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// `#[serde(with = "crate::hexbytes")]` for any `[u8; N]`.
pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let text = String::deserialize(d)?;
    let mut out = [0u8; N];
    hex::decode_to_slice(&text, &mut out)
        .map_err(|e| D::Error::custom(format!("expected {} hex digits: {e}", 2 * N)))?;
    Ok(out)
}

/// The same for `Option<[u8; N]>` (JSON `null` when absent).
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap<const M: usize>(#[serde(with = "super")] [u8; M]);
        Ok(Option::<Wrap<N>>::deserialize(d)?.map(|w| w.0))
    }
}
