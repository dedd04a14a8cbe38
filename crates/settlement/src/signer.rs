//! secp256k1 signing and recovery, Ethereum style, and nonces.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::eip712::{keccak256, Eip712Domain, Word};
use crate::messages::{LiquidationInstruction, MarginUpdate, SeizeInstruction, SettlementMessage};
use crate::serde_hex::to_checksum_address;
use crate::Error;

/// Ethereum address of a public key: the last 20 bytes of `keccak256` of the uncompressed
/// point without its `0x04` prefix.
pub fn address_of(key: &VerifyingKey) -> [u8; 20] {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    address
}

/// Recovers the signer's address from a digest and a 65-byte `r || s || v` signature, as the
/// EVM's `ecrecover` does, with the rules OpenZeppelin's `ECDSA.recover` adds: `v` must be 27
/// or 28, `r` and `s` in `[1, n-1]`, and `s` in the lower half of the order (EIP-2), so a
/// signature has exactly one valid form.
pub fn recover_signer(digest: &Word, signature: &[u8; 65]) -> Result<[u8; 20], Error> {
    let v = signature[64];
    let recovery_id = match v {
        27 | 28 => {
            RecoveryId::from_byte(v - 27).ok_or_else(|| Error::InvalidSignature("bad v".into()))?
        }
        _ => {
            return Err(Error::InvalidSignature(format!(
                "v = {v}, expected 27 or 28"
            )))
        }
    };
    let sig = Signature::from_slice(&signature[..64])
        .map_err(|_| Error::InvalidSignature("r or s out of range".into()))?;
    if sig.normalize_s().is_some() {
        return Err(Error::InvalidSignature(
            "s in the upper half of the curve order (EIP-2)".into(),
        ));
    }
    let key = VerifyingKey::recover_from_prehash(digest, &sig, recovery_id).map_err(|_| {
        Error::InvalidSignature("no public key recovers from this signature".into())
    })?;
    Ok(address_of(&key))
}

/// The last nonce used by one signer; each new message needs a strictly larger one.
///
/// Starts at 0, like a contract's `mapping(address => uint64) lastNonce`, so the first valid
/// nonce is 1. A verifier keeps one per trusted signer and calls [`NonceCounter::accept`] on
/// each verified message to refuse replays and reordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceCounter {
    last: u64,
}

impl NonceCounter {
    /// A counter with no nonce used yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter resuming after `last` (e.g. the last nonce persisted before a restart).
    pub fn resume_after(last: u64) -> Self {
        Self { last }
    }

    /// The last nonce used (0 when none).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next nonce to use, without consuming it.
    pub fn peek(&self) -> Result<u64, Error> {
        self.last.checked_add(1).ok_or(Error::NonceExhausted)
    }

    /// Fails unless `nonce` is strictly greater than the last one used.
    pub fn check(&self, nonce: u64) -> Result<(), Error> {
        if nonce > self.last {
            Ok(())
        } else {
            Err(Error::NonceNotIncreasing {
                last: self.last,
                got: nonce,
            })
        }
    }

    /// [`NonceCounter::check`], then records `nonce` as the last one used.
    pub fn accept(&mut self, nonce: u64) -> Result<(), Error> {
        self.check(nonce)?;
        self.last = nonce;
        Ok(())
    }

    /// Takes the next nonce (`last + 1`).
    pub fn take(&mut self) -> Result<u64, Error> {
        let n = self.peek()?;
        self.last = n;
        Ok(n)
    }
}

/// A message, its digest, its signature and the address that signed it.
///
/// JSON: `{"primaryType": "MarginUpdate", "message": {...}, "digest": "0x..",
/// "signature": "0x<r><s><v>", "signer": "0x<EIP-55>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    /// The message, tagged with its primary type.
    #[serde(flatten)]
    pub payload: SettlementMessage,
    /// The EIP-712 digest that was signed.
    #[serde(with = "crate::serde_hex::bytes")]
    pub digest: [u8; 32],
    /// `r || s || v`, 65 bytes, `v` = 27 or 28.
    #[serde(with = "crate::serde_hex::bytes")]
    pub signature: [u8; 65],
    /// The signer's address.
    #[serde(with = "crate::serde_hex::address")]
    pub signer: [u8; 20],
}

/// A secp256k1 signing key with its address and nonce counter.
///
/// The secret is never printed (`Debug` shows the address only) and is zeroed on drop by
/// `k256`.
pub struct Signer {
    key: SigningKey,
    address: [u8; 20],
    nonces: NonceCounter,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("address", &to_checksum_address(&self.address))
            .field("nonces", &self.nonces)
            .finish()
    }
}

