//! The engine: accounts, positions and the active parameter set, kept margined as events
//! arrive.
//!
//! State changes only through [`Engine::apply`]. A price or vol update on one underlying
//! re-marks that underlying's instruments once, refreshes their risk arrays, and re-margins
//! only the accounts exposed to it. Accounts that fall below maintenance are liquidated in the
//! same step, unless the oracle has suspended liquidations on one of their underlyings.
//!
//! This module holds the engine's state and what reads it; each mechanism that changes it is a
//! module of its own, adding to [`Engine`]:
//!
//! - `events`: applying one event (the handlers, one per event type);
//! - `replay`: applying a long run of events ([`Engine::apply_all`]);
//! - `pretrade`: the pre-trade check of a fill ([`Engine::check_trade`]);
//! - `remargin`: re-margining the accounts a change concerns, and status changes;
//! - `screening`: the safe bands that spare a tick the accounts whose status it cannot change;
//! - `row_cache`: an account's grid rows kept between re-margins;
//! - `fill`: applying a fill to an account's holdings ([`apply_fill`]);
//! - `liquidation`: partial liquidation, close-out and deleveraging;
//! - `seize`: seizing collateral held in other protocols once an account's derivatives are
//!   closed;
//! - `snapshot`: snapshots and recovery.
//!
//! Value is conserved: every fill moves `size x (mark - price)` between two accounts, fees and
//! penalties move value from accounts to the insurance fund, a deficit moves from the fund (or,
//! beyond it, from deleveraged accounts) to the bankrupt account. Only deposits and
//! withdrawals change the total of every account's equity plus the fund.

use crate::oracle::{Oracle, OracleConfig};
use crate::rejection::{RejectReason, Rejection};
use pmargin_core::account::{Kept, Requirement, Status};
use pmargin_core::book::{Book, BookAccount};
use pmargin_core::input::portfolio::{valid_account_id, Account, Portfolio};
use pmargin_core::{Evaluator, Market, Params, RiskArrays};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

// A trade or a tick runs through several of these modules, and each module is a codegen unit
// of its own: the small functions on those paths, and those with one caller in another module,
// are `#[inline]`, so that the split costs none of the inlining one module had.
mod attested;
mod events;
mod fill;
mod liquidation;
mod pretrade;
mod remargin;
mod replay;
mod row_cache;
mod screening;
mod seize;
mod snapshot;

pub use crate::rejection::{ATTESTATION_REJECTION, PRICE_BAND_REJECTION, STALE_INDEX_REJECTION};
pub use attested::{position_key, Attested, Stamp};
pub use fill::{apply_fill, update_exposures};
pub use liquidation::{MAX_LIQUIDATION_PASSES, MAX_LIQUIDATION_STEPS};
pub use snapshot::{
    AccountSnapshot, EngineSnapshot, MarketSnapshot, SurfaceSnapshot, SNAPSHOT_FORMAT,
};

/// Fewest accounts whose figures are recomputed, or whose re-centring is tried, on the thread
/// pool rather than inline.
pub const PARALLEL_REMARGIN_MIN: usize = 64;

/// Largest |size| of one fill, in contracts. With [`MAX_PRICE`], a fill's notional stays far
/// inside what the settlement messages encode (6-decimal `int128`, about 1.7e32).
pub const MAX_SIZE: f64 = 1e9;
/// Largest price of a fill, quote, mark or settlement.
pub const MAX_PRICE: f64 = 1e12;
/// Largest deposit, withdrawal or fee.
pub const MAX_AMOUNT: f64 = 1e15;
/// Most instruments one underlying may list: new names arrive with fills, so the set must not
/// grow without bound.
pub const MAX_INSTRUMENTS_PER_UNDERLYING: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Balance that settles P&L, premiums, fees and funding.
    pub settlement_asset: String,
    /// Penalty on liquidated notional (at mark), paid to the insurance fund.
    pub liquidation_penalty: f64,
    /// Fraction of a position taken in one liquidation step.
    pub liquidation_step: f64,
    /// Smallest liquidation step, in USD of notional at mark.
    pub min_liquidation_notional: f64,
    /// The account that takes over liquidated positions (the venue's backstop liquidator).
    pub liquidator: String,
    /// Opening balance of the insurance fund.
    pub insurance_fund: f64,
    /// Aggregation of venue quotes (`quote` events); none: prices arrive as `price` events.
    pub oracle: Option<OracleConfig>,
    /// Skip re-margining, on a price tick, the accounts whose status it provably cannot change
    /// (see the module documentation). Off gives the same outputs and figures, slower.
    #[serde(skip_serializing_if = "is_true")]
    pub screening: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            settlement_asset: "USDC".into(),
            liquidation_penalty: 0.01,
            liquidation_step: 0.25,
            min_liquidation_notional: 100.0,
            liquidator: "liquidator".into(),
            insurance_fund: 0.0,
            oracle: None,
            screening: true,
        }
    }
}

