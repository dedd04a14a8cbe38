//! Per-account margin reports and what-if answers reused until an event affecting them is
//! applied, and single flights sharing concurrent computations (see [`ReportCache`]).

use bytes::Bytes;
use pmargin_engine::Event;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Per-account margin reports (with the liquidation-price search) reused until something that
/// affects the account is applied: an event on the account itself (deposit, withdrawal, trade
/// as either side), or anything that moves every account (prices, marks, vols, parameters,
/// settlements, funding, liquidation rounds, oracle quotes that move an index). The versions
/// are updated by the writer while it holds the engine's write lock, and read under the read
/// lock, so a version and the engine state it describes always agree.
///
/// Reports are kept serialized ([`ReportEntry::tail`]), so a hit costs a copy, not a
/// serialization. Concurrent misses of one account share one computation ([`Flights`]).
///
/// An oracle quote that moves an index is a *soft* change: a report computed less than
/// [`MAX_STALE`] ago whose account saw nothing else since may still be served (labelled
/// `report_stale`) while one recomputation runs; everything else is a *hard* change, after
/// which a read waits for the new report.
#[derive(Default)]
pub struct ReportCache {
    versions: RwLock<Versions>,
    reports: RwLock<HashMap<String, Arc<ReportEntry>>>,
    /// Report computations under way, by account.
    pub flights: Flights<String, Arc<ReportEntry>>,
    /// The last response built for each account at durable inputs, by the version it was built
    /// at (see [`ReportCache::durable_body`]).
    durable: RwLock<HashMap<String, (u64, Bytes)>>,
    /// What-if answers (serialized) keyed by account and request body hash.
    what_ifs: RwLock<HashMap<WhatIfKey, (u64, Bytes)>>,
    /// What-if computations under way.
    pub what_if_flights: Flights<WhatIfKey, Bytes>,
}

/// How long a report superseded only by oracle quotes may still be served while a fresh one is
/// computed.
pub const MAX_STALE: Duration = Duration::from_secs(1);

/// An account and the SHA-256 of the what-if request body.
pub type WhatIfKey = (String, [u8; 32]);

#[derive(Default)]
struct Versions {
    /// Added to engine sequences: raised when events that were applied but never made durable
    /// are rolled back, so a version is never given again to other inputs.
    offset: u64,
    /// Last event that changed every account.
    global: u64,
    /// Last oracle quote that moved an index (a soft change).
    soft: u64,
    touched: HashMap<String, u64>,
    /// For an account in `touched`: the first of its events not yet durable when it was
    /// applied, and the account's version just before it (its durable version until that
    /// event is durable).
    pending: HashMap<String, (u64, u64)>,
}

impl Versions {
    fn exact(&self, account: &str) -> u64 {
        self.touched
            .get(account)
            .copied()
            .unwrap_or(0)
            .max(self.global)
            .max(self.soft)
    }

    /// `committed` (offset added) is the last durable sequence when `seq` is applied.
    fn touch(&mut self, account: &str, seq: u64, committed: u64) {
        let still_pending = self
            .pending
            .get(account)
            .is_some_and(|&(first, _)| first > committed);
        if !still_pending {
            let before = self.exact(account);
            self.pending.insert(account.to_string(), (seq, before));
        }
        self.touched.insert(account.to_string(), seq);
    }
}

/// The version of an account's inputs: `exact` changes with anything affecting the report,
/// `hard` with anything but index moves from oracle quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub exact: u64,
    pub hard: u64,
}

/// The parts of a margin report that depend only on the account's inputs.
#[derive(Debug, Serialize)]
pub struct CachedReport {
    pub as_of: String,
    pub params_version: u64,
    pub account: Option<pmargin_core::report::AccountReport>,
}

/// A cached report: its version, when it was computed, and its JSON members
/// (`"as_of":..,"params_version":..,"account":..}`, the closing brace included), ready to
/// follow the per-request members of the response.
#[derive(Debug)]
pub struct ReportEntry {
    pub version: Version,
    pub computed: Instant,
    pub tail: Bytes,
    /// The last whole response built on this report: the engine sequence it was read at,
    /// whether it was served stale, and the body. The engine's figures change only with an
    /// event, and every event moves the sequence, so reads in between serve these bytes.
    body: Mutex<Option<(u64, bool, Bytes)>>,
}

impl ReportEntry {
    pub fn new(version: Version, report: &CachedReport) -> Result<ReportEntry, String> {
        let mut tail = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        // `{...}` -> `...}`: the members and the closing brace.
        if tail.first() != Some(&b'{') {
            return Err("a report must serialize as a JSON object".into());
        }
        tail.remove(0);
        Ok(ReportEntry {
            version,
            computed: Instant::now(),
            tail: Bytes::from(tail),
            body: Mutex::new(None),
        })
    }

