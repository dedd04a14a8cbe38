//! Bearer API keys, roles, and the throttle of failed authentication.
//!
//! A key is `pmk_` followed by 64 hex digits (32 random bytes). Only a keyed hash of it is
//! kept: HMAC-SHA256 under the server's key secret ([`KeySecret`]), so a copy of the stored
//! hashes alone does not let anyone test guesses offline (a plain SHA-256 would, and a weak
//! admin key would fall to it). A presented key is hashed, looked up by hash, and the stored
//! hash compared in constant time.
//!
//! Roles (issue 15): fills and deposits come from the venue (`venue`: the matching engine or
//! clearing adapter) or an `admin`, never from a trader; a `trader` reads, asks what-ifs and
//! requests withdrawals on its own accounts; an `oracle_feeder` posts quotes for the sources it
//! was bound to at creation only.

use crate::error::ServiceError;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    /// The matching engine or clearing adapter: submits fills, deposits and withdrawals.
    Venue,
    RiskCommittee,
    OracleFeeder,
    Trader,
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Venue => "venue",
            Role::RiskCommittee => "risk_committee",
            Role::OracleFeeder => "oracle_feeder",
            Role::Trader => "trader",
            Role::ReadOnly => "read_only",
        }
    }
}

/// Roles that may read accounts (a trader only its own; see [`Caller::require_account`]).
pub const READERS: &[Role] = &[
    Role::Admin,
    Role::Venue,
    Role::RiskCommittee,
    Role::ReadOnly,
    Role::Trader,
];
/// Roles that may read across accounts: the venue's staff.
pub const STAFF: &[Role] = &[Role::Admin, Role::RiskCommittee, Role::ReadOnly];
/// Roles that may submit fills and deposits: value enters an account or moves between two
/// only on the venue's word (a custodian confirms a deposit, not the account holder).
pub const FILLERS: &[Role] = &[Role::Admin, Role::Venue];

/// How a stored key's hash was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HashScheme {
    /// A plain SHA-256 of the key, as stored before issue 15. Such records are no longer
    /// accepted (the key cannot be rehashed without the key itself): re-create the key.
    #[default]
    #[serde(rename = "sha256")]
    Sha256,
    /// HMAC-SHA256 under the server's key secret.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

/// A stored key: never the key itself, only its keyed hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub role: Role,
    /// For a trader: the accounts it may read and trade.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// For an oracle feeder: the quote sources (venue names) it may post for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Hex hash of the key, made as `scheme` says.
    pub hash: String,
    #[serde(default)]
    pub scheme: HashScheme,
    pub created_ms: i64,
    #[serde(default)]
    pub label: Option<String>,
    /// When the key was revoked (`DELETE /v1/keys/{id}`); the record stays, for the audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
}

impl KeyRecord {
    /// A record a presented key can match: keyed hash, not revoked.
    pub fn is_active(&self) -> bool {
        self.scheme == HashScheme::HmacSha256 && self.revoked_ms.is_none()
    }
}

/// Who is calling (after authentication).
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    pub accounts: Vec<String>,
    pub sources: Vec<String>,
}

impl Caller {
    /// The caller must hold one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ServiceError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ServiceError::forbidden(format!(
                "role {} may not do this (allowed: {})",
                self.role.as_str(),
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// May the caller read (or act on) this account?
    pub fn may_access(&self, account: &str) -> bool {
        match self.role {
            Role::Admin | Role::Venue | Role::RiskCommittee | Role::ReadOnly => true,
            Role::Trader => self.accounts.iter().any(|a| a == account),
            Role::OracleFeeder => false,
        }
    }

    pub fn require_account(&self, account: &str) -> Result<(), ServiceError> {
        if self.may_access(account) {
            Ok(())
        } else {
            Err(ServiceError::forbidden(format!(
                "key {} may not access account `{account}`",
                self.key_id
            )))
        }
    }