/// The cached figures of one account.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AccountRisk {
    pub equity: f64,
    pub margin_balance: f64,
    pub initial_margin: f64,
    pub maintenance_margin: f64,
    pub status: Status,
}

impl From<&Requirement> for AccountRisk {
    fn from(r: &Requirement) -> Self {
        AccountRisk {
            equity: r.equity,
            margin_balance: r.margin_balance,
            initial_margin: r.initial_margin,
            maintenance_margin: r.maintenance_margin,
            status: r.status,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("{0}")]
    Input(#[from] pmargin_core::InputError),
    #[error("{0}")]
    Config(String),
}

/// What an engine is made of; everything else it holds is derived ([`Engine::assemble`]).
pub(crate) struct Parts {
    pub config: EngineConfig,
    pub market: Market,
    pub book: Book,
    /// Account id to index in `book` ([`account_index`]).
    pub accounts: HashMap<String, usize>,
    pub oracle: Option<Oracle>,
    pub insurance_fund: f64,
    pub suspended: BTreeSet<usize>,
    pub bad_debt: BTreeSet<usize>,
    pub sequence: u64,
    /// The attestations accepted (`attested`).
    pub attested: Attested,
}

/// Each account's index in the book, by id.
pub(crate) fn account_index(book: &Book) -> HashMap<String, usize> {
    book.accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id.clone(), i))
        .collect()
}

/// The engine's state. See the module documentation.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    market: Market,
    book: Book,
    arrays: RiskArrays,
    accounts: HashMap<String, usize>,
    /// Per account, its figures; empty while stale (recomputed when read).
    risk: Vec<OnceLock<AccountRisk>>,
    /// Per account, its status: always exact, stale figures or not.
    status: Vec<Status>,
    /// Per underlying, every account's safe band of its price (see the module documentation).
    bands: Vec<Bands>,
    /// Per underlying, the factors of its slope bounds (they depend on the parameters only).
    slope_factors: Vec<(f64, f64)>,
    /// Accounts whose status is liquidatable or bankrupt.
    failing: BTreeSet<usize>,
    /// Per account, the room of its screen (see [`Screen`]); minus infinity: not screened.
    room: Vec<f64>,
    /// Per account, its initial margin at its last evaluation, which the requirement part of
    /// its bands ([`Band::required_slope`]) bounds the moves of; NaN after a screened fill (then
    /// unknown until the next evaluation).
    required: Vec<f64>,
    insurance_fund: f64,
    suspended: BTreeSet<usize>,
    /// Accounts left with a deficit after a close-out that neither the fund nor
    /// deleveraging could cover.
    bad_debt: BTreeSet<usize>,
    /// The liquidator took positions this round and has not been re-margined yet.
    liquidator_dirty: bool,
    oracle: Option<Oracle>,
    sequence: u64,
    /// Per account, its summed grid rows from its last re-margin (see [`RowCache`]).
    row_cache: Vec<RowCache>,
    /// Per account, the underlyings whose cached rows fills have voided since ([`row_bit`]):
    /// a flat array, so a fill marks them without reading the cache.
    row_void: Vec<u64>,
    /// Per underlying, the version of its risk arrays the row caches are checked against.
    array_version: Vec<u64>,
    /// Bumped whenever holdings may have changed outside the paths that invalidate row caches
    /// one by one: every row cache of an older generation is void.
    generation: u64,
    /// The last version handed out (to arrays and generations alike).
    version: u64,
    /// Fewest positions for an account's rows to be cached ([`ROW_CACHE_MIN_POSITIONS`]).
    row_cache_min: usize,
    /// Per account, [`Held`]: the instruments it may hold.
    held: Held,
    /// The attestations of positions in other protocols the engine accepted (`attested`).
    attested: Attested,
}