impl Signer {
    /// A signer from a 32-byte big-endian secret, which must be in `[1, n-1]`.
    pub fn new(secret: [u8; 32]) -> Result<Self, Error> {
        Self::with_nonces(secret, NonceCounter::new())
    }

    /// A signer resuming with an existing nonce counter.
    pub fn with_nonces(secret: [u8; 32], nonces: NonceCounter) -> Result<Self, Error> {
        let key = SigningKey::from_bytes(&secret.into()).map_err(|_| Error::InvalidKey)?;
        let address = address_of(key.verifying_key());
        Ok(Self {
            key,
            address,
            nonces,
        })
    }

    /// The signer's Ethereum address.
    pub fn address(&self) -> [u8; 20] {
        self.address
    }

    /// The signer's nonce counter.
    pub fn nonces(&self) -> &NonceCounter {
        &self.nonces
    }

    /// The next nonce to put in a message (`last + 1`).
    pub fn next_nonce(&self) -> Result<u64, Error> {
        self.nonces.peek()
    }

    /// Signs a raw 32-byte digest: `r || s || v` with low `s` and `v` = 27 or 28
    /// (deterministic, RFC 6979). Does not touch the nonce counter.
    pub fn sign_digest(&self, digest: &Word) -> Result<[u8; 65], Error> {
        let (sig, recovery_id) = self
            .key
            .sign_prehash_recoverable(digest)
            .map_err(|e| Error::Signing(e.to_string()))?;
        // k256 normalises s to the lower half and adjusts the recovery id to match.
        debug_assert!(sig.normalize_s().is_none());
        if recovery_id.is_x_reduced() {
            // r >= n happens with probability ~2^-128; ecrecover cannot express it.
            return Err(Error::Signing("x-reduced recovery id".into()));
        }
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + u8::from(recovery_id.is_y_odd());
        Ok(out)
    }

    /// Validates and signs a message; its nonce must be above every nonce this signer used
    /// before, and becomes the last one used.
    pub fn sign(
        &mut self,
        domain: &Eip712Domain,
        message: SettlementMessage,
    ) -> Result<SignedMessage, Error> {
        message.validate()?;
        self.nonces.check(message.nonce())?;
        let digest = message.digest(domain);
        let signature = self.sign_digest(&digest)?;
        self.nonces.accept(message.nonce())?;
        Ok(SignedMessage {
            payload: message,
            digest,
            signature,
            signer: self.address,
        })
    }

    /// Signs a [`MarginUpdate`] (see [`Signer::sign`]).
    pub fn sign_margin_update(
        &mut self,
        domain: &Eip712Domain,
        message: &MarginUpdate,
    ) -> Result<SignedMessage, Error> {
        self.sign(domain, message.clone().into())
    }

    /// Signs a [`LiquidationInstruction`] (see [`Signer::sign`]).
    pub fn sign_liquidation(
        &mut self,
        domain: &Eip712Domain,
        message: &LiquidationInstruction,
    ) -> Result<SignedMessage, Error> {
        self.sign(domain, message.clone().into())
    }

    /// Signs a [`SeizeInstruction`] (see [`Signer::sign`]).
    pub fn sign_seize(
        &mut self,
        domain: &Eip712Domain,
        message: &SeizeInstruction,
    ) -> Result<SignedMessage, Error> {
        self.sign(domain, message.clone().into())
    }
}

/// Checks a signed message under `domain` and returns the recovered signer.
///
/// The message is validated, its digest recomputed and compared with the stated one, the
/// signer recovered from the signature and compared with the stated one. This proves the
/// message is internally consistent and was signed by the returned address; whether that
/// address is *trusted* is the caller's decision (see [`verify_from`]).
pub fn verify(signed: &SignedMessage, domain: &Eip712Domain) -> Result<[u8; 20], Error> {
    signed.payload.validate()?;
    let digest = signed.payload.digest(domain);
    if digest != signed.digest {
        return Err(Error::DigestMismatch);
    }
    let recovered = recover_signer(&digest, &signed.signature)?;
    if recovered != signed.signer {
        return Err(Error::SignerMismatch {
            stated: signed.signer,
            recovered,
        });
    }
    Ok(recovered)
}

/// [`verify`], then requires the signer to be `trusted`.
pub fn verify_from(
    signed: &SignedMessage,
    domain: &Eip712Domain,
    trusted: &[u8; 20],
) -> Result<(), Error> {
    let recovered = verify(signed, domain)?;
    if recovered != *trusted {
        return Err(Error::UntrustedSigner(recovered));
    }
    Ok(())
}