    /// May the caller post a quote from `source`? An admin any; a feeder those it was bound to.
    pub fn require_source(&self, source: &str) -> Result<(), ServiceError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::OracleFeeder if self.sources.iter().any(|s| s == source) => Ok(()),
            Role::OracleFeeder => Err(ServiceError::forbidden(format!(
                "key {} may post quotes only for source{} {}, not `{source}`",
                self.key_id,
                if self.sources.len() == 1 { "" } else { "s" },
                self.sources.join(", ")
            ))
            .with_field("source")),
            _ => self.require(&[Role::Admin, Role::OracleFeeder]),
        }
    }
}

/// The secret of the stored keys' HMAC: 32 bytes or more.
///
/// Taken from `PMARGIN_KEY_SECRET` (hex, at least 64 digits) when set; otherwise read from
/// `<data dir>/key_secret` (64 hex digits, mode 0600), which the first start generates; a server
/// without a data directory (its keys are in memory only) draws one per process. Replacing it
/// voids every stored key (an admin key from `PMARGIN_ADMIN_KEY` is re-installed at start).
#[derive(Clone)]
pub struct KeySecret {
    /// Keyed once: each hash clones it (the key's pads are not hashed again per request).
    mac: Hmac<Sha256>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

impl KeySecret {
    pub const ENV: &'static str = "PMARGIN_KEY_SECRET";
    pub const FILE: &'static str = "key_secret";

    fn new(bytes: Vec<u8>) -> KeySecret {
        let mac = Hmac::<Sha256>::new_from_slice(&bytes).expect("HMAC takes a key of any length");
        KeySecret { mac, bytes }
    }

    pub fn random() -> Result<KeySecret, String> {
        let mut secret = vec![0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| format!("no randomness for the key secret: {e}"))?;
        Ok(KeySecret::new(secret))
    }

    /// At least 32 bytes as hex (`what` names where the text came from, for the error).
    pub fn from_hex(text: &str, what: &str) -> Result<KeySecret, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| format!("{what}: the key secret must be hex digits ({e})"))?;
        if bytes.len() < 32 {
            return Err(format!(
                "{what}: the key secret must hold at least 32 bytes (64 hex digits), got {}",
                bytes.len()
            ));
        }
        Ok(KeySecret::new(bytes))
    }

    /// The secret of a server: `PMARGIN_KEY_SECRET`, else the data directory's file (made on
    /// first start), else a fresh one.
    pub fn open(data_dir: Option<&Path>) -> Result<KeySecret, String> {
        if let Some(text) = std::env::var(Self::ENV).ok().filter(|t| !t.is_empty()) {
            return KeySecret::from_hex(&text, Self::ENV);
        }
        let Some(dir) = data_dir else {
            return KeySecret::random();
        };
        let path = dir.join(Self::FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                check_private(&path)?;
                KeySecret::from_hex(&text, &path.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = KeySecret::random()?;
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                write_private(&path, hex::encode(&secret.bytes).as_bytes())?;
                Ok(secret)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The keyed hash of an API key.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A record of a new key (its hash under this secret).
    pub fn record(&self, id: String, role: Role, key: &str, created_ms: i64) -> KeyRecord {
        KeyRecord {
            id,
            role,
            accounts: Vec::new(),
            sources: Vec::new(),
            hash: hex::encode(self.hash(key)),
            scheme: HashScheme::HmacSha256,
            created_ms,
            label: None,
            revoked_ms: None,
        }
    }
}

/// Writes a file only its owner may read (0600), atomically: a temporary file beside it,
/// written and synced, then renamed over it, and the directory synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(|e| io(&tmp, e))?;
    // (The mode applies only to a file created now: a temporary left by a crash keeps its own.)
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(&tmp, e))?;
    }
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A secret file others can read is refused, as ssh refuses such a private key.
fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: the key secret is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The least an admin key set by `PMARGIN_ADMIN_KEY` must carry.
pub const ADMIN_KEY_MIN_BITS: f64 = 128.0;