impl Engine {
    pub fn new(
        portfolio: &Portfolio,
        market: &Market,
        params: &Params,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let checks = [
            ("liquidation_penalty", config.liquidation_penalty, 0.0, 0.5),
            ("liquidation_step", config.liquidation_step, 1e-6, 1.0),
            (
                "min_liquidation_notional",
                config.min_liquidation_notional,
                0.0,
                f64::MAX,
            ),
            ("insurance_fund", config.insurance_fund, 0.0, f64::MAX),
        ];
        for (field, v, lo, hi) in checks {
            if !(v.is_finite() && v >= lo && v <= hi) {
                return Err(EngineError::Config(format!(
                    "engine config: {field} must be in [{lo}, {hi}], got {v}"
                )));
            }
        }
        if !params.collateral.contains_key(&config.settlement_asset) {
            return Err(EngineError::Config(format!(
                "engine config: settlement_asset `{}` has no entry in the parameter set's collateral",
                config.settlement_asset
            )));
        }
        let mut portfolio = portfolio.clone();
        if !portfolio.accounts.iter().any(|a| a.id == config.liquidator) {
            portfolio.accounts.push(Account {
                id: config.liquidator.clone(),
                balances: BTreeMap::new(),
                positions: Vec::new(),
                external: Vec::new(),
            });
        }
        let oracle = match &config.oracle {
            Some(c) => Some(
                Oracle::new(c.clone())
                    .map_err(|e| EngineError::Config(format!("engine config: oracle: {e}")))?,
            ),
            None => None,
        };
        let book = Book::build(&portfolio, market, params)?;
        Engine::assemble(Parts {
            oracle,
            insurance_fund: config.insurance_fund,
            config,
            market: market.clone(),
            accounts: account_index(&book),
            book,
            suspended: BTreeSet::new(),
            bad_debt: BTreeSet::new(),
            sequence: 0,
            attested: Attested::default(),
        })
    }

    /// An engine holding `parts`, with everything derived from them (risk arrays, figures,
    /// bands, caches) computed afresh: the one constructor behind [`Engine::new`] and
    /// [`Engine::restore`].
    pub(crate) fn assemble(parts: Parts) -> Result<Engine, EngineError> {
        let arrays = RiskArrays::compute(&parts.book, None)?;
        let mut engine = Engine {
            config: parts.config,
            market: parts.market,
            book: parts.book,
            arrays,
            accounts: parts.accounts,
            risk: Vec::new(),
            status: Vec::new(),
            bands: Vec::new(),
            slope_factors: Vec::new(),
            failing: BTreeSet::new(),
            room: Vec::new(),
            required: Vec::new(),
            insurance_fund: parts.insurance_fund,
            suspended: parts.suspended,
            bad_debt: parts.bad_debt,
            liquidator_dirty: false,
            oracle: parts.oracle,
            sequence: parts.sequence,
            row_cache: Vec::new(),
            row_void: Vec::new(),
            array_version: Vec::new(),
            generation: 0,
            version: 0,
            row_cache_min: ROW_CACHE_MIN_POSITIONS,
            held: Held::default(),
            attested: parts.attested,
        };
        engine.full_recompute();
        Ok(engine)
    }

    // ----- reading -----

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn insurance_fund(&self) -> f64 {
        self.insurance_fund
    }

    pub fn market(&self) -> &Market {
        &self.market
    }

    pub fn params(&self) -> &Params {
        &self.book.params
    }

