//! `pmargin serve --demo`: the bundled book and real prices replayed into the oracle.
//!
//! The book is the CLI's demo book; prices are the daily closes of `data/history.csv`, replayed
//! as returns from the demo market's prices (so the book sees real volatility at today's
//! levels), each day split into a few ticks, each tick quoted by three venues a few basis
//! points apart, at an accelerated pace.

use crate::service::state::{now_ms, AppState};
use crate::store::Genesis;
use pmargin_engine::oracle::{OracleConfig, StablePriceConfig};
use pmargin_engine::{EngineConfig, Event};
use pmargin_governance::{public_key_of, Committee, CommitteeMember};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const PORTFOLIO: &str = include_str!("../../cli/demo/portfolio.json");
pub const MARKET: &str = include_str!("../../cli/demo/market.json");
pub const PARAMS: &str = include_str!("../../cli/demo/params.json");
pub use pmargin_backtest::data::HISTORY_CSV as HISTORY;

/// The stable price's largest move per second by default (relative): 0.002 %/s, 0.12 % a
/// minute, 7.2 % an hour (Mango v4's defence after the 2022-10 exploit). A pump of any size
/// raises what collateral counts for, for withdrawals and new risk, by at most 1.2 % in ten
/// minutes; an honest rally is counted in full within hours.
pub const DEFAULT_STABLE_PRICE_RATE: f64 = 0.00002;

/// The engine settings of the service: USDC settles, an oracle aggregates venue quotes, with
/// the stable price on at [`DEFAULT_STABLE_PRICE_RATE`].
pub fn engine_config(insurance_fund: f64) -> EngineConfig {
    engine_config_with(insurance_fund, Some(DEFAULT_STABLE_PRICE_RATE))
}

/// [`engine_config`] with the stable price's rate per second (`None`: no stable price).
pub fn engine_config_with(insurance_fund: f64, stable_price_rate: Option<f64>) -> EngineConfig {
    EngineConfig {
        insurance_fund,
        oracle: Some(OracleConfig {
            stable_price: stable_price_rate.map(|max_move_per_second| StablePriceConfig {
                max_move_per_second,
            }),
            ..OracleConfig::default()
        }),
        ..EngineConfig::default()
    }
}

/// The demo book with a funded insurance fund.
pub fn demo_genesis() -> Genesis {
    Genesis {
        portfolio: PORTFOLIO.into(),
        market: MARKET.into(),
        params: PARAMS.into(),
        config: engine_config(1_000_000.0),
    }
}

/// No accounts yet; the demo market and parameters (accounts arrive with deposits).
pub fn empty_genesis() -> Genesis {
    Genesis {
        portfolio: r#"{"accounts": []}"#.into(),
        market: MARKET.into(),
        params: PARAMS.into(),
        config: engine_config(0.0),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// Wall time per history day.
    pub day_ms: u64,
    /// Ticks per day (geometric interpolation between closes).
    pub ticks_per_day: usize,
    /// Replay only the last `days` days of the history (then loop).
    pub days: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            day_ms: 1000,
            ticks_per_day: 4,
            days: 365,
        }
    }
}

/// Daily closes per column of the history: (underlying names, rows of prices).
pub fn history() -> Result<(Vec<String>, Vec<Vec<f64>>), String> {
    let mut lines = HISTORY.lines();
    let header = lines.next().ok_or("history.csv is empty")?;
    let names: Vec<String> = header.split(',').skip(1).map(str::to_string).collect();
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let row: Result<Vec<f64>, _> = line.split(',').skip(1).map(str::parse::<f64>).collect();
        let row = row.map_err(|e| format!("history.csv line {}: {e}", n + 2))?;
        if row.len() != names.len() || row.iter().any(|p| !(p.is_finite() && *p > 0.0)) {
            return Err(format!(
                "history.csv line {}: expected {} positive prices",
                n + 2,
                names.len()
            ));
        }
        rows.push(row);
    }
    Ok((names, rows))
}

/// The quotes of the replay: per tick, per underlying, three venues.
pub fn ticks(start: &[f64], rows: &[Vec<f64>], ticks_per_day: usize) -> Vec<Vec<f64>> {
    let mut level = start.to_vec();
    let mut out = Vec::new();
    for pair in rows.windows(2) {
        let step: Vec<f64> = pair[0]
            .iter()
            .zip(&pair[1])
            .map(|(a, b)| (b / a).powf(1.0 / ticks_per_day.max(1) as f64))
            .collect();
        for _ in 0..ticks_per_day.max(1) {
            for (l, s) in level.iter_mut().zip(&step) {
                *l *= s;
            }
            out.push(level.clone());
        }
    }
    out
}