    /// The response body last built at engine sequence `sequence` with this staleness.
    pub fn body_at(&self, sequence: u64, stale: bool) -> Option<Bytes> {
        match &*self.body.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((s, st, body)) if *s == sequence && *st == stale => Some(body.clone()),
            _ => None,
        }
    }

    pub fn keep_body(&self, sequence: u64, stale: bool, body: Bytes) {
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = Some((sequence, stale, body));
    }
}

/// What a read finds in the cache.
pub enum Lookup {
    /// Computed for the current inputs.
    Fresh(Arc<ReportEntry>),
    /// Superseded only by oracle quotes, recently computed: may be served while a new one is
    /// computed.
    Stale(Arc<ReportEntry>),
    Miss,
}

/// Entries kept at most (a cache miss recomputes; the map is cleared when full).
const REPORT_CACHE_MAX: usize = 100_000;

impl ReportCache {
    /// Records that the event applied at `seq` happened, `committed` being the last durable
    /// sequence then; `moved` tells whether an oracle quote moved its index (or its health).
    /// Call with the engine write-locked.
    pub fn applied(&self, seq: u64, event: &Event, moved: bool, committed: u64) {
        let mut v = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let seq = seq + v.offset;
        let committed = committed + v.offset;
        match event {
            Event::Deposit { account, .. } | Event::Withdrawal { account, .. } => {
                v.touch(account, seq, committed);
            }
            Event::Trade {
                account,
                counterparty,
                ..
            } => {
                v.touch(account, seq, committed);
                if let Some(c) = counterparty {
                    v.touch(c, seq, committed);
                }
            }
            Event::Quote { .. } => {
                if moved {
                    v.soft = seq;
                }
            }
            _ => {
                v.global = seq;
                v.touched.clear();
                v.pending.clear();
            }
        }
    }