    pub fn book(&self) -> &Book {
        &self.book
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn account_ids(&self) -> impl Iterator<Item = &str> {
        self.book.accounts.iter().map(|a| a.id.as_str())
    }

    pub fn risk(&self, account: &str) -> Option<AccountRisk> {
        self.accounts.get(account).map(|&i| *self.figures(i))
    }

    /// Every account's figures, in account order.
    pub fn risks(&self) -> impl Iterator<Item = (&str, &AccountRisk)> {
        self.materialize();
        self.book
            .accounts
            .iter()
            .enumerate()
            .map(|(a, account)| (account.id.as_str(), self.figures(a)))
    }

    /// Sets the fewest positions for an account's grid rows to be cached between re-margins
    /// (for tests: the cache gives the same figures, bit for bit, whatever the threshold).
    #[doc(hidden)]
    pub fn set_row_cache_min_positions(&mut self, positions: usize) {
        self.row_cache_min = positions;
    }

    /// How many accounts' figures are stale: left by screening, recomputed when read (for
    /// tests and diagnostics; reading figures does not change what the engine concludes).
    #[doc(hidden)]
    pub fn stale_accounts(&self) -> usize {
        self.risk.iter().filter(|c| c.get().is_none()).count()
    }

    pub fn accounts_exposed_to(&self, underlying: &str) -> usize {
        self.book.underlying_index(underlying).map_or(0, |u| {
            self.bands[u]
                .0
                .iter()
                .filter(|b| b.lo != NOT_EXPOSED.0)
                .count()
        })
    }

    /// Account `a`'s current figures: cached, or recomputed if a screened tick left them stale.
    #[inline]
    fn figures(&self, a: usize) -> &AccountRisk {
        self.risk[a].get_or_init(|| {
            Evaluator::new(&self.book, &self.arrays)
                .requirement(&self.book.accounts[a])
                .map(|r| AccountRisk::from(&r))
                // Unreachable: an account whose evaluation fails is never screened.
                .unwrap_or(AccountRisk {
                    status: self.status[a],
                    ..ZERO_RISK
                })
        })
    }

    /// Recomputes every stale account's figures (in parallel when there are many).
    fn materialize(&self) {
        if self.risk.len() < PARALLEL_REMARGIN_MIN {
            return;
        }
        self.risk.par_iter().enumerate().for_each(|(a, cell)| {
            if cell.get().is_none() {
                self.figures(a);
            }
        });
    }

    pub fn liquidations_suspended(&self, underlying: &str) -> bool {
        self.book
            .underlying_index(underlying)
            .is_some_and(|u| self.suspended.contains(&u))
    }

    /// Sum of every account's equity plus the insurance fund: conserved by every event but
    /// deposits and withdrawals (with stablecoin collateral; coin collateral moves with price).
    pub fn total_value(&self) -> f64 {
        self.materialize();
        (0..self.risk.len())
            .map(|a| self.figures(a).equity)
            .sum::<f64>()
            + self.insurance_fund
    }

    /// The current state as a portfolio (for snapshots, reports and full recomputes).
    pub fn portfolio(&self) -> Portfolio {
        Portfolio {
            source: "engine state".into(),
            accounts: self
                .book
                .accounts
                .iter()
                .map(|a| self.as_input(a))
                .collect(),
        }
    }

    /// One account's current holdings, in the input format.
    pub fn account(&self, id: &str) -> Option<Account> {
        self.accounts
            .get(id)
            .map(|&a| self.as_input(&self.book.accounts[a]))
    }

    fn as_input(&self, a: &BookAccount) -> Account {
        let book = &self.book;
        Account {
            id: a.id.clone(),
            balances: a
                .balances
                .iter()
                .map(|b| (book.assets[b.asset].name.clone(), b.amount))
                .collect(),
            positions: a.positions.iter().map(|p| book.position_input(p)).collect(),
            external: a.external.iter().map(|x| book.external_input(x)).collect(),
        }
    }

    /// The requirement of every account recomputed from scratch (a fresh book and fresh risk
    /// arrays), to check the incremental path against.
    pub fn full_requirements(&self) -> Result<Vec<AccountRisk>, EngineError> {
        let book = Book::build(&self.portfolio(), &self.market, &self.book.params)?;
        let arrays = RiskArrays::compute(&book, None)?;
        Ok(Evaluator::new(&book, &arrays)
            .requirements()?
            .iter()
            .map(AccountRisk::from)
            .collect())
    }

    /// The engine's figures of every account, in account order (stale ones recomputed).
    pub fn cached_requirements(&self) -> Vec<AccountRisk> {
        self.risks().map(|(_, r)| *r).collect()
    }

    pub fn oracle(&self) -> Option<&Oracle> {
        self.oracle.as_ref()
    }

    fn open_account(&mut self, id: &str) -> Result<usize, Rejection> {
        if !valid_account_id(id) {
            return Err(reject(RejectReason::InvalidAccountId {
                id: id.to_string(),
            }));
        }
        let a = self.book.accounts.len();
        self.book.accounts.push(BookAccount {
            id: id.to_string(),
            positions: Vec::new(),
            balances: Vec::new(),
            exposures: Vec::new(),
            external: Vec::new(),
        });
        self.risk.push(OnceLock::from(ZERO_RISK));
        self.status.push(Status::Healthy);
        for bands in &mut self.bands {
            bands.push();
        }
        self.room.push(f64::NEG_INFINITY);
        self.required.push(f64::NAN);
        self.row_cache.push(RowCache::default());
        self.row_void.push(0);
        self.held.push();
        self.accounts.insert(id.to_string(), a);
        Ok(a)
    }

    #[inline]
    fn underlying(&self, name: &str) -> Result<usize, Rejection> {
        self.book.underlying_index(name).ok_or_else(|| {
            reject(RejectReason::UnknownUnderlying {
                underlying: name.to_string(),
            })
        })
    }

    #[inline]
    fn settlement_index(&self) -> Result<usize, RejectReason> {
        self.book
            .assets
            .iter()
            .position(|a| a.name == self.config.settlement_asset)
            .ok_or_else(|| RejectReason::NoSettlementAsset {
                asset: self.config.settlement_asset.clone(),
            })
    }

    /// Adds the settlement asset to the book so fills can always settle.
    pub fn ensure_settlement_asset(&mut self) -> Result<(), EngineError> {
        self.void_row_caches();
        let name = self.config.settlement_asset.clone();
        self.book.ensure_asset(&name, &self.market)?;
        self.arrays.extend(&self.book);
        Ok(())
    }
}

// The records the engine keeps per account and per underlying are laid out here, beside the
// state that holds them; what each does is in its mechanism's module (`row_cache`,
// `screening`, `fill`).

/// Fewest positions for an account to keep its grid rows between re-margins (below it,
/// summing them costs little and the cache would only take memory).
pub const ROW_CACHE_MIN_POSITIONS: usize = 16;

/// An account's summed grid rows and sums as of its last re-margin (exposure by exposure, as
/// [`Evaluator::requirement_reusing`] takes them), with the version of the risk arrays of each
/// exposure they were summed from.
///
/// A row is summed from its own underlying's holdings alone, so it stays exact while the
/// account's holdings and that underlying's arrays are unchanged: re-margining the account
/// after a tick on `u` then sums only its `u` row anew, bit for bit the same figures as a full
/// evaluation. The cache is valid only in the engine's generation it was made in: a fill (a
/// trade or a liquidation fill) voids the rows of the underlyings it moves in its accounts'
/// caches, and every other change of holdings (close-outs, deleveraging, deposits, settlements,
/// any event but a trade or a price tick) starts a new generation; a refresh of an
/// underlying's arrays gives them a new version.
#[derive(Debug, Clone)]
struct RowCache {
    generation: u64,
    exposures: Vec<usize>,
    versions: Vec<u64>,
    /// The account's number of positions when its positions were grouped by exposure.
    positions: usize,
    kept: Kept,
    /// Scratch: which rows an evaluation reuses.
    reuse: Vec<bool>,
}

impl Default for RowCache {
    fn default() -> Self {
        RowCache {
            generation: u64::MAX,
            exposures: Vec::new(),
            versions: Vec::new(),
            positions: 0,
            kept: Kept::default(),
            reuse: Vec::new(),
        }
    }
}

/// Figures of an empty account.
const ZERO_RISK: AccountRisk = AccountRisk {
    equity: 0.0,
    margin_balance: 0.0,
    initial_margin: 0.0,
    maintenance_margin: 0.0,
    status: Status::Healthy,
};

/// The band of an underlying an account is not exposed to: no tick on it concerns the account.
const NOT_EXPOSED: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);