/// Feeds the oracle until the task is aborted.
pub async fn feed(state: Arc<AppState>, config: FeedConfig) {
    let Ok((names, rows)) = history() else { return };
    let rows = &rows[rows.len().saturating_sub(config.days.max(2))..];
    let sources = [("venue-a", 0.9998), ("venue-b", 1.0), ("venue-c", 1.0003)];
    let pause = Duration::from_millis((config.day_ms / config.ticks_per_day.max(1) as u64).max(1));
    loop {
        let start: Vec<f64> = {
            let engine = state.engine();
            names
                .iter()
                .map(|u| engine.market().prices.get(u).copied().unwrap_or(1.0))
                .collect()
        };
        for tick in ticks(&start, rows, config.ticks_per_day) {
            let ts_ms = now_ms();
            let quotes = names.iter().zip(&tick).flat_map(|(u, price)| {
                sources.iter().map(move |(source, skew)| Event::Quote {
                    source: (*source).into(),
                    underlying: u.clone(),
                    price: price * skew,
                    ts_ms,
                    confidence: None,
                    weight: None,
                })
            });
            // A tick's quotes go to the writer together: one commit, one refresh of readers.
            // A refused tick (writes suspended after a storage failure, a full queue) is
            // skipped: the feed goes on once the service takes writes again.
            let _ = state.submit_all(quotes.collect(), "demo-feed").await;
            tokio::time::sleep(pause).await;
        }
    }
}

/// The demo's risk committee: three members `m1`..`m3`, two of three to approve, a one-minute
/// timelock and a guardian. Their ed25519 secret keys are PEM files (PKCS#8, mode 0600) in
/// `<data dir>/demo-committee/`, made on the first demo start and reused after: for the demo
/// only, so a newcomer can sign approvals (e.g. with `openssl pkeyutl`).
#[derive(Debug, Clone)]
pub struct DemoCommittee {
    pub committee: Committee,
    /// Where the keys are.
    pub dir: PathBuf,
}

pub const DEMO_MEMBERS: [&str; 3] = ["m1", "m2", "m3"];
pub const DEMO_THRESHOLD: usize = 2;
pub const DEMO_TIMELOCK_MS: i64 = 60_000;

/// PKCS#8 prefix of an ed25519 private key (RFC 8410) before its 32-byte seed.
const PKCS8_ED25519: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An ed25519 seed as a PEM private key.
pub fn ed25519_pem(seed: &[u8; 32]) -> String {
    let der = [PKCS8_ED25519.as_slice(), seed].concat();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64(&der)
    )
}