    /// The engine was rebuilt from the log at sequence `seq`, below `from` (events not made
    /// durable were dropped): every cached report and what-if is forgotten, and versions go on
    /// above any given before.
    pub fn rolled_back(&self, from: u64, seq: u64) {
        let mut v = self.versions.write().unwrap_or_else(|p| p.into_inner());
        v.offset += from.saturating_sub(seq) + 1;
        v.global = seq + v.offset;
        v.soft = 0;
        v.touched.clear();
        v.pending.clear();
        self.durable
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.reports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.what_ifs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The engine sequence of the last event that changed `account`'s inputs. Call with the
    /// engine read-locked.
    pub fn last_change(&self, account: &str) -> u64 {
        let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
        v.exact(account).saturating_sub(v.offset)
    }

    /// The response last served for `account` at its durable version, when what changed it
    /// since is not yet durable (`committed` is the last durable engine sequence) and began
    /// with an event of its own (a deposit, withdrawal or fill): the account's durable figures
    /// are exactly those of that response. A read serves it instead of waiting for the commit
    /// under way, so reads do not queue behind the disk while writes go on (and a client still
    /// reads its own acknowledged writes: those are durable). `None` when the account's
    /// figures are durable (read them), or when that response was never built (wait).
    pub fn durable_body(&self, account: &str, committed: u64) -> Option<Bytes> {
        let version = {
            let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
            let committed = committed + v.offset;
            let touched = v.touched.get(account).copied()?;
            let (first, before) = v.pending.get(account).copied()?;
            // Durable up to `before`, and nothing durable since: `first` and every later
            // change of the account (its own, or one of every account's) are above `committed`.
            if touched <= committed || first <= committed || before > committed {
                return None;
            }
            before
        };
        let d = self.durable.read().unwrap_or_else(|p| p.into_inner());
        match d.get(account) {
            Some((v, body)) if *v == version => Some(body.clone()),
            _ => None,
        }
    }

    /// Keeps `body`, the response built for `account` at durable inputs of `version`, for
    /// [`ReportCache::durable_body`] (unless one for newer inputs is there already).
    pub fn keep_durable(&self, account: &str, version: Version, body: Bytes) {
        let mut d = self.durable.write().unwrap_or_else(|p| p.into_inner());
        if d.len() >= REPORT_CACHE_MAX && !d.contains_key(account) {
            d.clear();
        }
        match d.get(account) {
            Some((v, _)) if *v > version.exact => {}
            _ => {
                d.insert(account.to_string(), (version.exact, body));
            }
        }
    }

    /// The version of `account`'s inputs. Call with the engine read-locked.
    pub fn version(&self, account: &str) -> Version {
        let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let hard = v.touched.get(account).copied().unwrap_or(0).max(v.global);
        Version {
            exact: hard.max(v.soft),
            hard,
        }
    }

    /// The cached report of `account` as seen at `version`.
    pub fn lookup(&self, account: &str, version: Version) -> Lookup {
        let r = self.reports.read().unwrap_or_else(|p| p.into_inner());
        match r.get(account) {
            Some(e) if e.version.exact == version.exact => Lookup::Fresh(e.clone()),
            Some(e)
                if e.version.hard == version.hard
                    && e.version.exact < version.exact
                    && e.computed.elapsed() < MAX_STALE =>
            {
                Lookup::Stale(e.clone())
            }
            _ => Lookup::Miss,
        }
    }

    /// Keeps a computed report (unless a newer one is there already).
    pub fn put(&self, account: &str, entry: Arc<ReportEntry>) {
        let mut r = self.reports.write().unwrap_or_else(|p| p.into_inner());
        if r.len() >= REPORT_CACHE_MAX && !r.contains_key(account) {
            r.clear();
        }
        match r.get(account) {
            Some(e) if e.version.exact > entry.version.exact => {}
            _ => {
                r.insert(account.to_string(), entry);
            }
        }
    }

    pub fn get_what_if(&self, key: &WhatIfKey, version: u64) -> Option<Bytes> {
        let r = self.what_ifs.read().unwrap_or_else(|p| p.into_inner());
        match r.get(key) {
            Some((v, w)) if *v == version => Some(w.clone()),
            _ => None,
        }
    }

    pub fn put_what_if(&self, key: WhatIfKey, version: u64, result: Bytes) {
        let mut r = self.what_ifs.write().unwrap_or_else(|p| p.into_inner());
        if r.len() >= REPORT_CACHE_MAX {
            r.clear();
        }
        match r.get(&key) {
            Some((v, _)) if *v > version => {}
            _ => {
                r.insert(key, (version, result));
            }
        }
    }
}

/// Computations under way, so that concurrent requests for the same thing at the same
/// version share one (single flight). A request joins the flight for its key if it is for the
/// same or a newer version, else starts a new one; the value is computed by whichever joined
/// request gets to it first (another takes over if that one is cancelled).
pub struct Flights<K, V> {
    map: Mutex<HashMap<K, Flight<V>>>,
}

/// A flight's version and the value it will hold.
type Flight<V> = (u64, Arc<OnceCell<V>>);

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + std::hash::Hash, V> Flights<K, V> {
    /// The flight to wait on for `key` at `version` or newer.
    pub fn join<Q>(&self, key: &Q, version: u64) -> Arc<OnceCell<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, cell)) = m.get(key) {
            if *v >= version {
                return cell.clone();
            }
        }
        if m.len() >= REPORT_CACHE_MAX {
            m.clear();
        }
        let cell = Arc::new(OnceCell::new());
        m.insert(key.to_owned(), (version, cell.clone()));
        cell
    }

    /// A new flight for `key` at `version`, unless one for it (or a newer version) exists or
    /// one is still running: for background refreshes, at most one at a time per key.
    pub fn start<Q>(&self, key: &Q, version: u64) -> Option<Arc<OnceCell<V>>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, cell)) = m.get(key) {
            if *v >= version || !cell.initialized() {
                return None;
            }
        }
        let cell = Arc::new(OnceCell::new());
        m.insert(key.to_owned(), (version, cell.clone()));
        Some(cell)
    }

    /// Forgets a finished flight (the cache holds its value now).
    pub fn land<Q>(&self, key: &Q, cell: &Arc<OnceCell<V>>)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(key).is_some_and(|(_, c)| Arc::ptr_eq(c, cell)) {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(exact: u64, hard: u64) -> Arc<ReportEntry> {
        let report = CachedReport {
            as_of: "t".into(),
            params_version: 1,
            account: None,
        };
        Arc::new(ReportEntry::new(Version { exact, hard }, &report).unwrap())
    }

    fn quote() -> Event {
        Event::Quote {
            source: "a".into(),
            underlying: "BTC".into(),
            price: 1.0,
            ts_ms: 0,
            confidence: None,
            weight: None,
        }
    }

    #[test]
    fn only_index_moves_leave_a_report_servable_while_it_is_recomputed() {
        let cache = ReportCache::default();
        let v0 = cache.version("a");
        cache.put("a", entry(v0.exact, v0.hard));
        assert!(matches!(cache.lookup("a", v0), Lookup::Fresh(_)));
        assert_eq!(
            &entry(0, 0).tail[..],
            br#""as_of":"t","params_version":1,"account":null}"#
        );
        // A quote that moved nothing changes nothing.
        cache.applied(1, &quote(), false, 1);
        assert_eq!(cache.version("a"), v0);
        // One that moved the index: stale, servable.
        cache.applied(2, &quote(), true, 2);
        let v2 = cache.version("a");
        assert_eq!((v2.exact, v2.hard), (2, 0));
        assert!(matches!(cache.lookup("a", v2), Lookup::Stale(_)));
        // Another account's deposit does not touch it; its own does: a miss.
        let deposit = |account: &str| Event::Deposit {
            account: account.into(),
            asset: "USDC".into(),
            amount: 1.0,
        };
        cache.applied(3, &deposit("b"), false, 3);
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Stale(_)
        ));
        cache.applied(4, &deposit("a"), false, 4);
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Miss
        ));
        // A price (not an oracle quote) changes every account: a miss.
        cache.put("a", entry(4, 4));
        cache.applied(5, &Event::Liquidate, false, 5);
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Miss
        ));
        // An older report never replaces a newer one.
        cache.put("a", entry(5, 5));
        cache.put("a", entry(4, 4));
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Fresh(_)
        ));
    }

    #[test]
    fn a_read_behind_events_not_yet_durable_gets_the_accounts_durable_response() {
        let cache = ReportCache::default();
        let deposit = |account: &str| Event::Deposit {
            account: account.into(),
            asset: "USDC".into(),
            amount: 1.0,
        };
        let trade = Event::Trade {
            account: "b".into(),
            counterparty: Some("a".into()),
            instrument: "BTC-PERPETUAL".into(),
            size: 1.0,
            price: 1.0,
            fee: 0.0,
        };
        let kept = |exact: u64| Version { exact, hard: exact };
        cache.applied(1, &deposit("a"), false, 0);
        let at_1 = Bytes::from_static(b"at 1");
        cache.keep_durable("a", cache.version("a"), at_1.clone());
        // Durable up to 1: the account's figures are read as they are, nothing is served aside.
        assert_eq!(cache.durable_body("a", 1), None);
        // A batch (committed: 1) with its deposit, another account's, and a fill naming it:
        // until the batch is durable, the response at 1 is its durable state.
        cache.applied(2, &deposit("a"), false, 1);
        assert_eq!(cache.durable_body("a", 1), Some(at_1.clone()));
        cache.applied(3, &deposit("b"), false, 1);
        cache.applied(4, &trade, false, 1);
        assert_eq!(cache.durable_body("a", 1), Some(at_1.clone()));
        // The batch is durable (4): read as it is. The next batch's fill stands on a response
        // at 4, which was never built: wait.
        assert_eq!(cache.durable_body("a", 4), None);
        cache.applied(5, &trade, false, 4);
        assert_eq!(cache.durable_body("a", 4), None);
        // Built and kept, it stands in until 5 is durable.
        let at_4 = Bytes::from_static(b"at 4");
        cache.keep_durable("a", kept(4), at_4.clone());
        assert_eq!(cache.durable_body("a", 4), Some(at_4.clone()));
        // An older response never replaces a newer one.
        cache.keep_durable("a", kept(1), at_1);
        assert_eq!(cache.durable_body("a", 4), Some(at_4.clone()));
        // An index move in the same batch is not durable either: still the response at 4.
        cache.applied(6, &quote(), true, 4);
        assert_eq!(cache.durable_body("a", 4), Some(at_4));
        // Its next own event after an index move that is durable: the version before it (6)
        // was never served: wait.
        cache.applied(7, &deposit("a"), false, 6);
        assert_eq!(cache.durable_body("a", 6), None);
        // An event on every account leaves nothing to stand in: wait.
        cache.applied(8, &Event::Liquidate, false, 7);
        assert_eq!(cache.durable_body("a", 7), None);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_computation() {
        let flights: Flights<String, u64> = Flights::default();
        let a = flights.join("x", 3);
        let b = flights.join("x", 2);
        assert!(
            Arc::ptr_eq(&a, &b),
            "an older request joins the newer flight"
        );
        // A background refresh does not start while a flight runs.
        assert!(flights.start("x", 4).is_none());
        let n = std::sync::atomic::AtomicU64::new(0);
        let compute = || async {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(7)
        };
        assert_eq!(*a.get_or_try_init(compute).await.unwrap(), 7);
        assert_eq!(*b.get_or_try_init(compute).await.unwrap(), 7);
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        flights.land("x", &a);
        let c = flights.join("x", 3);
        assert!(!Arc::ptr_eq(&a, &c), "a landed flight is gone");
        assert!(
            flights.start("x", 5).is_none(),
            "a running flight blocks refreshes"
        );
    }
}