/// Refuses an admin key too weak to guard the service.
///
/// The rule: the key is printable ASCII without spaces; its strength is estimated as its
/// length times log2 of the smallest usual alphabet holding all its characters (16 for hex
/// digits of one case, 64 for the base64 and base64url characters, 94 for printable ASCII),
/// and must reach 128 bits: at least 32 hex digits, 22 base64 characters or 20 other printable
/// characters. A key with fewer than 8 distinct characters is refused whatever its length
/// (`aaaa...`, `abab...`). This is an estimate of a random key's strength, not a proof:
/// generate the key (`openssl rand -hex 16`), do not choose it.
pub fn check_admin_key(key: &str) -> Result<(), String> {
    let refuse = |why: String| {
        Err(format!(
            "PMARGIN_ADMIN_KEY is too weak: {why}; it must carry at least 128 bits, e.g. 32 \
             random hex digits (`openssl rand -hex 16`) or 22 random base64 characters"
        ))
    };
    if let Some(c) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return refuse(format!("it holds {c:?}, not a printable ASCII character"));
    }
    let hex_lower = key
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let hex_upper = key
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    let base64 = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/-_=".contains(&b));
    let alphabet: f64 = if hex_lower || hex_upper {
        16.0
    } else if base64 {
        64.0
    } else {
        94.0
    };
    let bits = key.len() as f64 * alphabet.log2();
    if bits < ADMIN_KEY_MIN_BITS {
        return refuse(format!(
            "{} characters of an alphabet of {alphabet} carry at most {bits:.0} bits",
            key.len()
        ));
    }
    let mut distinct: Vec<u8> = key.bytes().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return refuse(format!(
            "it uses only {} distinct characters",
            distinct.len()
        ));
    }
    Ok(())
}

/// A fresh random key and its id.
pub fn generate_key() -> Result<(String, String), String> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness for a key: {e}"))?;
    let mut id = [0u8; 6];
    getrandom::getrandom(&mut id).map_err(|e| format!("no randomness for a key id: {e}"))?;
    Ok((
        format!("key-{}", hex::encode(id)),
        format!("pmk_{}", hex::encode(secret)),
    ))
}

/// Failed authentications allowed to one client address within [`AUTH_WINDOW`].
pub const AUTH_FAILURES_MAX: u32 = 20;
/// The window failed authentications are counted over.
pub const AUTH_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at most (beyond, those whose window ended are forgotten first).
const THROTTLE_ADDRESSES_MAX: usize = 100_000;

/// Counts failed authentications per client address: after [`AUTH_FAILURES_MAX`] failures in
/// a window, every request from that address is refused with 429 until the window ends,
/// whatever key it carries (else a guesser would go on guessing); other addresses are not
/// affected.
#[derive(Debug)]
pub struct AuthThrottle {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Addresses at the limit (or past it, until looked at again): while none is, a request
    /// is let through without taking the lock.
    blocked: AtomicUsize,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::new(AUTH_FAILURES_MAX, AUTH_WINDOW)
    }
}

impl AuthThrottle {
    pub fn new(max: u32, window: Duration) -> AuthThrottle {
        AuthThrottle {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
            blocked: AtomicUsize::new(0),
        }
    }

