//! Signed settlement messages: an account's margin figures as an EIP-712 `MarginUpdate`
//! signed with the service's secp256k1 key, so an EVM contract can check them with ecrecover.
//!
//! The key comes from `PMARGIN_SIGNING_KEY` (hex, 32 bytes), else from `signing.key` in the
//! data directory (generated there on first start, mode 0600), else (no data directory) a
//! fresh key per start. Nonces are strictly increasing: they continue from the wall clock in
//! microseconds at start, so they also keep increasing across restarts.
//!
//! Liquidations: every `liquidation_fill` the engine produced for an event of the durable log
//! becomes an EIP-712 `LiquidationInstruction` signed with the same key
//! (`GET /v1/liquidations?from=SEQ`). They are derived from the log alone, so a restart (or
//! another replica with the same key) re-creates exactly the same signed messages: the fills are
//! the outputs stored with each event (its [`crate::store::EventRecord`]), `timestamp` is the
//! event's logged time (seconds), `paramsVersion` the version in force after the event (also
//! stored with it), and the nonce is
//! `event_seq * 2^20 + i` for the `i`-th fill of the event (strictly increasing along the log).
//! Liquidation nonces are their own sequence, apart from the margin updates' (a contract keeps
//! one last nonce per signer and message type). Signatures are deterministic (RFC 6979).
//!
//! Seizures of collateral held in other protocols: every `liquidation_seize` becomes an
//! EIP-712 `SeizeInstruction` for the protocol's controller, signed with the same key and
//! derived from the log the same way: `liquidationId` is the event's sequence number,
//! `paramsVersion` the version in force after it, the nonce `event_seq * 2^20 + i` for the
//! `i`-th seizure of the event (a sequence of its own, as the message type is), and the
//! `deadline` the event's logged time plus [`SEIZE_DEADLINE_S`].

use crate::error::ServiceError;
use crate::store::Store;
use pmargin_core::input::portfolio::ExternalPosition;
use pmargin_engine::{AccountRisk, Output};
use pmargin_settlement::{
    account_id, instrument_id, to_fixed, to_fixed_unsigned, Eip712Domain, LiquidationInstruction,
    MarginUpdate, NonceCounter, SeizeInstruction, SettlementMessage, SignedMessage, Signer,
};
use serde::Serialize;
use std::path::Path as FsPath;
use std::sync::Mutex;

/// The EIP-712 domain settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementConfig {
    pub chain_id: u64,
    pub verifying_contract: [u8; 20],
    /// The secret key (overrides the environment and the data directory).
    pub signing_key: Option<[u8; 32]>,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            chain_id: 31337,
            verifying_contract: [0; 20],
            signing_key: None,
        }
    }
}

pub const SIGNING_KEY_ENV: &str = "PMARGIN_SIGNING_KEY";

pub struct Settlement {
    pub domain: Eip712Domain,
    signer: Mutex<Signer>,
    /// The signed liquidation instructions derived from the log so far.
    liquidations: Mutex<LiquidationLog>,
}

/// Fills per event at most (the nonce's low bits number the fills of one event).
pub const FILLS_PER_EVENT: u64 = 1 << 20;

/// The nonce of the `index`-th liquidation fill of event `event_seq`.
pub fn liquidation_nonce(event_seq: u64, index: u64) -> Option<u64> {
    (index < FILLS_PER_EVENT)
        .then(|| event_seq.checked_mul(FILLS_PER_EVENT)?.checked_add(index))
        .flatten()
}

/// One signed liquidation instruction and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignedLiquidation {
    /// The event of the log whose application produced the fill.
    pub event_seq: u64,
    pub account: String,
    pub instrument: String,
    pub signed: SignedMessage,
}

/// How long after its event a seize instruction may be executed: long enough for a relayer
/// that was down for hours to deliver it, short enough that a controller never acts on a day-old
/// liquidation.
pub const SEIZE_DEADLINE_S: u64 = 86_400;