/// The band of an account re-margined at every tick (empty: every price leaves it).
const ALWAYS: (f64, f64) = (f64::INFINITY, f64::NEG_INFINITY);

/// Per underlying, every account's safe band of that underlying's price, indexed by account:
/// `NOT_EXPOSED` for accounts without exposure to it. One record per account, so a fill reads
/// and re-cuts an exposure's band in one cache line.
#[derive(Debug, Clone)]
struct Bands(Vec<Band>);

#[derive(Debug, Clone, Copy)]
struct Band {
    lo: f64,
    hi: f64,
    /// The price the band is centred on (the price at the account's last evaluation).
    reference: f64,
    /// The account's slope bound on this underlying, per unit of relative move from there.
    slope: f64,
    /// The price at the account's last evaluation (the centre of the window where `slope`
    /// holds), and the part of `slope` that bounds the requirement alone, per unit of relative
    /// move from that price.
    evaluated_at: f64,
    required_slope: f64,
}

const UNEXPOSED: Band = Band {
    lo: NOT_EXPOSED.0,
    hi: NOT_EXPOSED.1,
    reference: f64::NAN,
    slope: f64::INFINITY,
    evaluated_at: f64::NAN,
    required_slope: f64::INFINITY,
};

/// Per account, a bit per instrument of the book, set for every instrument it holds (and
/// perhaps some it held once; a closed position keeps its bit). A fill of an instrument
/// whose bit is clear opens a position without searching the account's positions: in a
/// long replay, where accounts come to hold many instruments, that is two fills in three,
/// and the search, a walk through memory, is the larger part of applying one.
#[derive(Debug, Clone, Default)]
struct Held {
    /// `words` words per account, account after account.
    bits: Vec<u64>,
    words: usize,
}

/// Amounts, prices and vols must be positive and finite.
fn positive(what: &str, value: f64) -> Result<(), Rejection> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(reject(RejectReason::NotPositive {
            what: what.to_string(),
            value,
        }))
    }
}

/// A refusal for `reason`, without figures.
fn reject(reason: RejectReason) -> Rejection {
    reason.into()
}