    /// 429 (with the seconds until the window ends) if `ip` failed too often.
    pub fn check(&self, ip: IpAddr) -> Result<(), ServiceError> {
        if self.blocked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&ip) {
            Some(&(start, failures)) if failures >= self.max => {
                let left = self.window.saturating_sub(start.elapsed());
                if left.is_zero() {
                    seen.remove(&ip);
                    self.blocked.fetch_sub(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(ServiceError::too_many_requests(
                    format!(
                        "too many failed authentications from {ip}: {failures} within {} s",
                        self.window.as_secs()
                    ),
                    left.as_secs_f64().ceil().max(1.0) as u64,
                ))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= THROTTLE_ADDRESSES_MAX && !seen.contains_key(&ip) {
            let window = self.window;
            seen.retain(|_, (start, _)| start.elapsed() < window);
            if seen.len() >= THROTTLE_ADDRESSES_MAX {
                // Still full of live windows: the oldest goes.
                if let Some(oldest) = seen.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k) {
                    seen.remove(&oldest);
                }
            }
            let max = self.max;
            let blocked = seen.values().filter(|(_, f)| *f >= max).count();
            self.blocked.store(blocked, Ordering::Relaxed);
        }
        let entry = seen.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            if entry.1 >= self.max {
                self.blocked.fetch_sub(1, Ordering::Relaxed);
            }
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 == self.max {
            self.blocked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every active key, indexed by hash, with the secret the hashes are made with.
#[derive(Debug)]
pub struct KeyRing {
    secret: KeySecret,
    by_hash: HashMap<[u8; 32], KeyRecord>,
    /// Failed authentications by client address.
    pub throttle: AuthThrottle,
}

impl KeyRing {
    /// The ring of the active records (revoked ones, and hashes of an older scheme, are left
    /// out: they never match).
    pub fn new(secret: KeySecret, records: Vec<KeyRecord>) -> KeyRing {
        let mut ring = KeyRing {
            secret,
            by_hash: HashMap::new(),
            throttle: AuthThrottle::default(),
        };
        for r in records {
            ring.insert(r);
        }
        ring
    }

    pub fn secret(&self) -> &KeySecret {
        &self.secret
    }

    /// Adds (or replaces, by id) a key; an inactive record only removes the id's key.
    pub fn insert(&mut self, record: KeyRecord) {
        self.by_hash.retain(|_, r| r.id != record.id);
        let mut hash = [0u8; 32];
        if record.is_active() && hex::decode_to_slice(&record.hash, &mut hash).is_ok() {
            self.by_hash.insert(hash, record);
        }
    }

    /// Removes the key `id` at once; its record, marked revoked at `now_ms`, to store.
    pub fn revoke(&mut self, id: &str, now_ms: i64) -> Option<KeyRecord> {
        let hash = *self.by_hash.iter().find(|(_, r)| r.id == id)?.0;
        let mut record = self.by_hash.remove(&hash)?;
        record.revoked_ms = Some(now_ms);
        Some(record)
    }

    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.by_hash.values()
    }

    pub fn by_id(&self, id: &str) -> Option<&KeyRecord> {
        self.by_hash.values().find(|r| r.id == id)
    }

    /// The caller a bearer key stands for: one HMAC of the presented key, one hash-map lookup
    /// by it, and a constant-time comparison with the stored hash (kept decoded, as the map's
    /// key).
    pub fn authenticate(&self, key: &str) -> Result<Caller, ServiceError> {
        let presented = self.secret.hash(key);
        let (stored, record) = self
            .by_hash
            .get_key_value(&presented)
            .ok_or_else(|| ServiceError::unauthorized("unknown API key"))?;
        if !bool::from(stored.ct_eq(&presented)) {
            return Err(ServiceError::unauthorized("unknown API key"));
        }
        Ok(Caller {
            key_id: record.id.clone(),
            role: record.role,
            accounts: record.accounts.clone(),
            sources: record.sources.clone(),
        })
    }

    /// [`KeyRing::authenticate`] for a client at `ip` (if known): refused with 429 while the
    /// address is throttled, and a failure counted against it.
    pub fn authenticate_from(&self, key: &str, ip: Option<IpAddr>) -> Result<Caller, ServiceError> {
        if let Some(ip) = ip {
            self.throttle.check(ip)?;
        }
        let result = self.authenticate(key);
        if let (Err(_), Some(ip)) = (&result, ip) {
            self.throttle.failed(ip);
        }
        result
    }
}

/// The key from an `Authorization: Bearer KEY` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, ServiceError> {
    let value = header.ok_or_else(|| {
        ServiceError::unauthorized("missing Authorization: Bearer <API key> header")
    })?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or_else(|| ServiceError::unauthorized("Authorization must be `Bearer <API key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ServiceError::unauthorized(
            "Authorization must be `Bearer <API key>`",
        ));
    }
    Ok(key.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use sha2::Digest;

    fn secret() -> KeySecret {
        KeySecret::from_hex(&"ab".repeat(32), "test").unwrap()
    }

    #[test]
    fn keys_authenticate_by_keyed_hash_only() {
        let (id, key) = generate_key().unwrap();
        assert!(key.starts_with("pmk_") && key.len() == 68);
        let mut record = secret().record(id.clone(), Role::Trader, &key, 0);
        record.accounts = vec!["alice".into()];
        let ring = KeyRing::new(secret(), vec![record.clone()]);
        let caller = ring.authenticate(&key).unwrap();
        assert_eq!(caller.key_id, id);
        assert!(caller.may_access("alice") && !caller.may_access("bob"));
        assert_eq!(
            ring.authenticate("pmk_wrong").unwrap_err().kind,
            ErrorKind::Unauthorized
        );
        assert!(caller.require(&[Role::Admin]).is_err());
        assert!(bearer(Some("Basic abc")).is_err() && bearer(None).is_err());
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        // Not the plain SHA-256 of the key; and under another secret the same key is unknown.
        assert_ne!(record.hash, hex::encode(Sha256::digest(key.as_bytes())));
        let other = KeyRing::new(KeySecret::random().unwrap(), vec![record.clone()]);
        assert_eq!(
            other.authenticate(&key).unwrap_err().kind,
            ErrorKind::Unauthorized
        );
        // A record of the older plain-SHA-256 scheme never matches.
        let legacy = KeyRecord {
            hash: hex::encode(Sha256::digest(key.as_bytes())),
            scheme: HashScheme::Sha256,
            ..record
        };
        let ring = KeyRing::new(secret(), vec![legacy]);
        assert!(ring.authenticate(&key).is_err());
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = KeySecret::new(b"Jefe".to_vec());
        assert_eq!(
            hex::encode(s.hash("what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_revoked_key_no_longer_authenticates() {
        let (id, key) = generate_key().unwrap();
        let mut ring = KeyRing::new(
            secret(),
            vec![secret().record(id.clone(), Role::Admin, &key, 0)],
        );
        assert!(ring.authenticate(&key).is_ok());
        let revoked = ring.revoke(&id, 42).unwrap();
        assert_eq!(revoked.revoked_ms, Some(42));
        assert!(ring.authenticate(&key).is_err());
        // Loaded again from the store, the revoked record stays out.
        let ring = KeyRing::new(secret(), vec![revoked]);
        assert!(ring.authenticate(&key).is_err());
    }

    #[test]
    fn admin_key_strength_rule() {
        for weak in [
            "secret",
            "0123456789abcdef0123456789abcde", // 31 hex digits: 124 bits
            "ABCDEFGHIJKLMNOPQRSTU",           // 21 base64 characters: 126 bits
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // long, one character
            "abababababababababababababababababab",
            "0123456789abcdef 0123456789abcdef", // a space
        ] {
            assert!(check_admin_key(weak).is_err(), "{weak} accepted");
        }
        for strong in [
            "0123456789abcdef0123456789abcdef", // 32 hex digits: 128 bits
            "ABCDEFGHIJKLMNOPQRSTUV",           // 22 base64 characters: 132 bits
            "test-admin-key-0123456789",
            "p@ss!W0rd#2026$Key%^&*", // 22 printable: 144 bits
        ] {
            assert!(check_admin_key(strong).is_ok(), "{strong} refused");
        }
    }

    #[test]
    fn throttle_refuses_one_address_after_too_many_failures() {
        let t = AuthThrottle::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
            t.failed(a);
        }
        let e = t.check(a).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooManyRequests);
        assert!(e.retry_after.is_some_and(|s| (1..=60).contains(&s)));
        assert!(t.check(b).is_ok());
        // The window over, the address may try again, and the fast path is back.
        let t = AuthThrottle::new(1, Duration::from_millis(20));
        t.failed(a);
        assert!(t.check(a).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(t.check(a).is_ok());
        assert_eq!(t.blocked.load(Ordering::Relaxed), 0);
        t.failed(a);
        assert!(t.check(a).is_err());
    }
}