/// One signed seize instruction and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignedSeize {
    /// The event of the log whose liquidation round seized (the message's `liquidationId`).
    pub event_seq: u64,
    pub account: String,
    /// The account that receives the collateral (the liquidator).
    pub receiver: String,
    /// The part seized, in the portfolio format (its amount or liquidity is what moves).
    pub position: ExternalPosition,
    /// Its value when it was seized (USD; information, not signed).
    pub value: f64,
    pub signed: SignedMessage,
}

/// The instructions signed from the durable log so far.
#[derive(Default)]
struct LiquidationLog {
    /// The last event read.
    last_seq: u64,
    items: Vec<SignedLiquidation>,
    seizes: Vec<SignedSeize>,
}

/// A page of instructions: those of whole events from `from` on.
#[derive(Debug, Clone, PartialEq)]
pub struct LiquidationPage {
    pub fills: Vec<SignedLiquidation>,
    pub seizes: Vec<SignedSeize>,
    /// The last event of the log read.
    pub last: u64,
    /// The last event in the page, when more instructions follow it.
    pub more_after: Option<u64>,
}

/// How many of two lists of instructions, each in event order (`seq_a`, `seq_b`: an
/// instruction's event), make a page of about `limit`: whole events, in event order, until the
/// page holds `limit` or more. Returns how many it takes from each, and its last event.
fn whole_events<A, B>(
    a: &[A],
    seq_a: impl Fn(&A) -> u64,
    b: &[B],
    seq_b: impl Fn(&B) -> u64,
    limit: usize,
) -> (usize, usize, Option<u64>) {
    let (mut i, mut j, mut through) = (0, 0, None);
    while i + j < limit {
        let next = match (a.get(i).map(&seq_a), b.get(j).map(&seq_b)) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => break,
        };
        while a.get(i).is_some_and(|x| seq_a(x) == next) {
            i += 1;
        }
        while b.get(j).is_some_and(|y| seq_b(y) == next) {
            j += 1;
        }
        through = Some(next);
    }
    (i, j, through)
}

/// Events read from the store at a time while catching up.
const CATCH_UP_PAGE: usize = 1024;

fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    hex::decode(t)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a signing key must be 32 bytes of hex".to_string())
}

fn random_key() -> Result<[u8; 32], String> {
    let mut k = [0u8; 32];
    getrandom::getrandom(&mut k).map_err(|e| format!("no randomness: {e}"))?;
    Ok(k)
}