/// The seed of a PEM written by [`ed25519_pem`].
pub fn ed25519_seed(pem: &str) -> Option<[u8; 32]> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = unbase64(body.trim())?;
    (der.len() == 48 && der[..16] == PKCS8_ED25519)
        .then(|| der[16..].try_into().ok())
        .flatten()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut n, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&b| b == c)? as u32;
        n = n << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((n >> bits) as u8);
            n &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn key_file(path: &Path) -> Result<[u8; 32], String> {
    match std::fs::read_to_string(path) {
        Ok(text) => ed25519_seed(&text)
            .ok_or_else(|| format!("{}: not an ed25519 private key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
            crate::store::write_file_atomic(path, &ed25519_pem(&seed))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
            Ok(seed)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The demo committee of a data directory (keys made on first use).
pub fn demo_committee(data_dir: &Path) -> Result<DemoCommittee, String> {
    let dir = data_dir.join("demo-committee");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let members = DEMO_MEMBERS
        .iter()
        .map(|id| {
            let seed = key_file(&dir.join(format!("{id}.pem")))?;
            Ok(CommitteeMember {
                id: id.to_string(),
                public_key: public_key_of(&seed),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let guardian = public_key_of(&key_file(&dir.join("guardian.pem"))?);
    let committee = Committee::new(members, DEMO_THRESHOLD, DEMO_TIMELOCK_MS, Some(guardian))
        .map_err(|e| format!("demo committee: {e}"))?;
    Ok(DemoCommittee { committee, dir })
}

impl DemoCommittee {
    /// What to print at start: the committee and how to try governance with curl.
    pub fn help(&self, addr: &str) -> String {
        let d = self.dir.display();
        format!(
            "  demo committee: {m} of {n} ({ids}), timelock {t} s, guardian key; ed25519 keys (demo only): {d}/{{m1,m2,m3,guardian}}.pem\n\
             \x20 try governance (KEY = the admin key: in <data dir>/admin_key after the first start, or PMARGIN_ADMIN_KEY):\n\
             \x20   curl -s -H \"Authorization: Bearer $KEY\" http://{addr}/v1/params | jq '{{params: (.params | .version += 1), rationale: \"try\"}}' > p.json\n\
             \x20   curl -s -H \"Authorization: Bearer $KEY\" -d @p.json http://{addr}/v1/proposals | jq -r .proposal.hash   # -> H, id 1\n\
             \x20   D=$(curl -s -H \"Authorization: Bearer $KEY\" http://{addr}/v1/governance | jq -r .deployment_id)\n\
             \x20   (printf pmargin-proposal-v2; printf %016x ${{#D}} | xxd -r -p; printf %s \"$D\"; echo $H | xxd -r -p) > m.bin   # then, for m1 and m2:\n\
             \x20   SIG=$(openssl pkeyutl -sign -rawin -inkey {d}/m1.pem -in m.bin | xxd -p -c 64)\n\
             \x20   curl -s -H \"Authorization: Bearer $KEY\" -d \"{{\\\"member\\\":\\\"m1\\\",\\\"signature\\\":\\\"$SIG\\\"}}\" http://{addr}/v1/proposals/1/approvals\n\
             \x20   curl -s -X POST -H \"Authorization: Bearer $KEY\" http://{addr}/v1/proposals/1/activate   # after the timelock\n\
             \x20   curl -s -H \"Authorization: Bearer $KEY\" http://{addr}/v1/liquidations   # signed liquidation instructions\n",
            m = self.committee.threshold,
            n = self.committee.members.len(),
            ids = DEMO_MEMBERS.join(", "),
            t = self.committee.timelock_ms / 1000,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_inputs_load_and_history_replays_as_returns() {
        crate::service::state::genesis_engine(&demo_genesis()).unwrap();
        crate::service::state::genesis_engine(&empty_genesis()).unwrap();
        let (names, rows) = history().unwrap();
        assert_eq!(names, ["BTC", "ETH"]);
        let t = ticks(&[100.0, 10.0], &rows[rows.len() - 3..], 2);
        assert_eq!(t.len(), 4);
        let last = &rows[rows.len() - 1];
        let first = &rows[rows.len() - 3];
        assert!((t[3][0] / 100.0 - last[0] / first[0]).abs() < 1e-9);
    }

    #[test]
    fn demo_committee_keys_are_made_once_and_sign_approvals() {
        let dir =
            std::env::temp_dir().join(format!("pmargin-demo-committee-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = demo_committee(&dir).unwrap();
        let again = demo_committee(&dir).unwrap();
        assert_eq!(first.committee, again.committee);
        assert_eq!(first.committee.threshold, 2);
        assert!(first.committee.guardian.is_some());
        // The PEM's seed is the member's key: its approvals verify.
        let pem = std::fs::read_to_string(first.dir.join("m2.pem")).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let seed = ed25519_seed(&pem).unwrap();
        assert_eq!(
            public_key_of(&seed),
            first.committee.member("m2").unwrap().public_key
        );
        let active = pmargin_core::Params::parse("p", PARAMS).unwrap();
        let mut g = pmargin_governance::Governance::new(first.committee.clone(), active.clone(), 0)
            .unwrap();
        let mut next = g.active().clone();
        next.version += 1;
        let proposal =
            pmargin_governance::Proposal::new(1, next, "try", "admin", 0, Some(g.active()))
                .unwrap();
        g.submit(proposal.clone(), 0).unwrap();
        g.set_deployment_id("demo", 0);
        let signature = pmargin_governance::sign_approval(&seed, "demo", &proposal.hash);
        let approval = pmargin_governance::Approval {
            member: "m2".into(),
            signature,
        };
        assert_eq!(g.approve(1, approval, 0), Ok(1));
        assert!(first.help("127.0.0.1:8080").contains("2 of 3"));
        // base64 round trip on every length.
        for n in 0..10 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(unbase64(&base64(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