impl Settlement {
    pub fn open(config: &SettlementConfig, dir: Option<&FsPath>) -> Result<Settlement, String> {
        let secret = match (config.signing_key, std::env::var(SIGNING_KEY_ENV).ok(), dir) {
            (Some(k), _, _) => k,
            (None, Some(env), _) => {
                parse_key(&env).map_err(|e| format!("{SIGNING_KEY_ENV}: {e}"))?
            }
            (None, None, Some(dir)) => {
                let path = dir.join("signing.key");
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse_key(&text).map_err(|e| format!("{}: {e}", path.display()))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let k = random_key()?;
                        crate::store::write_file_atomic(&path, &hex::encode(k))?;
                        #[cfg(unix)]
                        {
                            use std::os::unix::fs::PermissionsExt;
                            let _ = std::fs::set_permissions(
                                &path,
                                std::fs::Permissions::from_mode(0o600),
                            );
                        }
                        k
                    }
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
            (None, None, None) => random_key()?,
        };
        let start = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0);
        let signer = Signer::with_nonces(secret, NonceCounter::resume_after(start))
            .map_err(|e| format!("signing key: {e}"))?;
        Ok(Settlement {
            domain: Eip712Domain::pmargin(config.chain_id, config.verifying_contract),
            signer: Mutex::new(signer),
            liquidations: Mutex::new(LiquidationLog::default()),
        })
    }

    /// Signs a message with the service key without touching the margin updates' nonces.
    fn sign_detached(&self, message: SettlementMessage) -> Result<SignedMessage, String> {
        message.validate().map_err(|e| e.to_string())?;
        let digest = message.digest(&self.domain);
        let signer = self.signer.lock().unwrap_or_else(|p| p.into_inner());
        let signature = signer.sign_digest(&digest).map_err(|e| e.to_string())?;
        Ok(SignedMessage {
            payload: message,
            digest,
            signature,
            signer: signer.address(),
        })
    }

    /// The signed seize instructions of the seizures of one applied event.
    fn seize_instructions(
        &self,
        event_seq: u64,
        ts_ms: i64,
        params_version: u64,
        outputs: &[Output],
    ) -> Result<Vec<SignedSeize>, String> {
        let seizures = outputs.iter().filter_map(|o| match o {
            Output::LiquidationSeize {
                account,
                receiver,
                position,
                value,
            } => Some((account, receiver, position, *value)),
            _ => None,
        });
        let mut out = Vec::new();
        for (index, (account, receiver, position, value)) in seizures.enumerate() {
            let nonce = liquidation_nonce(event_seq, index as u64).ok_or_else(|| {
                format!("event {event_seq}: too many seizures for the nonce scheme")
            })?;
            let message = SeizeInstruction::for_seized(account, position, receiver)
                .map_err(|e| format!("event {event_seq}: seizure from {account}: {e}"))?;
            if message.amount == 0 {
                // Below 18 decimals: nothing to instruct (the nonce stays used).
                continue;
            }
            let message = SeizeInstruction {
                liquidation_id: event_seq,
                params_version,
                nonce,
                deadline: u64::try_from(ts_ms / 1000)
                    .unwrap_or(0)
                    .saturating_add(SEIZE_DEADLINE_S),
                ..message
            };
            out.push(SignedSeize {
                event_seq,
                account: account.clone(),
                receiver: receiver.clone(),
                position: position.clone(),
                value,
                signed: self.sign_detached(message.into())?,
            });
        }
        Ok(out)
    }

    /// The signed instructions of the fills of one applied event.
    fn instructions(
        &self,
        event_seq: u64,
        ts_ms: i64,
        params_version: u64,
        outputs: &[Output],
    ) -> Result<Vec<SignedLiquidation>, String> {
        let mut out = Vec::new();
        let fills = outputs.iter().filter_map(|o| match o {
            Output::LiquidationFill {
                account,
                instrument,
                size,
                price,
                penalty,
            } => Some((account, instrument, *size, *price, *penalty)),
            _ => None,
        });
        for (index, (account, instrument, size, price, penalty)) in fills.enumerate() {
            let nonce = liquidation_nonce(event_seq, index as u64).ok_or_else(|| {
                format!("event {event_seq}: too many liquidation fills for the nonce scheme")
            })?;
            let amount = |what: &str, e: pmargin_settlement::Error| {
                format!("event {event_seq}: liquidation of {account} {instrument}: {what}: {e}")
            };
            let size = to_fixed(size).map_err(|e| amount("size", e))?;
            if size == 0 {
                // Below the fixed-point resolution: nothing to instruct (the nonce stays used).
                continue;
            }
            let message = LiquidationInstruction {
                account: account_id(account),
                instrument: instrument_id(instrument),
                size,
                price: to_fixed_unsigned(price.max(0.0)).map_err(|e| amount("price", e))?,
                penalty: to_fixed_unsigned(penalty.max(0.0)).map_err(|e| amount("penalty", e))?,
                params_version,
                nonce,
                timestamp: u64::try_from(ts_ms / 1000).unwrap_or(0),
            };
            out.push(SignedLiquidation {
                event_seq,
                account: account.clone(),
                instrument: instrument.clone(),
                signed: self.sign_detached(message.into())?,
            });
        }
        Ok(out)
    }

    /// Reads the records of the durable events not seen yet (blocking: the store).
    fn catch_up(&self, store: &Mutex<Box<dyn Store>>) -> Result<u64, String> {
        let mut log = self.liquidations.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Only the events with a fill are read (the store searches the rest).
            let (page, through) = store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .liquidation_events_page(log.last_seq + 1, CATCH_UP_PAGE)?;
            let full = page.len() >= CATCH_UP_PAGE;
            for logged in page {
                if logged.seq <= log.last_seq {
                    return Err(format!(
                        "event log: event {} follows {}",
                        logged.seq, log.last_seq
                    ));
                }
                let record = logged.record.as_ref().ok_or_else(|| {
                    format!(
                        "event log: event {} has no stored outputs (logged by an earlier build; a restart stores them)",
                        logged.seq
                    )
                })?;
                let (seq, ts_ms, version) = (logged.seq, logged.ts_ms, record.params_version);
                let made = self.instructions(seq, ts_ms, version, &record.outputs)?;
                let seized = self.seize_instructions(seq, ts_ms, version, &record.outputs)?;
                log.items.extend(made);
                log.seizes.extend(seized);
                log.last_seq = logged.seq;
            }
            log.last_seq = log.last_seq.max(through);
            if !full {
                return Ok(log.last_seq);
            }
        }
    }

    /// After catching up with the log: the instructions (fills and seizures together) of
    /// events `from..`, about `limit` of them but whole events only (a page ends at an event's
    /// last instruction).
    pub fn liquidations(
        &self,
        store: &Mutex<Box<dyn Store>>,
        from: u64,
        limit: usize,
    ) -> Result<LiquidationPage, String> {
        let last = self.catch_up(store)?;
        let log = self.liquidations.lock().unwrap_or_else(|p| p.into_inner());
        let fills = &log.items[log.items.partition_point(|l| l.event_seq < from)..];
        let seizes = &log.seizes[log.seizes.partition_point(|l| l.event_seq < from)..];
        let (i, j, through) = whole_events(fills, |f| f.event_seq, seizes, |s| s.event_seq, limit);
        let more = i < fills.len() || j < seizes.len();
        Ok(LiquidationPage {
            fills: fills[..i].to_vec(),
            seizes: seizes[..j].to_vec(),
            last,
            more_after: through.filter(|_| more),
        })
    }

    /// An account's figures `risk` (durable ones: a signed message is an on-chain claim) as a
    /// `MarginUpdate` signed now, with the next margin-update nonce.
    pub fn sign_margin_update(
        &self,
        account: &str,
        risk: &AccountRisk,
        params_version: u64,
    ) -> Result<SignedMessage, ServiceError> {
        let fixed = |e: pmargin_settlement::Error| ServiceError::unprocessable(e.to_string());
        let status = match risk.status.as_str() {
            "healthy" => 0,
            "restricted" => 1,
            "liquidatable" => 2,
            _ => 3,
        };
        let mut update = MarginUpdate {
            account: account_id(account),
            equity: to_fixed(risk.equity).map_err(fixed)?,
            margin_balance: to_fixed(risk.margin_balance).map_err(fixed)?,
            initial_margin: to_fixed_unsigned(risk.initial_margin.max(0.0)).map_err(fixed)?,
            maintenance_margin: to_fixed_unsigned(risk.maintenance_margin.max(0.0))
                .map_err(fixed)?,
            status,
            params_version,
            nonce: 0,
            timestamp: u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
        };
        let mut signer = self.signer.lock().unwrap_or_else(|p| p.into_inner());
        update.nonce = signer.next_nonce().map_err(fixed)?;
        signer
            .sign_margin_update(&self.domain, &update)
            .map_err(|e| ServiceError::internal(e.to_string()))
    }

    pub fn address(&self) -> [u8; 20] {
        self.signer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .address()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(a: &[u64], b: &[u64], limit: usize) -> (usize, usize, Option<u64>) {
        whole_events(a, |x| *x, b, |y| *y, limit)
    }

    /// Pages hold whole events of both lists, in event order, and end once they hold `limit`.
    #[test]
    fn a_page_takes_whole_events_of_fills_and_seizures() {
        // Event 3: two fills and a seizure; event 5: a seizure alone; event 7: a fill.
        let (fills, seizes) = ([3, 3, 7], [3, 5]);
        assert_eq!(page(&fills, &seizes, 1), (2, 1, Some(3)));
        assert_eq!(page(&fills, &seizes, 3), (2, 1, Some(3)));
        assert_eq!(page(&fills, &seizes, 4), (2, 2, Some(5)));
        assert_eq!(page(&fills, &seizes, 100), (3, 2, Some(7)));
        assert_eq!(page(&fills[2..], &seizes[1..], 1), (0, 1, Some(5)));
        assert_eq!(page(&[], &[], 10), (0, 0, None));
    }
}
