//! The engine: accounts, positions and the active parameter set, kept margined as events
//! arrive.
//!
//! State changes only through [`Engine::apply`]. A price or vol update on one underlying
//! re-marks that underlying's instruments once, refreshes their risk arrays, and re-margins
//! only the accounts exposed to it. Accounts that fall below maintenance are liquidated in the
//! same step, unless the oracle has suspended liquidations on one of their underlyings.
//!
//! ## Screening price ticks
//!
//! Most ticks change no account's status, so a price tick re-margins only the accounts whose
//! status it could change. Each evaluation of an account also gives it, for every underlying
//! it is exposed to, a *safe band* around that underlying's current price: the figures that
//! decide its status (margin balance, and its surplus over maintenance and over initial
//! margin) move by at most `L_u x |p_u / p_u,ref - 1|` per underlying
//! ([`pmargin_core::liquidation::status_slope_parts_from`]), so while every price stays within
//! `delta = (cushion - rounding allowance) / sum_u L_u` of its reference (relative), none of
//! them can change sign and the status cannot change. Options count in `L_u` by their deltas
//! ([`pmargin_core::grid::WindowSlope`]), a bound that holds only within [`SLOPE_WINDOW`] of
//! the prices of the account's last evaluation: every band is cut to that window, and no proof
//! below is made at a price outside it (the account is re-margined). A tick on `u` re-margins
//! the accounts whose band on `u` the new price leaves (a scan of one flat array per
//! underlying); the other exposed accounts keep their status, exact, and only their figures go
//! stale. An account
//! whose band was left is first re-cut: if the moves of all its prices since the reference
//! still fit (`sum_u L_u |x_u - 1| < room`), each band becomes its current move plus an equal
//! share of what is left, without evaluating it. Failing that, it is re-centred: most of
//! `L_u` bounds the margin balance, which is cheap to recompute exactly (values and balances,
//! no scenario); with it exact and only the requirement bounded (by its own part `R_u` of the
//! slope, from the prices of the last evaluation), the status is proven if every figure keeps
//! its side over the requirement's whole range, and the bands are re-centred on today's
//! prices with what is left. Only otherwise is the account re-margined. The scan and the
//! re-cuts need prices and bands only, so they run while the tick's risk arrays are refreshed.
//!
//! The add-ons of MODEL.md version 2 count in `L_u` too (`ExposureSums::addon_slope`): the
//! option and basis add-ons move by their own value per unit of relative move, the oracle
//! add-on not at all, the liquidity add-on by a bound from the options' gammas (by its own value
//! without options).
//!
//! Fills are screened the same way: a fill on an underlying a healthy account is already
//! exposed to moves its margin balance by exactly `size x (mark - price) - fee` and its
//! requirement by at most `|size|` times the largest weighted scenario loss of one contract
//! (plus its share of the add-ons, the liquidity add-on's bounded through the account's gross
//! delta);
//! if what is left of the room covers that, the pre-trade check accepts it, the status stays
//! healthy, and the account's bands are re-centred on today's prices with the room that is
//! left (no evaluation). Anything else (a new exposure, a restricted account, a stable price
//! that differs from the index) is evaluated in full as before.
//!
//! Stale figures are recomputed from the current book when anything reads them (every reader
//! gets the same numbers a full re-margin would have given, bit for bit), so outputs,
//! statuses and figures are those of re-margining every exposed account at every event;
//! `EngineConfig::screening` off does exactly that. Vol and mark updates (which move prices
//! and vols in ways a price scale does not describe) re-margin every exposed account.
//!
//! ## Re-margining from cached grid rows
//!
//! An account's grid rows (its summed scenario P&L per exposure) and its other sums per
//! exposure (values, short option notional, the parts of its slope bounds) are each summed
//! from one underlying's holdings alone, and its figures add them up exposure by exposure. An
//! account with at least [`ROW_CACHE_MIN_POSITIONS`] positions keeps them from its last
//! re-margin (`RowCache`), with its positions grouped by exposure, so re-margining it after a
//! tick on `u` reads only its positions on `u`, if nothing else moved: the figures are bit for
//! bit those of a full evaluation. A row is reused only while the account's holdings and that
//! underlying's risk arrays are those it was summed from: a fill (a trade, or a liquidation
//! passing a position to the liquidator) voids the row of its underlying in its two accounts'
//! caches (and their grouping, if it opens or closes a position), any other change of holdings
//! (close-outs, deleveraging, deposits, settlements, any event but a trade or a price tick)
//! voids every account's, and a refresh of an underlying's arrays gives them a new version.
//! The pre-trade check's evaluation of an account after a fill, and a liquidation step's
//! trials, reuse the account's rows the same way.
//!
//! Value is conserved: every fill moves `size x (mark - price)` between two accounts, fees and
//! penalties move value from accounts to the insurance fund, a deficit moves from the fund (or,
//! beyond it, from deleveraged accounts) to the bankrupt account. Only deposits and
//! withdrawals change the total of every account's equity plus the fund.

use crate::event::{Event, Output};
use crate::oracle::{Health, Oracle, OracleConfig, Quote};
use crate::prefetch::{prefetch, prefetch_slice};
use pmargin_core::account::{ExposureSums, Kept, Requirement, Status};
use pmargin_core::book::{Asset, Book, BookAccount, BookBalance, BookPosition, Priced};
use pmargin_core::grid::{
    self, fill_asset, fill_instrument, fill_instrument_windowed, SLOPE_WINDOW,
};
use pmargin_core::input::params::DEFAULT_MAX_FILL_DEVIATION;
use pmargin_core::input::portfolio::{valid_account_id, Account, Portfolio};
use pmargin_core::instrument::{Instrument, Kind, OptionKind};
use pmargin_core::liquidation::{slope_factors, status_slope_parts_from};
use pmargin_core::{Evaluator, Market, Params, RiskArrays};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::OnceLock;

#[path = "snapshot.rs"]
mod snapshot;
pub use snapshot::{
    AccountSnapshot, EngineSnapshot, MarketSnapshot, SurfaceSnapshot, SNAPSHOT_FORMAT,
};

/// Largest number of partial liquidation steps one account takes in one round before it is
/// closed out: a bound, so a pathological book cannot stall the engine.
pub const MAX_LIQUIDATION_STEPS: usize = 200;

/// Fewest accounts in the book for a tick to scan its bands on the thread pool, beside the
/// refresh of its risk arrays, rather than after it.
const PARALLEL_TICK_MIN_ACCOUNTS: usize = 1024;

/// Fewest accounts whose figures are recomputed, or whose re-centring is tried, on the thread
/// pool rather than inline.
pub const PARALLEL_REMARGIN_MIN: usize = 64;

/// Fewest accounts evaluated on the thread pool when a tick re-margins them (an evaluation
/// takes microseconds: from about 16 the pool's hand-off pays; in the replay benchmark 4 ticks
/// in 10 re-margin fewer than 60 accounts).
const PARALLEL_EVALUATION_MIN: usize = 16;

/// Passes of one liquidation round (a close-out can change other accounts).
pub const MAX_LIQUIDATION_PASSES: usize = 8;

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
/// The start of the reason of a withdrawal refused because an index it depends on is not
/// trusted (stale, no quorum, an unconfirmed jump).
pub const STALE_INDEX_REJECTION: &str = "withdrawal: stale index";

/// How a fill outside its price band is refused (the reason starts with it).
pub const PRICE_BAND_REJECTION: &str = "trade: price outside the band";

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

    // ----- pre-trade checks -----

    pub fn oracle(&self) -> Option<&Oracle> {
        self.oracle.as_ref()
    }

    /// Would this fill be accepted? `Ok(())` or the refusal with the figures.
    pub fn check_trade(
        &mut self,
        account: &str,
        instrument: &str,
        size: f64,
        price: f64,
        fee: f64,
    ) -> Result<(), Output> {
        let listed = self.book.instruments.len();
        let checked = self
            .trial_trade(account, instrument, size, price, fee)
            .map(|_| ());
        // A check lists nothing: only an accepted fill adds an instrument.
        self.forget_instruments_from(listed);
        checked
    }

    /// Drops the instruments from `listed` on (added by a fill that was then refused).
    fn forget_instruments_from(&mut self, listed: usize) {
        if self.book.instruments.len() <= listed {
            return;
        }
        self.book.forget_instruments_from(listed);
        let arrays = &mut self.arrays;
        arrays.values.truncate(listed);
        arrays.deltas.truncate(listed);
        arrays.slopes.truncate(listed);
        arrays.grid.truncate(listed * arrays.width);
        arrays.fhs.truncate(listed * arrays.fhs_count);
    }

    /// The pre-trade check: on acceptance, the account's index and either its holdings after
    /// the fill with their figures (exactly those re-margining it after the fill would give), or
    /// the proof that the fill leaves it healthy.
    fn trial_trade(
        &mut self,
        account: &str,
        instrument: &str,
        size: f64,
        price: f64,
        fee: f64,
    ) -> Result<(usize, usize, Trial), Output> {
        // An instrument the book holds was parsed when it was added, under this very name.
        let known = self.book.instrument_index(instrument);
        let inst = match known {
            Some(_) => None,
            None => Some(Instrument::parse(instrument).map_err(reject)?),
        };
        if !(size.is_finite()
            && size != 0.0
            && price.is_finite()
            && price >= 0.0
            && fee.is_finite()
            && fee >= 0.0)
        {
            return Err(reject(
                "trade: size must be finite and nonzero, price and fee finite and non-negative"
                    .into(),
            ));
        }
        if size.abs() > MAX_SIZE {
            return Err(reject(format!(
                "trade: size {size} exceeds the largest allowed, {MAX_SIZE:e}"
            )));
        }
        if price > MAX_PRICE {
            return Err(reject(format!(
                "trade: price {price} exceeds the largest allowed, {MAX_PRICE:e}"
            )));
        }
        if fee > MAX_AMOUNT {
            return Err(reject(format!(
                "trade: fee {fee} exceeds the largest allowed, {MAX_AMOUNT:e}"
            )));
        }
        let i = match (known, inst) {
            (Some(i), _) => i,
            (None, Some(inst)) => {
                if let Some(u) = self.book.underlying_index(&inst.underlying) {
                    let listed = self
                        .book
                        .instruments
                        .iter()
                        .filter(|p| p.underlying == u)
                        .count();
                    if listed >= MAX_INSTRUMENTS_PER_UNDERLYING {
                        return Err(reject(format!(
                            "trade: {} already lists {listed} instruments, the most allowed",
                            inst.underlying
                        )));
                    }
                }
                let i = self
                    .book
                    .ensure_instrument(&inst, &self.market)
                    .map_err(|e| reject(e.to_string()))?;
                self.arrays.extend(&self.book);
                i
            }
            (None, None) => unreachable!("an unknown instrument is parsed"),
        };
        self.check_price_band(instrument, i, price)?;
        let (a, trial) = self.trial_fill(account, i, size, price, fee)?;
        Ok((a, i, trial))
    }

    /// A fill's price must lie within `max_fill_deviation` (a fraction of the underlying's
    /// parameters) of the instrument's mark, as venues' price bands do: the two sides of a fill
    /// at a made-up price would move value from one to the other (issue 15). Read from the
    /// engine's own state only, so a replay refuses the same fills.
    fn check_price_band(&self, instrument: &str, i: usize, price: f64) -> Result<(), Output> {
        let priced = &self.book.instruments[i];
        let underlying = &self.book.underlyings[priced.underlying].name;
        let deviation = self
            .book
            .params
            .underlyings
            .get(underlying)
            .map_or(DEFAULT_MAX_FILL_DEVIATION, |u| u.max_fill_deviation);
        let mark = priced.value_at(1.0, self.book.rate);
        let (low, high) = (mark * (1.0 - deviation), mark * (1.0 + deviation));
        if mark.is_finite() && price >= low && price <= high {
            return Ok(());
        }
        Err(Output::Rejected {
            reason: format!(
                "{PRICE_BAND_REJECTION}: {price} for {instrument}, whose mark is {mark}; a fill \
                 may be at most {deviation} (max_fill_deviation of {underlying}) from it, \
                 within [{low}, {high}]"
            ),
            required: None,
            available: None,
        })
    }

    /// [`Engine::trial_trade`] of a known instrument `i`, with the figures checked.
    fn trial_fill(
        &self,
        account: &str,
        i: usize,
        size: f64,
        price: f64,
        fee: f64,
    ) -> Result<(usize, Trial), Output> {
        let a = *self
            .accounts
            .get(account)
            .ok_or_else(|| reject(format!("trade: no account `{account}`")))?;
        let settle = self.settlement_index().map_err(reject)?;
        if let Some(fill) = self.screen_fill(a, i, size, price, fee, settle) {
            return Ok((a, Trial::Screened(fill)));
        }
        let mut trial = clone_for_fill(&self.book.accounts[a]);
        let held = self.held.may_hold(a, i);
        apply_fill(
            &self.book.instruments,
            &mut trial,
            i,
            size,
            price,
            settle,
            held,
        );
        add_balance(&mut trial, settle, -fee);
        // The fill moves holdings on its own underlying (and the settlement balance) only: the
        // account's other cached rows are the trial's too.
        let mut rows = Box::new(self.row_cache[a].clone());
        let before = self.book.accounts[a].positions.len();
        let void = self.row_void[a] | self.fill_bits(i, settle, before, trial.positions.len());
        let risk = self.admit(a, &mut trial, &mut rows, void)?;
        Ok((a, Trial::Evaluated(trial, risk, rows)))
    }

    /// Proves, without evaluating the account, that a fill of `size` of instrument `i` at
    /// `price` with `fee` leaves healthy account `a` healthy (so the pre-trade check accepts
    /// it and its status does not change), or gives up.
    ///
    /// From the account's screen: at the reference prices each status figure is at least
    /// `room` from zero; the prices have since moved it by at most `sum_u L_u |p_u / p_ref - 1|`;
    /// the fill moves the margin balance by exactly `size x (mark - price) - fee` (with an
    /// unhaircut settlement asset worth 1) and the requirement by at most `|size|` times the largest
    /// weighted scenario P&L of one contract (or its short option minimum). Only fills on an
    /// underlying the account is already exposed to are screened: a new exposure brings new
    /// scenarios (tandem and decoupling), which this bound does not cover.
    fn screen_fill(
        &self,
        a: usize,
        i: usize,
        size: f64,
        price: f64,
        fee: f64,
        settle: usize,
    ) -> Option<ScreenedFill> {
        let room = self.room[a];
        let settlement = &self.book.assets[settle];
        let inst = &self.book.instruments[i];
        let account = &self.book.accounts[a];
        if room.is_nan()
            || room <= 0.0
            || self.status[a] != Status::Healthy
            || settlement.haircut != 0.0
            || settlement.price != 1.0
            || settlement.underlying.is_some()
            || !account.exposures.contains(&inst.underlying)
            // With a stable price the admission rule values the account at it too.
            || self.stable_scales(account).iter().any(|&x| x != 1.0)
        {
            return None;
        }
        let mut moved = 0.0;
        let mut slopes = Vec::with_capacity(account.exposures.len());
        for &u in &account.exposures {
            let band = &self.bands[u].0[a];
            let p = self.book.underlyings[u].spot;
            if !band.holds_at(p) {
                return None;
            }
            let x = p / band.reference;
            moved += band.slope * (x - 1.0).abs();
            // The slope per unit of relative move from today's price.
            slopes.push((u, band.slope * x));
        }
        let arrays = &self.arrays;
        let (width, n_fhs) = (arrays.width, arrays.fhs_count);
        let grid = arrays.grid[i * width..(i + 1) * width]
            .iter()
            .zip(&arrays.slot_weights)
            .fold(0.0f64, |m, (pnl, w)| m.max(w * pnl.abs()));
        let history = arrays.fhs[i * n_fhs..(i + 1) * n_fhs]
            .iter()
            .fold(0.0f64, |m, pnl| m.max(pnl.abs()));
        let u = inst.underlying;
        let spot = self.book.underlyings[u].spot;
        let som_rate = self.book.params.som_rate;
        let som = if inst.option.is_some() {
            som_rate * spot
        } else {
            0.0
        };
        let per_contract = grid.max(history).max(som);
        let value = arrays.values[i];
        let balance_loss = (-(size * (value - price) - fee)).max(0.0);
        // The add-ons (docs/MODEL.md section 11) rise by at most a contract's share of each: the
        // option or basis add-on by its rate times spot (a contract moves the short options,
        // or the smaller linear side, by at most one), the oracle add-on by its rate times the
        // confidence; each of the first two also moves with the price by its own value. The
        // liquidity add-on `k S |Delta|^1.5 / sqrt(adv)`: the account's net delta is at most
        // its gross `G` in size, the fill moves it by at most `q` (its size times its largest
        // delta), so it rises by at most `k S ((G + q)^1.5 - G^1.5) / sqrt(adv)`; after the
        // fill it moves per unit of relative move by at most
        // `k S ((G + q)^1.5 + 1.5 (G + q)^0.5 Gamma) / sqrt(adv)` at any price (`Gamma` the
        // most the net delta moves per unit of log price), which is added to the slope whole.
        let rates = self.book.underlyings[u].addons;
        let moving_addon = if inst.option.is_some() {
            rates.option * spot
        } else {
            rates.basis * spot
        };
        let (liquidity_rise, liquidity_slope) = if rates.liquidity != 0.0 {
            let (gross, gamma) = pmargin_core::account::delta_bounds(&self.book, account, u);
            let (q, more_gamma) = match &inst.option {
                None => (size.abs(), 0.0),
                Some(o) => (
                    size.abs() * grid::delta_bound(o, self.book.rate),
                    size.abs() * grid::delta_slope_bound(o, self.book.rate),
                ),
            };
            let per_unit = rates.liquidity * spot / rates.adv.sqrt();
            let after = gross + q;
            (
                per_unit * (after * after.sqrt() - gross * gross.sqrt()),
                per_unit * (after * after.sqrt() + 1.5 * after.sqrt() * (gamma + more_gamma)),
            )
        } else {
            (0.0, 0.0)
        };
        let addon_rise = size.abs()
            * (moving_addon + rates.oracle_multiple * self.book.underlyings[u].confidence)
            + liquidity_rise;
        let requirement_rise = size.abs() * per_contract + addon_rise;
        // The fill's own slope: value and scenario rows of `|size|` contracts (as
        // `status_slope_bounds` counts them), added to its underlying's.
        let (linear_factor, option_factor) = self.slope_factors[u];
        let fill_slope = match &inst.option {
            None => size.abs() * inst.forward * (1.0 + linear_factor),
            Some(o) => {
                let delta_bound = grid::delta_bound(o, self.book.rate);
                size.abs() * inst.forward * delta_bound * (1.0 + option_factor)
                    + som_rate * size.abs() * spot
            }
        } + size.abs() * moving_addon
            + liquidity_slope;
        if let Some(s) = slopes.iter_mut().find(|(v, _)| *v == u) {
            s.1 += fill_slope;
        }
        let total: f64 = slopes.iter().map(|(_, l)| l).sum();
        let allowance = ROUNDING_ALLOWANCE
            * (1.0
                + room
                + moved
                + total
                + fee
                + addon_rise
                + size.abs() * (value.abs() + price.abs() + per_contract));
        let room = room - moved - balance_loss - requirement_rise - allowance;
        (room > 0.0 && total.is_finite()).then_some(ScreenedFill { room, slopes })
    }

    /// The pre-trade rule: accepted if the account covers initial margin afterwards, or if the
    /// change strictly lowers its requirement without lowering its surplus over it. Brings the
    /// trial's exposures up to date; on acceptance returns its figures.
    ///
    /// The rows still valid in `rows` (a cache of the account's), less those `void` marks, are
    /// reused; on return it holds the trial's rows and sums.
    fn admit(
        &self,
        a: usize,
        trial: &mut BookAccount,
        rows: &mut RowCache,
        void: u64,
    ) -> Result<AccountRisk, Output> {
        update_exposures(&self.book.assets, trial);
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let mut after = self
            .evaluate_cached(&evaluator, trial, rows, void)
            .map_err(|e| reject(e.to_string()))?;
        let figures = AccountRisk::from(&after);
        // With a stable price, collateral cannot be borrowed against a sudden print: each
        // underlying is valued at whichever of its index and stable price gives the account
        // less (collateral and long exposure at the lower, liabilities and short exposure at
        // the higher), and the margin balance counted for initial margin is the lower of that
        // and its value at the index.
        let scales = self.stable_scales(trial);
        if scales.iter().any(|&x| x != 1.0) {
            let mut worst = vec![1.0; scales.len()];
            for (e, &x) in scales.iter().enumerate() {
                if x == 1.0 {
                    continue;
                }
                let mut one = vec![1.0; scales.len()];
                one[e] = x;
                let at = evaluator
                    .requirement_at_scales(trial, &one)
                    .map_err(|e| reject(e.to_string()))?;
                // A NaN valuation is taken as the worse one.
                if at.margin_balance.is_nan() || at.margin_balance < after.margin_balance {
                    worst[e] = x;
                }
            }
            if worst.iter().any(|&x| x != 1.0) {
                let at_stable = evaluator
                    .requirement_at_scales(trial, &worst)
                    .map_err(|e| reject(e.to_string()))?;
                after.margin_balance = if at_stable.margin_balance.is_nan() {
                    f64::NAN
                } else {
                    after.margin_balance.min(at_stable.margin_balance)
                };
            }
        }
        let covered = after.margin_balance >= after.initial_margin;
        // Reducing risk is allowed even short of initial margin, but only if it does not also
        // eat the account's surplus: a closing fill far from the mark is a loss, not a hedge.
        // (The figures before are only needed, and only recomputed if stale, when not covered.)
        let reduces = || {
            let before = self.figures(a);
            after.initial_margin < before.initial_margin
                && after.margin_balance - after.initial_margin
                    >= before.margin_balance - before.initial_margin
        };
        if covered || reduces() {
            Ok(figures)
        } else {
            Err(Output::Rejected {
                reason: format!("account {} would be below initial margin", trial.id),
                required: Some(after.initial_margin),
                available: Some(after.margin_balance),
            })
        }
    }

    /// Stable price / index price of each of the account's exposures (1 without a stable price).
    fn stable_scales(&self, account: &BookAccount) -> Vec<f64> {
        let Some(oracle) = &self.oracle else {
            return Vec::new();
        };
        account
            .exposures
            .iter()
            .map(|&u| {
                let name = &self.book.underlyings[u].name;
                match (
                    oracle.state(name).and_then(|s| s.stable_price),
                    self.market.prices.get(name),
                ) {
                    (Some(stable), Some(&index)) if index > 0.0 => stable / index,
                    _ => 1.0,
                }
            })
            .collect()
    }

    // ----- applying events -----

    /// Applies events in order, handing `each` every event with its outputs and the engine as
    /// it stands after it: the same as [`Engine::apply`] event by event, faster for a long run.
    ///
    /// The loop runs on a thread of the thread pool. A tick's parallel parts (the array refresh
    /// beside the band scan, the re-margins) then start from a thread of the pool, which works
    /// on its own share and takes back whatever no idle thread has picked up; called from
    /// outside the pool, each of them would hand all its work over and sleep until woken
    /// (about a tenth of a tick's time in the replay benchmark).
    ///
    /// It also asks the memory for the data of the trades a few events ahead (prefetch
    /// hints): in the replay benchmark, about 8% of its time.
    pub fn apply_all<'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event> + Send,
        mut each: impl FnMut(&Engine, &'e Event, Vec<Output>) + Send,
    ) {
        rayon::scope(|_| {
            // The events ahead, with their trades' accounts (as they stand: only a hint).
            let mut events = events.into_iter();
            let mut ahead = VecDeque::with_capacity(PREFETCH_AHEAD);
            loop {
                while ahead.len() < PREFETCH_AHEAD {
                    let Some(next) = events.next() else { break };
                    ahead.push_back((next, self.prefetch_accounts(next)));
                }
                let Some((event, _)) = ahead.pop_front() else {
                    break;
                };
                // (The bands' addresses are in the accounts' exposures, asked for earlier.)
                if let Some((_, accounts)) = ahead.get(PREFETCH_AHEAD / 2) {
                    self.prefetch_bands(accounts);
                }
                let outputs = self.apply(event);
                each(self, event, outputs);
            }
        });
    }

    /// Asks the memory for what checking and applying a trade reads of its accounts (their
    /// records, exposures, balances and screens), and returns the accounts.
    fn prefetch_accounts(&self, event: &Event) -> [Option<usize>; 2] {
        let Event::Trade {
            account,
            counterparty,
            ..
        } = event
        else {
            return [None; 2];
        };
        let accounts = [
            self.accounts.get(account.as_str()).copied(),
            counterparty
                .as_deref()
                .and_then(|c| self.accounts.get(c).copied()),
        ];
        // (A hint never panics: what is not there is not asked for.)
        for &a in accounts.iter().flatten() {
            let Some(account) = self.book.accounts.get(a) else {
                continue;
            };
            prefetch(account);
            prefetch_slice(&account.exposures);
            prefetch_slice(&account.balances);
            prefetch_slice(self.room.get(a..=a).unwrap_or_default());
            prefetch_slice(self.status.get(a..=a).unwrap_or_default());
            prefetch_slice(self.row_void.get(a..=a).unwrap_or_default());
        }
        accounts
    }

    /// Asks the memory for the accounts' bands of each of their exposures (the events between
    /// may have changed them: a hint).
    fn prefetch_bands(&self, accounts: &[Option<usize>; 2]) {
        for &a in accounts.iter().flatten() {
            let Some(account) = self.book.accounts.get(a) else {
                continue;
            };
            for &u in &account.exposures {
                if let Some(band) = self.bands.get(u).and_then(|b| b.0.get(a)) {
                    prefetch(band);
                }
            }
        }
    }

    /// Applies one event and returns what the engine concluded. A refused event changes
    /// nothing and returns a single [`Output::Rejected`].
    pub fn apply(&mut self, event: &Event) -> Vec<Output> {
        self.sequence += 1;
        // Fills void rows in the caches of their two accounts, price ticks only change one
        // underlying's arrays (and close-outs void every cache as they move holdings); any
        // other event voids every row cache before and after it.
        let voids = !matches!(event, Event::Trade { .. } | Event::Price { .. });
        if voids {
            self.void_row_caches();
        }
        let mut out = Vec::new();
        let result = match event {
            Event::Deposit {
                account,
                asset,
                amount,
            } => self.deposit(account, asset, *amount, &mut out),
            Event::Withdrawal {
                account,
                asset,
                amount,
            } => self.withdraw(account, asset, *amount, &mut out),
            Event::Trade {
                account,
                instrument,
                size,
                price,
                fee,
                counterparty,
            } => self.trade(
                account,
                instrument,
                *size,
                *price,
                *fee,
                counterparty.as_deref(),
                &mut out,
            ),
            Event::Price { underlying, price } => self.price(underlying, *price, &mut out),
            Event::Mark { instrument, price } => self.mark(instrument, *price, &mut out),
            Event::Vol {
                underlying,
                vol,
                instrument,
            } => self.vol(underlying, *vol, instrument.as_deref(), &mut out),
            Event::ActivateParams { params } => self.activate(params, &mut out),
            Event::Settlement { instrument, price } => self.settle(instrument, *price, &mut out),
            Event::Funding { instrument, rate } => self.funding(instrument, *rate, &mut out),
            Event::Quote {
                source,
                underlying,
                price,
                ts_ms,
            } => self.quote(source, underlying, *price, *ts_ms, &mut out),
            Event::OracleTick { now_ms } => self.oracle_tick(*now_ms, &mut out),
            Event::Liquidate => {
                self.liquidation_round(&mut out);
                Ok(())
            }
        };
        if voids {
            self.void_row_caches();
        }
        match result {
            Ok(()) => out,
            Err(rejection) => vec![rejection],
        }
    }

    /// [`Engine::apply`], except that a refused event does not count in the sequence either:
    /// the service logs only the events that changed something, so the log's numbering and the
    /// engine's stay one and the same (refusals change nothing, so leaving them out of the log
    /// replays to the same state).
    pub fn apply_accepted(&mut self, event: &Event) -> Vec<Output> {
        let out = self.apply(event);
        if matches!(out.as_slice(), [Output::Rejected { .. }]) {
            self.sequence -= 1;
        }
        out
    }

    /// Whether an [`Event::OracleTick`] at `now_ms` would change an index or its health (its
    /// quotes aged past `max_age_ms`, say): the service's timer logs a tick only then.
    pub fn oracle_tick_due(&self, now_ms: i64) -> bool {
        let Some(oracle) = &self.oracle else {
            return false;
        };
        let mut trial = oracle.clone();
        self.book.underlyings.iter().any(|u| {
            let Some(before) = oracle.state(&u.name) else {
                return false;
            };
            if now_ms <= before.updated_ms {
                return false;
            }
            let after = trial.update(&u.name, now_ms);
            after.health != before.health || after.price != before.price
        })
    }

    /// Re-assesses every index the oracle tracks at `now_ms` (never backwards in time), as a
    /// quote would, so a dead feed turns its index stale and suspends its liquidations.
    fn oracle_tick(&mut self, now_ms: i64, out: &mut Vec<Output>) -> Result<(), Output> {
        let Some(oracle) = self.oracle.as_mut() else {
            return Err(reject(
                "oracle_tick: the engine has no oracle configured".into(),
            ));
        };
        let mut updates = Vec::new();
        for u in &self.book.underlyings {
            if oracle.state(&u.name).is_some_and(|s| s.updated_ms < now_ms) {
                updates.push(oracle.update(&u.name, now_ms));
            }
        }
        for update in updates {
            if update.price_changed {
                if let Some(index) = update.price {
                    self.price(&update.underlying, index, out)?;
                }
            }
            if update.health_changed {
                out.extend(self.set_liquidations_suspended(
                    &update.underlying,
                    update.health != Health::Fresh,
                ));
            }
        }
        Ok(())
    }

    /// Marks an underlying's liquidations suspended (the oracle distrusts its price) or resumed.
    pub fn set_liquidations_suspended(&mut self, underlying: &str, suspended: bool) -> Vec<Output> {
        self.void_row_caches();
        let Some(u) = self.book.underlying_index(underlying) else {
            return Vec::new();
        };
        let changed = if suspended {
            self.suspended.insert(u)
        } else {
            self.suspended.remove(&u)
        };
        let mut out = Vec::new();
        if changed {
            out.push(Output::LiquidationsSuspended {
                underlying: underlying.to_string(),
                suspended,
            });
            if !suspended {
                self.liquidation_round(&mut out);
            }
        }
        out
    }

    fn deposit(
        &mut self,
        account: &str,
        asset: &str,
        amount: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        positive("deposit: amount", amount)?;
        if amount > MAX_AMOUNT {
            return Err(reject(format!(
                "deposit: amount {amount} exceeds the largest allowed, {MAX_AMOUNT:e}"
            )));
        }
        // Refused deposits change nothing (the service does not log them): the account id is
        // checked before the asset is listed.
        if !self.accounts.contains_key(account) && !valid_account_id(account) {
            return Err(reject(format!(
                "account id `{account}` must be 1 to 64 characters of A-Z a-z 0-9 _ . : -"
            )));
        }
        let asset = self
            .book
            .ensure_asset(asset, &self.market)
            .map_err(|e| reject(e.to_string()))?;
        self.arrays.extend(&self.book);
        let a = match self.accounts.get(account) {
            Some(&a) => a,
            None => self.open_account(account)?,
        };
        add_balance(&mut self.book.accounts[a], asset, amount);
        self.refresh(&[a], out);
        Ok(())
    }

    fn withdraw(
        &mut self,
        account: &str,
        asset: &str,
        amount: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        positive("withdrawal: amount", amount)?;
        if amount > MAX_AMOUNT {
            return Err(reject(format!(
                "withdrawal: amount {amount} exceeds the largest allowed, {MAX_AMOUNT:e}"
            )));
        }
        let a = *self
            .accounts
            .get(account)
            .ok_or_else(|| reject(format!("withdrawal: no account `{account}`")))?;
        let asset = self
            .book
            .assets
            .iter()
            .position(|x| x.name == asset)
            .ok_or_else(|| reject(format!("withdrawal: account `{account}` holds no {asset}")))?;
        // An index the oracle distrusts (stale, no quorum, an unconfirmed jump) prices nothing
        // that leaves the venue: a dead feed must not let collateral out at its last print.
        if let Some(&u) = self.book.accounts[a]
            .exposures
            .iter()
            .find(|u| self.suspended.contains(u))
        {
            let name = &self.book.underlyings[u].name;
            let health = self.oracle.as_ref().and_then(|o| o.state(name)).map_or(
                "unknown".to_string(),
                |s| {
                    serde_json::to_value(s.health)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                },
            );
            return Err(reject(format!(
                "{STALE_INDEX_REJECTION}: the {name} index is not trusted ({health}); withdrawals priced on it are refused until it is fresh"
            )));
        }
        let mut trial = self.book.accounts[a].clone();
        add_balance(&mut trial, asset, -amount);
        // (Every event but a trade or a tick voids the row caches: nothing to reuse or keep.)
        let mut rows = RowCache::default();
        let risk = self.admit(a, &mut trial, &mut rows, 0)?;
        self.commit(a, trial, risk, rows.kept.sums(), out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn trade(
        &mut self,
        account: &str,
        instrument: &str,
        size: f64,
        price: f64,
        fee: f64,
        counterparty: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        let listed = self.book.instruments.len();
        let (a, i, first) = self
            .trial_trade(account, instrument, size, price, fee)
            .inspect_err(|_| self.forget_instruments_from(listed))?;
        let first = (a, first);
        let second = match counterparty {
            Some(c) if c == account => {
                self.forget_instruments_from(listed);
                return Err(reject("trade: an account cannot trade with itself".into()));
            }
            Some(c) => Some(
                self.trial_fill(c, i, -size, price, fee)
                    .inspect_err(|_| self.forget_instruments_from(listed))?,
            ),
            // A one-sided fill is taken: a file `pmargin replay` reads is trusted as written.
            // The service, where fills from outside arrive, requires the counterparty (issue
            // 15: `api::post_event`), so value there only moves between two accounts.
            None => None,
        };
        let settle = self.settlement_index().map_err(reject)?;
        // The checks evaluated each side after the fill, against the book and risk arrays the
        // fill is applied to (the two sides are different accounts): their figures are final.
        // A screened side is filled without evaluation: its status is proven unchanged and its
        // figures are recomputed when read.
        for ((a, trial), q) in std::iter::once((first, size)).chain(second.map(|s| (s, -size))) {
            self.insurance_fund += fee;
            match trial {
                Trial::Evaluated(trial, risk, mut rows) => {
                    let opened = trial.positions.len() > self.book.accounts[a].positions.len();
                    // The trial's rows were summed from the holdings committed, in today's book.
                    self.commit(a, trial, risk, rows.kept.sums(), out);
                    if opened {
                        self.held.mark(&self.book, a, i);
                    }
                    self.trim_cache(&self.book.accounts[a], &mut rows);
                    self.row_cache[a] = *rows;
                    self.row_void[a] = 0;
                }
                Trial::Screened(fill) => {
                    let closed = self.fill_account(a, i, q, price, settle);
                    add_balance(&mut self.book.accounts[a], settle, -fee);
                    // Only a position closed to zero can change the exposures (the fill's
                    // underlying was one already; the settlement asset is stable).
                    if closed {
                        self.update_exposures_of(a);
                    }
                    self.risk[a].take();
                    self.set_screen(a, fill.room, fill.slopes);
                }
            }
        }
        Ok(())
    }

    fn price(&mut self, underlying: &str, price: f64, out: &mut Vec<Output>) -> Result<(), Output> {
        let u = self.underlying(underlying)?;
        positive(&format!("price: {underlying} price"), price)?;
        let old = self.market.prices.get(underlying).copied().unwrap_or(price);
        let ratio = price / old;
        self.market.prices.insert(underlying.to_string(), price);
        if let Some(m) = self.market.perpetual_marks.get_mut(underlying) {
            *m *= ratio;
        }
        for ((name, _), m) in self.market.future_marks.iter_mut() {
            if name == underlying {
                *m *= ratio;
            }
        }
        self.remargin_underlying(u, true, out)
    }

    /// A venue quote: the oracle aggregates it; an accepted index move re-margins the
    /// underlying, and a change of the index's health suspends or resumes liquidations.
    fn quote(
        &mut self,
        source: &str,
        underlying: &str,
        price: f64,
        ts_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        self.underlying(underlying)?;
        if price > MAX_PRICE {
            return Err(reject(format!(
                "quote: price {price} exceeds the largest allowed, {MAX_PRICE:e}"
            )));
        }
        let oracle = self
            .oracle
            .as_mut()
            .ok_or_else(|| reject("quote: the engine has no oracle configured".into()))?;
        oracle
            .submit(Quote {
                source: source.to_string(),
                underlying: underlying.to_string(),
                price,
                ts_ms,
            })
            .map_err(|e| reject(format!("quote: {e}")))?;
        let update = oracle.update(underlying, ts_ms);
        if update.price_changed {
            if let Some(index) = update.price {
                self.price(underlying, index, out)?;
            }
        }
        if update.health_changed {
            out.extend(self.set_liquidations_suspended(underlying, update.health != Health::Fresh));
        }
        Ok(())
    }

    fn mark(&mut self, instrument: &str, price: f64, out: &mut Vec<Output>) -> Result<(), Output> {
        let inst = Instrument::parse(instrument).map_err(reject)?;
        let u = self.underlying(&inst.underlying)?;
        positive(&format!("mark: {instrument}"), price)?;
        match (inst.kind, inst.expiry) {
            (Kind::Perpetual, _) => {
                self.market
                    .perpetual_marks
                    .insert(inst.underlying.clone(), price);
            }
            (Kind::Future, Some(expiry)) => {
                self.market
                    .future_marks
                    .insert((inst.underlying.clone(), expiry), price);
            }
            _ => {
                return Err(reject(format!(
                    "mark: {instrument} is an option; send its vol instead"
                )))
            }
        }
        self.remargin_underlying(u, false, out)
    }

    fn vol(
        &mut self,
        underlying: &str,
        vol: f64,
        instrument: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        let u = self.underlying(underlying)?;
        positive("vol", vol)?;
        match instrument {
            Some(name) => {
                let inst = Instrument::parse(name).map_err(reject)?;
                if !inst.is_option() || inst.underlying != underlying {
                    return Err(reject(format!(
                        "vol: {name} is not an option on {underlying}"
                    )));
                }
                self.market.ivs.insert(name.to_string(), vol);
            }
            None => {
                self.market
                    .vols
                    .entry(underlying.to_string())
                    .or_default()
                    .default = Some(vol);
            }
        }
        self.remargin_underlying(u, false, out)
    }

    fn activate(
        &mut self,
        params: &serde_json::Value,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        let params = Params::parse("activate_params", &params.to_string())
            .map_err(|e| reject(e.to_string()))?;
        let book = Book::build(&self.portfolio(), &self.market, &params)
            .map_err(|e| reject(e.to_string()))?;
        let arrays = RiskArrays::compute(&book, None).map_err(|e| reject(e.to_string()))?;
        self.book = book;
        self.arrays = arrays;
        let before = std::mem::take(&mut self.status);
        self.full_recompute();
        for (a, old) in before.into_iter().enumerate() {
            let new = *self.figures(a);
            self.emit_change(a, old, &new, out);
        }
        self.liquidation_round(out);
        Ok(())
    }

    fn settle(
        &mut self,
        instrument: &str,
        price: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        if !(price.is_finite() && price >= 0.0) {
            return Err(reject(format!(
                "settlement: price must be finite and non-negative, got {price}"
            )));
        }
        let i = self
            .book
            .instrument_index(instrument)
            .ok_or_else(|| reject(format!("settlement: no position in {instrument}")))?;
        let kind = self.book.instruments[i].instrument.kind;
        if kind == Kind::Perpetual {
            return Err(reject("settlement: a perpetual never expires".into()));
        }
        let settle = self.settlement_index().map_err(reject)?;
        let mut touched = Vec::new();
        for (a, account) in self.book.accounts.iter_mut().enumerate() {
            let mut amount_total = 0.0;
            let mut size_total = 0.0;
            account.positions.retain(|p| {
                if p.instrument != i {
                    return true;
                }
                let amount = match kind {
                    Kind::Option {
                        strike,
                        side: OptionKind::Call,
                    } => p.size * (price - strike).max(0.0),
                    Kind::Option {
                        strike,
                        side: OptionKind::Put,
                    } => p.size * (strike - price).max(0.0),
                    _ => p.size * (price - p.entry_price),
                };
                amount_total += amount;
                size_total += p.size;
                false
            });
            if size_total != 0.0 || amount_total != 0.0 {
                add_balance(account, settle, amount_total);
                out.push(Output::Settled {
                    account: account.id.clone(),
                    instrument: instrument.to_string(),
                    size: size_total,
                    amount: amount_total,
                });
                touched.push(a);
            }
        }
        self.refresh(&touched, out);
        self.liquidation_round(out);
        Ok(())
    }

    fn funding(
        &mut self,
        instrument: &str,
        rate: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        if !(rate.is_finite() && rate.abs() < 1.0) {
            return Err(reject(format!(
                "funding: rate must be finite and below 1 in size, got {rate}"
            )));
        }
        let i = self
            .book
            .instrument_index(instrument)
            .ok_or_else(|| reject(format!("funding: no position in {instrument}")))?;
        if self.book.instruments[i].instrument.kind != Kind::Perpetual {
            return Err(reject(format!("funding: {instrument} is not a perpetual")));
        }
        let mark = self.book.instruments[i].forward;
        let settle = self.settlement_index().map_err(reject)?;
        let mut touched = Vec::new();
        for (a, account) in self.book.accounts.iter_mut().enumerate() {
            let size: f64 = account
                .positions
                .iter()
                .filter(|p| p.instrument == i)
                .map(|p| p.size)
                .sum();
            if size != 0.0 {
                add_balance(account, settle, -size * mark * rate);
                touched.push(a);
            }
        }
        self.refresh(&touched, out);
        self.liquidation_round(out);
        Ok(())
    }

    // ----- re-margining -----

    /// Re-marks underlying `u`, refreshes its risk arrays once, re-margins the accounts exposed
    /// to it, then liquidates what has to be. With `screened` (a price tick that scales every
    /// price of `u` together), only the accounts whose safe band the new price leaves are
    /// re-margined; the others keep their status and their figures go stale.
    fn remargin_underlying(
        &mut self,
        u: usize,
        screened: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), Output> {
        // The bands assume vols held: if re-marking moved an option's vol (a smile read at the
        // new forward), every exposed account is re-margined.
        let vols_before: Vec<(usize, f64)> = if screened {
            self.option_vols(u)
        } else {
            Vec::new()
        };
        self.book
            .remark_underlying(&self.market, u)
            .map_err(|e| reject(e.to_string()))?;
        let screened = screened && self.option_vols(u) == vols_before;
        // The scan and the re-cuts read prices and bands only, not the risk arrays: they run
        // while the arrays are refreshed (the two are the larger part of a tick).
        let Engine {
            arrays,
            book,
            bands,
            risk,
            room,
            ..
        } = self;
        let mut refresh = || refresh_arrays(arrays, book, u);
        let mut screen = || screen_tick(bands, risk, room, book, u, screened);
        // (A small book's tick is over before the pool would have woken up.)
        let left = if book.accounts.len() >= PARALLEL_TICK_MIN_ACCOUNTS {
            rayon::join(refresh, screen).1
        } else {
            refresh();
            screen()
        };
        self.arrays_changed(u);
        // Each proof reads the book and its own account's bands only: many run on the pool.
        let prove = |&a: &usize| self.recentre_room(a);
        let proofs: Vec<Option<(f64, f64)>> = if !screened {
            vec![None; left.len()]
        } else if left.len() < PARALLEL_REMARGIN_MIN {
            left.iter().map(prove).collect()
        } else {
            left.par_iter().map(prove).collect()
        };
        let mut due = Vec::with_capacity(left.len());
        for (a, proof) in left.into_iter().zip(proofs) {
            match proof {
                Some((room, delta)) => self.recentre(a, room, delta),
                None => due.push(a),
            }
        }
        self.remargin(&due, out);
        self.liquidation_round(out);
        Ok(())
    }

    /// A price left account `a`'s band and re-cutting did not prove its status: most of its
    /// slope bound is its margin balance's, which is cheap to recompute exactly (values and
    /// balances, no scenario). With it exact and the requirement bounded by its slope since the
    /// last evaluation (`|IM - IM_eval| <= sum_u R_u |p_u / p_u,eval - 1|`), the status is
    /// proven unchanged if every status figure stays on its side over that whole range; the
    /// bands can then be re-centred on today's prices ([`Engine::recentre`]) with what is left
    /// as their room (the requirement's spread so far is spent; later moves are covered by the
    /// full slopes). Returns that room and the relative band width, or `None` (the account must
    /// be re-margined).
    fn recentre_room(&self, a: usize) -> Option<(f64, f64)> {
        let required = self.required[a];
        if !(required.is_finite() && self.room[a] > 0.0) {
            return None;
        }
        let account = &self.book.accounts[a];
        let (mut spread, mut total) = (0.0, 0.0);
        for &u in &account.exposures {
            let band = &self.bands[u].0[a];
            let p = self.book.underlyings[u].spot;
            if !band.holds_at(p) {
                return None;
            }
            spread += band.required_slope * (p / band.evaluated_at - 1.0).abs();
            total += band.slope * (p / band.reference);
        }
        let (balance, gross) = Evaluator::new(&self.book, &self.arrays).margin_balance(account);
        let mm = self.book.params.mm_fraction;
        let cushion = balance
            .abs()
            .min((balance - mm * required).abs() - mm * spread)
            .min((balance - required).abs() - spread);
        let allowance =
            ROUNDING_ALLOWANCE * (1.0 + gross + balance.abs() + required.abs() + spread + total);
        let room = cushion - 2.0 * allowance;
        let delta = (room / total * (1.0 - 1e-9)).min(MAX_BAND);
        // (`f64::min` passes a NaN over: everything it took must be finite.)
        if !(room > 0.0
            && delta > 0.0
            && total.is_finite()
            && spread.is_finite()
            && balance.is_finite()
            && Status::of(balance, required, mm * required) == self.status[a])
        {
            return None;
        }
        Some((room, delta))
    }

    /// Re-centres account `a`'s bands on today's prices with the `room` and relative width
    /// `delta` [`Engine::recentre_room`] proved; its figures go stale.
    fn recentre(&mut self, a: usize, room: f64, delta: f64) {
        self.room[a] = room;
        for &u in &self.book.accounts[a].exposures {
            let p = self.book.underlyings[u].spot;
            let band = &mut self.bands[u].0[a];
            band.slope *= p / band.reference;
            band.reference = p;
            band.set_edges(p - p * delta, p + p * delta);
        }
        self.risk[a].take();
    }

    /// The vol of every option on `u` in the book, in instrument order.
    fn option_vols(&self, u: usize) -> Vec<(usize, f64)> {
        self.book
            .instruments
            .iter()
            .enumerate()
            .filter(|(_, p)| p.underlying == u)
            .filter_map(|(i, p)| p.option.map(|o| (i, o.vol)))
            .collect()
    }

    /// Recomputes the given accounts (in parallel) and records status changes in order.
    fn remargin(&mut self, accounts: &[usize], out: &mut Vec<Output>) {
        let mut caches: Vec<RowCache> = accounts
            .iter()
            .map(|&a| std::mem::take(&mut self.row_cache[a]))
            .collect();
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let (screening, factors) = (self.config.screening, &self.slope_factors);
        let one = |(&a, cache): (&usize, &mut RowCache)| {
            let account = &self.book.accounts[a];
            let evaluated = self.evaluate_cached(&evaluator, account, cache, self.row_void[a]);
            let fresh = match evaluated {
                Ok(r) => {
                    let r = AccountRisk::from(&r);
                    let sums = cache.kept.sums();
                    let screen = screen_of(&evaluator, factors, account, &r, screening, sums);
                    (Some(r), screen)
                }
                Err(_) => (None, Screen::NONE),
            };
            self.trim_cache(account, cache);
            fresh
        };
        // Fanning a trade's two accounts out to the thread pool costs more than computing them.
        let fresh: Vec<(Option<AccountRisk>, Screen)> = if accounts.len() < PARALLEL_EVALUATION_MIN
        {
            accounts.iter().zip(caches.iter_mut()).map(one).collect()
        } else {
            accounts
                .par_iter()
                .zip(caches.par_iter_mut())
                .map(one)
                .collect()
        };
        for (&a, cache) in accounts.iter().zip(caches) {
            self.row_cache[a] = cache;
            self.row_void[a] = 0;
        }
        for (&a, (new, screen)) in accounts.iter().zip(fresh) {
            let old = self.status[a];
            // An account that cannot be evaluated keeps its figures.
            let new = new.unwrap_or_else(|| *self.figures(a));
            self.set_figures(a, new, screen);
            self.emit_change(a, old, &new, out);
        }
    }

    /// Applies a fill to account `a`'s holdings ([`apply_fill`]) and marks what of its cached
    /// rows and sums the fill voids. Returns whether it closed a position.
    fn fill_account(&mut self, a: usize, i: usize, size: f64, price: f64, settle: usize) -> bool {
        let before = self.book.accounts[a].positions.len();
        apply_fill(
            &self.book.instruments,
            &mut self.book.accounts[a],
            i,
            size,
            price,
            settle,
            self.held.may_hold(a, i),
        );
        let after = self.book.accounts[a].positions.len();
        if after > before {
            self.held.mark(&self.book, a, i);
        }
        self.row_void[a] |= self.fill_bits(i, settle, before, after);
        after < before
    }

    /// What a fill of instrument `i` settled in asset `settle`, which took the account from
    /// `before` to `after` positions, voids: the rows of the instrument's underlying and of the
    /// settlement asset's, if it has one (the other rows, summed from other holdings, stay
    /// exact), and the grouping of the positions if it opened or closed one.
    fn fill_bits(&self, i: usize, settle: usize, before: usize, after: usize) -> u64 {
        let asset = self.book.assets[settle].underlying.map_or(0, row_bit);
        let shape = if after == before { 0 } else { SHAPE };
        row_bit(self.book.instruments[i].underlying) | asset | shape
    }

    /// An account's requirement, reusing the rows and sums of `cache` still valid and not
    /// marked in `void`, and leaving the account's in it.
    fn evaluate_cached(
        &self,
        evaluator: &Evaluator<'_>,
        account: &BookAccount,
        cache: &mut RowCache,
        void: u64,
    ) -> Result<Requirement, pmargin_core::InputError> {
        cache.evaluate(
            evaluator,
            account,
            self.generation,
            &self.array_version,
            void,
        )
    }

    /// Empties the cache of an account too small to keep one (summing its rows again costs
    /// little; keeping them would only take memory).
    fn trim_cache(&self, account: &BookAccount, cache: &mut RowCache) {
        if account.positions.len() < self.row_cache_min {
            *cache = RowCache::default();
        }
    }

    /// Records account `a`'s fresh figures and its screen.
    fn set_figures(&mut self, a: usize, risk: AccountRisk, screen: Screen) {
        self.status[a] = risk.status;
        self.risk[a] = OnceLock::from(risk);
        let was_failing = self.failing.contains(&a);
        if was_failing != matches!(risk.status, Status::Liquidatable | Status::Bankrupt) {
            if was_failing {
                self.failing.remove(&a);
            } else {
                self.failing.insert(a);
            }
        }
        // The slopes hold near today's prices: the bands' windows are centred on them.
        for (e, &u) in self.book.accounts[a].exposures.iter().enumerate() {
            let band = &mut self.bands[u].0[a];
            band.evaluated_at = self.book.underlyings[u].spot;
            band.required_slope = screen.required.get(e).copied().unwrap_or(f64::INFINITY);
        }
        let slopes = self.book.accounts[a]
            .exposures
            .iter()
            .copied()
            .zip(screen.slopes)
            .collect();
        self.set_screen(a, screen.room, slopes);
        if self.room[a] > 0.0 {
            self.required[a] = risk.initial_margin;
        }
    }

    /// Centres account `a`'s bands on today's prices: `slopes` are its exposures' slope bounds
    /// (any exposure missing from them, or a room that is not positive, is never screened).
    fn set_screen(&mut self, a: usize, room: f64, slopes: Vec<(usize, f64)>) {
        let total: f64 = slopes.iter().map(|(_, l)| l).sum();
        let delta = (room / total * (1.0 - 1e-9)).min(MAX_BAND);
        let screened = room > 0.0 && total.is_finite() && delta > 0.0;
        self.room[a] = if screened { room } else { f64::NEG_INFINITY };
        self.required[a] = f64::NAN;
        for &u in &self.book.accounts[a].exposures {
            let p = self.book.underlyings[u].spot;
            let slope = slopes.iter().find(|(v, _)| *v == u).map(|(_, l)| *l);
            let band = &mut self.bands[u].0[a];
            match slope {
                Some(_) if screened => band.set_edges(p - p * delta, p + p * delta),
                _ => (band.lo, band.hi) = ALWAYS,
            }
            band.reference = p;
            band.slope = slope.unwrap_or(f64::INFINITY);
        }
    }

    /// Brings account `a`'s exposures up to date after its holdings changed; underlyings it
    /// left lose its bands (the new ones get theirs when it is re-margined).
    fn update_exposures_of(&mut self, a: usize) {
        let old = std::mem::take(&mut self.book.accounts[a].exposures);
        update_exposures(&self.book.assets, &mut self.book.accounts[a]);
        for u in old {
            if !self.book.accounts[a].exposures.contains(&u) {
                self.bands[u].clear(a);
            }
        }
    }

    /// A version never handed out before.
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Voids every account's row cache (holdings may have changed).
    fn void_row_caches(&mut self) {
        self.generation = self.next_version();
    }

    /// Underlying `u`'s risk arrays were refreshed: cached rows of it are void.
    fn arrays_changed(&mut self, u: usize) {
        let version = self.next_version();
        if self.array_version.len() <= u {
            self.array_version.resize(u + 1, 0);
            self.void_row_caches();
        }
        self.array_version[u] = version;
    }

    /// After an account's holdings changed: its exposures, its bands, its figures.
    fn refresh(&mut self, accounts: &[usize], out: &mut Vec<Output>) {
        for &a in accounts {
            self.update_exposures_of(a);
        }
        self.remargin(accounts, out);
    }

    /// Replaces account `a`'s holdings by `trial`, whose exposures are up to date and whose
    /// figures in today's book are `risk` (as [`Engine::admit`] computed them).
    /// `sums`: the trial's sums per exposure, as its evaluation kept them.
    fn commit(
        &mut self,
        a: usize,
        trial: BookAccount,
        risk: AccountRisk,
        sums: &[ExposureSums],
        out: &mut Vec<Output>,
    ) {
        let old = std::mem::replace(&mut self.book.accounts[a], trial);
        for u in old.exposures {
            if !self.book.accounts[a].exposures.contains(&u) {
                self.bands[u].clear(a);
            }
        }
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let screen = screen_of(
            &evaluator,
            &self.slope_factors,
            &self.book.accounts[a],
            &risk,
            self.config.screening,
            sums,
        );
        let before = self.status[a];
        self.set_figures(a, risk, screen);
        self.emit_change(a, before, &risk, out);
    }

    fn full_recompute(&mut self) {
        let n = self.book.accounts.len();
        self.bands = vec![Bands::new(n); self.book.underlyings.len()];
        self.row_cache = vec![RowCache::default(); n];
        self.row_void = vec![0; n];
        self.held = Held::of(&self.book);
        self.void_row_caches();
        self.array_version = vec![self.generation; self.book.underlyings.len()];
        self.room = vec![f64::NEG_INFINITY; n];
        self.required = vec![f64::NAN; n];
        for a in 0..n {
            update_exposures(&self.book.assets, &mut self.book.accounts[a]);
        }
        self.slope_factors = slope_factors(&self.arrays);
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let (screening, factors) = (self.config.screening, &self.slope_factors);
        let fresh: Vec<(AccountRisk, Screen)> = self
            .book
            .accounts
            .par_iter()
            .map(|a| {
                let mut kept = Kept::default();
                match evaluator.requirement_reusing(a, &[], false, &mut kept) {
                    Ok(r) => {
                        let r = AccountRisk::from(&r);
                        let screen = screen_of(&evaluator, factors, a, &r, screening, kept.sums());
                        (r, screen)
                    }
                    Err(_) => (ZERO_RISK, Screen::NONE),
                }
            })
            .collect();
        self.risk = vec![OnceLock::new(); n];
        self.status = vec![Status::Healthy; n];
        self.failing.clear();
        for (a, (r, screen)) in fresh.into_iter().enumerate() {
            self.set_figures(a, r, screen);
        }
    }

    fn emit_change(&self, a: usize, old: Status, new: &AccountRisk, out: &mut Vec<Output>) {
        if old != new.status {
            out.push(Output::MarginChange {
                account: self.book.accounts[a].id.clone(),
                from: old.as_str().into(),
                to: new.status.as_str().into(),
                margin_balance: new.margin_balance,
                initial_margin: new.initial_margin,
                maintenance_margin: new.maintenance_margin,
            });
        }
    }

    // ----- liquidation -----

    /// Liquidates every account below maintenance, in account order, except the liquidator
    /// and accounts exposed to an underlying whose liquidations are suspended.
    fn liquidation_round(&mut self, out: &mut Vec<Output>) {
        // A close-out can deleverage other accounts; they are looked at again in the next
        // pass. Bounded: each pass either liquidates something or ends the round.
        for _ in 0..MAX_LIQUIDATION_PASSES {
            let liquidator = self.accounts.get(&self.config.liquidator).copied();
            let candidates: Vec<usize> = self
                .failing
                .iter()
                .copied()
                .filter(|&a| Some(a) != liquidator)
                .filter(|&a| {
                    !self.book.accounts[a]
                        .exposures
                        .iter()
                        .any(|u| self.suspended.contains(u))
                })
                .filter(|&a| self.has_anything_to_liquidate(a))
                .collect();
            if candidates.is_empty() {
                break;
            }
            for a in candidates {
                self.liquidate(a, out);
            }
        }
        if std::mem::take(&mut self.liquidator_dirty) {
            if let Some(l) = self.accounts.get(&self.config.liquidator).copied() {
                self.refresh(&[l], out);
            }
        }
    }

    /// An account holding positions or coin collateral can be liquidated; one holding only a
    /// negative settlement balance has a deficit to cover once. After a close-out that nobody
    /// could fully cover, what remains is bad debt on the books, not something to act on again.
    fn has_anything_to_liquidate(&self, a: usize) -> bool {
        let settle = self.settlement_index().ok();
        let account = &self.book.accounts[a];
        !account.positions.is_empty()
            || account
                .balances
                .iter()
                .any(|b| Some(b.asset) != settle && b.amount != 0.0)
            || !self.bad_debt.contains(&a)
    }

    /// Partial liquidation: repeatedly take the step that restores the most margin surplus
    /// (margin balance minus initial margin) per dollar of penalty, until the account covers
    /// initial margin again. An account that cannot be restored, or whose margin balance is
    /// negative, is closed out.
    fn liquidate(&mut self, a: usize, out: &mut Vec<Output>) {
        let Some(liquidator) = self.accounts.get(&self.config.liquidator).copied() else {
            return;
        };
        let Ok(settle) = self.settlement_index() else {
            return;
        };
        for _ in 0..MAX_LIQUIDATION_STEPS {
            let current = *self.figures(a);
            if current.margin_balance >= current.initial_margin {
                return;
            }
            if current.margin_balance < 0.0 {
                break;
            }
            match self.best_step(a, settle) {
                Some((position, step)) => {
                    self.transfer(a, liquidator, position, step, settle, true, out)
                }
                None => break,
            }
        }
        let current = *self.figures(a);
        if current.margin_balance < current.initial_margin {
            self.close_out(a, liquidator, settle, out);
        }
    }

    /// The liquidation step with the best surplus relief per unit of penalty, if any helps.
    fn best_step(&self, a: usize, settle: usize) -> Option<(usize, f64)> {
        let account = &self.book.accounts[a];
        let current = *self.figures(a);
        let surplus = current.margin_balance - current.initial_margin;
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        // A step changes one position and the settlement balance: unless it closes the last
        // position on an underlying (or the settlement asset moves with one), the exposures
        // stay, and so does every grid row and sum but the step's underlying's, which each trial
        // then reuses (`requirement_reusing`: bit for bit a full evaluation).
        let stable_settlement = self.book.assets[settle].underlying.is_none();
        let mut kept = Kept::default();
        let base = stable_settlement
            && evaluator
                .requirement_reusing(account, &[], false, &mut kept)
                .is_ok();
        let mut reuse = vec![false; account.exposures.len()];
        let mut trial_kept = Kept::default();
        let mut trial = account.clone();
        let mut best: Option<(f64, usize, f64)> = None;
        for (j, p) in account.positions.iter().enumerate() {
            if p.size == 0.0 {
                continue;
            }
            let price = self.arrays.values[p.instrument];
            let spot = self.book.underlyings[p.underlying].spot;
            let min_size = self.config.min_liquidation_notional / spot.max(f64::MIN_POSITIVE);
            let step = (p.size.abs() * self.config.liquidation_step)
                .max(min_size)
                .min(p.size.abs());
            let penalty = step * price.abs() * self.config.liquidation_penalty;
            trial.positions.clone_from(&account.positions);
            trial.balances.clone_from(&account.balances);
            trial.exposures.clone_from(&account.exposures);
            apply_fill(
                &self.book.instruments,
                &mut trial,
                p.instrument,
                -p.size.signum() * step,
                price,
                settle,
                true,
            );
            add_balance(&mut trial, settle, -penalty);
            let same_holdings_shape =
                stable_settlement && trial.positions.len() == account.positions.len();
            let evaluated = if base && same_holdings_shape {
                for (r, &u) in reuse.iter_mut().zip(&account.exposures) {
                    *r = u != p.underlying;
                }
                trial_kept.clone_from(&kept);
                evaluator.requirement_reusing(&trial, &reuse, true, &mut trial_kept)
            } else {
                update_exposures(&self.book.assets, &mut trial);
                evaluator.requirement(&trial)
            };
            let Ok(after) = evaluated else {
                continue;
            };
            let relief = (after.margin_balance - after.initial_margin) - surplus;
            if relief > 0.0 {
                let score = relief / penalty.max(1e-9);
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, j, step));
                }
            }
        }
        best.map(|(_, j, step)| (j, step))
    }

    /// Moves `step` contracts of position `j` of account `a` to the liquidator at the mark.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        a: usize,
        liquidator: usize,
        j: usize,
        step: f64,
        settle: usize,
        with_penalty: bool,
        out: &mut Vec<Output>,
    ) {
        let p = self.book.accounts[a].positions[j];
        let price = self.arrays.values[p.instrument];
        let size = -p.size.signum() * step;
        // The penalty never takes more than the account's remaining margin balance: it must not
        // turn a liquidation into a bankruptcy. (A fill at the mark leaves equity unchanged.)
        let penalty = if with_penalty {
            (step * price.abs() * self.config.liquidation_penalty)
                .min(self.figures(a).margin_balance.max(0.0))
        } else {
            0.0
        };
        self.fill_account(a, p.instrument, size, price, settle);
        add_balance(&mut self.book.accounts[a], settle, -penalty);
        self.fill_account(liquidator, p.instrument, -size, price, settle);
        self.insurance_fund += penalty;
        out.push(Output::LiquidationFill {
            account: self.book.accounts[a].id.clone(),
            instrument: self.book.instruments[p.instrument].instrument.name.clone(),
            size,
            price,
            penalty,
        });
        // The liquidator holds every instrument it ever took over, so it is the costliest account
        // to evaluate: it is re-margined once at the end of the round, not after every step.
        self.refresh(&[a], out);
        self.liquidator_dirty = true;
    }

    /// Closes every position to the liquidator at mark, sells coin collateral to it at price,
    /// and covers any deficit from the insurance fund, then by deleveraging profitable accounts.
    fn close_out(&mut self, a: usize, liquidator: usize, settle: usize, out: &mut Vec<Output>) {
        self.void_row_caches();
        let held: Vec<(usize, i8)> = self.book.accounts[a]
            .positions
            .iter()
            .map(|p| (p.instrument, p.size.signum() as i8))
            .collect();
        while let Some(j) = self.book.accounts[a]
            .positions
            .iter()
            .position(|p| p.size != 0.0)
        {
            let step = self.book.accounts[a].positions[j].size.abs();
            self.transfer(a, liquidator, j, step, settle, false, out);
        }
        self.book.accounts[a].positions.clear();
        let coins: Vec<BookBalance> = self.book.accounts[a]
            .balances
            .iter()
            .copied()
            .filter(|b| b.asset != settle && b.amount != 0.0)
            .collect();
        for b in coins {
            let value = b.amount * self.book.assets[b.asset].price;
            add_balance(&mut self.book.accounts[a], b.asset, -b.amount);
            add_balance(&mut self.book.accounts[a], settle, value);
            add_balance(&mut self.book.accounts[liquidator], b.asset, b.amount);
            add_balance(&mut self.book.accounts[liquidator], settle, -value);
        }
        let balance = self.book.accounts[a]
            .balances
            .iter()
            .find(|b| b.asset == settle)
            .map_or(0.0, |b| b.amount);
        let deficit = (-balance).max(0.0);
        let insurance_paid = deficit.min(self.insurance_fund);
        self.insurance_fund -= insurance_paid;
        add_balance(&mut self.book.accounts[a], settle, insurance_paid);
        let mut touched = vec![a, liquidator];
        let socialised = self.deleverage(
            a,
            deficit - insurance_paid,
            &held,
            settle,
            &mut touched,
            out,
        );
        if deficit - insurance_paid - socialised > 0.0 {
            self.bad_debt.insert(a);
        } else {
            self.bad_debt.remove(&a);
        }
        out.push(Output::CloseOut {
            account: self.book.accounts[a].id.clone(),
            deficit,
            insurance_paid,
            socialised,
        });
        self.refresh(&touched, out);
    }

    /// Takes `amount` from the most profitable, most leveraged accounts holding positions
    /// opposite to the bankrupt account's, up to each one's unrealised profit. Returns what was
    /// covered; any remainder stays as bad debt on the bankrupt account.
    fn deleverage(
        &mut self,
        a: usize,
        amount: f64,
        held: &[(usize, i8)],
        settle: usize,
        touched: &mut Vec<usize>,
        out: &mut Vec<Output>,
    ) -> f64 {
        self.void_row_caches();
        if amount <= 0.0 {
            return 0.0;
        }
        let liquidator = self.accounts.get(&self.config.liquidator).copied();
        let mut ranked: Vec<(f64, usize, f64)> = Vec::new();
        for (b, account) in self.book.accounts.iter().enumerate() {
            if b == a || Some(b) == liquidator {
                continue;
            }
            let opposite = account.positions.iter().any(|p| {
                held.iter()
                    .any(|(i, s)| *i == p.instrument && p.size.signum() as i8 == -s)
            });
            if !opposite {
                continue;
            }
            let profit: f64 = account
                .positions
                .iter()
                .filter(|p| self.book.instruments[p.instrument].option.is_none())
                .map(|p| p.size * (self.arrays.values[p.instrument] - p.entry_price))
                .sum();
            let notional: f64 = account
                .positions
                .iter()
                .map(|p| (p.size * self.arrays.values[p.instrument]).abs())
                .sum();
            let equity = self.figures(b).equity.max(1.0);
            if profit > 0.0 {
                ranked.push((profit * notional / equity, b, profit));
            }
        }
        ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut remaining = amount;
        for (_, b, profit) in ranked {
            if remaining <= 0.0 {
                break;
            }
            // Never more than the account's surplus over maintenance: deleveraging must not make
            // another account liquidatable, let alone bankrupt.
            let figures = self.figures(b);
            let surplus = figures.margin_balance - figures.maintenance_margin;
            let take = profit.min(remaining).min(surplus.max(0.0));
            if take <= 0.0 {
                continue;
            }
            add_balance(&mut self.book.accounts[b], settle, -take);
            add_balance(&mut self.book.accounts[a], settle, take);
            remaining -= take;
            touched.push(b);
            out.push(Output::Deleveraged {
                account: self.book.accounts[b].id.clone(),
                amount: take,
            });
        }
        amount - remaining
    }

    // ----- helpers -----

    fn open_account(&mut self, id: &str) -> Result<usize, Output> {
        if !valid_account_id(id) {
            return Err(reject(format!(
                "account id `{id}` must be 1 to 64 characters of A-Z a-z 0-9 _ . : -"
            )));
        }
        let a = self.book.accounts.len();
        self.book.accounts.push(BookAccount {
            id: id.to_string(),
            positions: Vec::new(),
            balances: Vec::new(),
            exposures: Vec::new(),
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

    fn underlying(&self, name: &str) -> Result<usize, Output> {
        self.book
            .underlying_index(name)
            .ok_or_else(|| reject(format!("unknown underlying {name}: it has no parameters")))
    }

    fn settlement_index(&self) -> Result<usize, String> {
        self.book
            .assets
            .iter()
            .position(|a| a.name == self.config.settlement_asset)
            .ok_or_else(|| {
                format!(
                    "settlement asset {} is not in the book",
                    self.config.settlement_asset
                )
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

/// How many events ahead of the one it applies [`Engine::apply_all`] asks the memory for a
/// trade's accounts; their bands (whose addresses are in the accounts) at half that.
const PREFETCH_AHEAD: usize = 8;

/// Fewest instruments on an underlying whose risk arrays are refreshed on the thread pool.
const PARALLEL_REFRESH_MIN: usize = 64;

/// [`RiskArrays::refresh_underlying`], the rows of many instruments filled in parallel (each
/// row by the same calls, so the arrays are the same, bit for bit).
fn refresh_arrays(arrays: &mut RiskArrays, book: &Book, u: usize) {
    let on_u = book
        .instruments
        .iter()
        .filter(|p| p.underlying == u)
        .count();
    if on_u < PARALLEL_REFRESH_MIN {
        arrays.refresh_underlying(book, u);
        return;
    }
    arrays.extend(book);
    let (width, n_fhs, rate) = (arrays.width, arrays.fhs_count, book.rate);
    let RiskArrays {
        grid_shocks,
        fhs_shocks,
        values,
        deltas,
        grid,
        asset_grid,
        slot_weights,
        slopes,
        fhs,
        asset_fhs,
        ..
    } = arrays;
    let shocks = &grid_shocks[u];
    values
        .par_iter_mut()
        .zip(deltas.par_iter_mut())
        .zip(grid.par_chunks_mut(width))
        .zip(slopes.par_iter_mut())
        .zip(&book.instruments)
        .with_min_len(16)
        .filter(|(_, inst)| inst.underlying == u)
        .for_each(|((((value, delta), row), slope), inst)| {
            *value = inst.value_at(1.0, rate);
            *delta = inst.delta_at(1.0, rate);
            *slope = fill_instrument_windowed(inst, shocks, slot_weights, rate, row);
        });
    let fhs_u = fhs_shocks.as_ref().and_then(|s| s[u].as_ref());
    if let (Some(history), true) = (fhs_u, n_fhs > 0) {
        fhs.par_chunks_mut(n_fhs)
            .zip(slopes.par_iter_mut())
            .zip(&book.instruments)
            .with_min_len(16)
            .filter(|(_, inst)| inst.underlying == u)
            .for_each(|((row, slope), inst)| {
                fill_instrument(inst, 1.0, history, rate, row);
                *slope = slope.covering(inst, history, rate);
            });
    }
    for (a, asset) in book.assets.iter().enumerate() {
        if asset.underlying == Some(u) {
            fill_asset(
                asset,
                1.0,
                shocks,
                &mut asset_grid[a * width..(a + 1) * width],
            );
            if let (Some(history), true) = (fhs_u, n_fhs > 0) {
                fill_asset(
                    asset,
                    1.0,
                    history,
                    &mut asset_fhs[a * n_fhs..(a + 1) * n_fhs],
                );
            }
        }
    }
}

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

/// The bit of underlying `u` in a mask of voided rows (bit 62 stands for every underlying
/// from 62 on: voiding one of them voids them all, which is only more cautious).
fn row_bit(u: usize) -> u64 {
    1 << u.min(62)
}

/// The bit of a mask of voided rows that says a position was added or removed (so the
/// positions' grouping by exposure is void too).
const SHAPE: u64 = 1 << 63;

impl RowCache {
    /// The account's requirement, reusing the rows and sums still valid (those of the
    /// underlyings marked in `void` are not: holdings on them changed; removing a position
    /// keeps the order of the rest, so the other rows stay exact) and keeping the new ones.
    fn evaluate(
        &mut self,
        evaluator: &Evaluator<'_>,
        account: &BookAccount,
        generation: u64,
        versions: &[u64],
        void: u64,
    ) -> Result<Requirement, pmargin_core::InputError> {
        let valid = self.generation == generation
            && self.exposures == account.exposures
            && self.kept.rows().len() == account.exposures.len() * evaluator.arrays.width;
        let same_positions =
            valid && void & SHAPE == 0 && self.positions == account.positions.len();
        let mut reuse = std::mem::take(&mut self.reuse);
        reuse.clear();
        reuse.extend(
            account
                .exposures
                .iter()
                .zip(&self.versions)
                .map(|(&u, &v)| valid && void & row_bit(u) == 0 && versions.get(u) == Some(&v)),
        );
        let result = evaluator.requirement_reusing(account, &reuse, same_positions, &mut self.kept);
        self.reuse = reuse;
        if result.is_ok() {
            self.generation = generation;
            self.positions = account.positions.len();
            self.exposures.clone_from(&account.exposures);
            self.versions.clear();
            self.versions.extend(
                account
                    .exposures
                    .iter()
                    .map(|&u| versions.get(u).copied().unwrap_or(u64::MAX)),
            );
        } else {
            *self = RowCache::default();
        }
        result
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

/// Allowance for rounding, relative to the size of the figures and of the bounds: the
/// evaluated figures carry errors of order 1e-13 of the terms they are summed from.
const ROUNDING_ALLOWANCE: f64 = 1e-9;

/// Widest relative band (keeps band edges finite).
const MAX_BAND: f64 = 1e6;

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

impl Band {
    /// Whether the band's slopes hold at price `p`: they were summed from options' bounds
    /// near the prices of the account's last evaluation ([`grid::WindowSlope`]), within
    /// [`SLOPE_WINDOW`] of them. (False for a NaN.)
    fn holds_at(&self, p: f64) -> bool {
        let (from, to) = self.window();
        from <= p && p <= to
    }

    /// The prices where the band's slopes hold.
    fn window(&self) -> (f64, f64) {
        let e = self.evaluated_at;
        (e - e * SLOPE_WINDOW, e + e * SLOPE_WINDOW)
    }

    /// Sets the band's edges to `[lo, hi]`, cut to where its slopes hold (anything NaN: an
    /// empty band).
    fn set_edges(&mut self, lo: f64, hi: f64) {
        let (from, to) = self.window();
        (self.lo, self.hi) = if from <= to && lo <= hi {
            (lo.max(from), hi.min(to))
        } else {
            ALWAYS
        };
    }
}

impl Bands {
    fn new(n: usize) -> Bands {
        Bands(vec![UNEXPOSED; n])
    }

    fn push(&mut self) {
        self.0.push(UNEXPOSED);
    }

    fn clear(&mut self, a: usize) {
        self.0[a].lo = NOT_EXPOSED.0;
        self.0[a].hi = NOT_EXPOSED.1;
    }
}

/// What screening knows of an account after an evaluation: a lower bound on the distance of
/// each status figure from zero (`room`, rounding allowances taken) at the reference prices,
/// and the slope bound of each exposure (in `exposures` order; empty: not screened).
struct Screen {
    room: f64,
    slopes: Vec<f64>,
    /// The requirement's part of each slope.
    required: Vec<f64>,
}

impl Screen {
    const NONE: Screen = Screen {
        room: f64::NEG_INFINITY,
        slopes: Vec::new(),
        required: Vec::new(),
    };
}

/// A fill accepted without evaluating the account: the screen it leaves (slopes per
/// underlying, at today's prices).
struct ScreenedFill {
    room: f64,
    slopes: Vec<(usize, f64)>,
}

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

impl Held {
    fn of(book: &Book) -> Held {
        let words = book.instruments.len().div_ceil(64).max(1);
        let mut held = Held {
            bits: vec![0; words * book.accounts.len()],
            words,
        };
        for (a, account) in book.accounts.iter().enumerate() {
            for p in &account.positions {
                held.set(a, p.instrument);
            }
        }
        held
    }

    /// Room for a new account, holding nothing.
    fn push(&mut self) {
        self.bits.extend(std::iter::repeat_n(0, self.words));
    }

    /// Whether account `a` may hold instrument `i` (when unsure: yes).
    fn may_hold(&self, a: usize, i: usize) -> bool {
        i / 64 >= self.words
            || self
                .bits
                .get(a * self.words + i / 64)
                .is_none_or(|w| w >> (i % 64) & 1 == 1)
    }

    /// Account `a` has opened a position in instrument `i` (an instrument added to the book
    /// since the bits were laid out lays them out again).
    fn mark(&mut self, book: &Book, a: usize, i: usize) {
        if i / 64 < self.words {
            self.set(a, i);
        } else {
            *self = Held::of(book);
        }
    }

    fn set(&mut self, a: usize, i: usize) {
        if let Some(w) = self.bits.get_mut(a * self.words + i / 64) {
            *w |= 1 << (i % 64);
        }
    }
}

/// The outcome of an accepted pre-trade check.
enum Trial {
    /// The account after the fill, evaluated, with its grid rows.
    Evaluated(BookAccount, AccountRisk, Box<RowCache>),
    /// The fill provably leaves the account healthy; it is applied without evaluation.
    Screened(ScreenedFill),
}

/// The accounts a price tick on `u` (at the book's new price) may concern: each exposed
/// account whose band the price leaves, unless re-cutting its bands ([`recut`]) still proves
/// its status. Accounts left inside their bands, and those re-cut, only have their figures
/// go stale. Unscreened ticks return every exposed account.
fn screen_tick(
    bands: &mut [Bands],
    risk: &mut [OnceLock<AccountRisk>],
    room: &[f64],
    book: &Book,
    u: usize,
    screened: bool,
) -> Vec<usize> {
    let price = book.underlyings[u].spot;
    let mut left = Vec::new();
    for (a, band) in bands[u].0.iter().enumerate() {
        let (lo, hi) = (band.lo, band.hi);
        if lo == NOT_EXPOSED.0 {
            continue;
        }
        // (NaN-safe: a band that is not proven to hold the price re-margins the account.)
        let inside = lo <= price && price <= hi;
        if screened && inside {
            if risk[a].get().is_some() {
                risk[a].take();
            }
        } else {
            left.push(a);
        }
    }
    left.retain(|&a| {
        let proven = screened && recut(bands, book, room[a], a);
        if proven {
            risk[a].take();
        }
        !proven
    });
    left
}

/// A price left account `a`'s band on one underlying: if the moves of all its exposures'
/// prices since the reference together still fit in its room (`sum_u L_u |x_u - 1| < room`),
/// its status is still proven, and its bands are re-cut: each exposure gets its current move
/// plus an equal share (relative) of what is left, so the bands still spend no more than the
/// room. Returns false (the account must be looked at further) otherwise.
fn recut(bands: &mut [Bands], book: &Book, room: f64, a: usize) -> bool {
    if room.is_nan() || room <= 0.0 {
        return false;
    }
    let exposures = &book.accounts[a].exposures;
    let (mut used, mut total) = (0.0, 0.0);
    for &u in exposures {
        let band = &bands[u].0[a];
        let p = book.underlyings[u].spot;
        if !band.holds_at(p) {
            return false;
        }
        used += band.slope * (p / band.reference - 1.0).abs();
        total += band.slope;
    }
    let free = room - used;
    let share = free / total * (1.0 - 1e-9);
    // Rounding allowance on the moves summed here.
    if !(free > ROUNDING_ALLOWANCE * room && share > 0.0 && total.is_finite()) {
        return false;
    }
    for &u in exposures {
        let band = &mut bands[u].0[a];
        let reference = band.reference;
        let x = book.underlyings[u].spot / reference;
        let delta = ((x - 1.0).abs() + share).min(MAX_BAND);
        band.set_edges(reference - reference * delta, reference + reference * delta);
    }
    true
}

/// The account's screen after an evaluation: while every underlying's price stays within
/// `delta = room / sum_u L_u` (relative) of today's, the margin balance and its surplus over
/// maintenance and initial margin each move by less than the smallest of them in size, less
/// a rounding allowance twice (today's figures and tomorrow's), so none changes sign and the
/// status cannot change. The room is spent equally in relative moves on every exposure.
///
/// `sums`: the account's sums per exposure, as its evaluation left them.
fn screen_of(
    evaluator: &Evaluator<'_>,
    factors: &[(f64, f64)],
    account: &BookAccount,
    r: &AccountRisk,
    screening: bool,
    sums: &[ExposureSums],
) -> Screen {
    if !screening || account.exposures.is_empty() {
        return Screen::NONE;
    }
    let (mut slopes, mut required) = (Vec::new(), Vec::new());
    status_slope_parts_from(
        evaluator.book,
        factors,
        &account.exposures,
        sums,
        true,
        &mut slopes,
        Some(&mut required),
    );
    let total: f64 = slopes.iter().sum();
    let mb = r.margin_balance;
    let cushion = mb
        .abs()
        .min((mb - r.maintenance_margin).abs())
        .min((mb - r.initial_margin).abs());
    let allowance =
        ROUNDING_ALLOWANCE * (1.0 + r.equity.abs() + mb.abs() + r.initial_margin.abs() + total);
    let room = cushion - 2.0 * allowance;
    if room > 0.0 && total.is_finite() {
        Screen {
            room,
            slopes,
            required,
        }
    } else {
        Screen::NONE
    }
}

/// Amounts, prices and vols must be positive and finite.
fn positive(what: &str, value: f64) -> Result<(), Output> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(reject(format!(
            "{what} must be positive and finite, got {value}"
        )))
    }
}

fn reject(reason: String) -> Output {
    Output::Rejected {
        reason,
        required: None,
        available: None,
    }
}

fn add_balance(account: &mut BookAccount, asset: usize, amount: f64) {
    if amount == 0.0 {
        return;
    }
    match account.balances.iter_mut().find(|b| b.asset == asset) {
        Some(b) => b.amount += amount,
        None => account.balances.push(BookBalance { asset, amount }),
    }
}

/// Applies a fill of `size` at `price` to an account. Perpetuals and futures keep an average
/// entry price and realise P&L into the settlement balance when reduced; option premiums move
/// through the settlement balance. Either way the account's equity changes by exactly
/// `size x (mark - price)`.
///
/// `held`: whether the account may hold the instrument; if not, its positions are not
/// searched.
pub fn apply_fill(
    instruments: &[Priced],
    account: &mut BookAccount,
    instrument: usize,
    size: f64,
    price: f64,
    settle: usize,
    held: bool,
) {
    let priced = &instruments[instrument];
    let is_option = priced.option.is_some();
    if is_option {
        add_balance(account, settle, -size * price);
    }
    debug_assert!(
        held || account.positions.iter().all(|p| p.instrument != instrument),
        "an account holds an instrument it is not marked as holding"
    );
    let found = if held {
        account
            .positions
            .iter()
            .position(|p| p.instrument == instrument)
    } else {
        None
    };
    let Some(j) = found else {
        account.positions.push(BookPosition {
            instrument,
            underlying: priced.underlying,
            size,
            entry_price: if is_option { 0.0 } else { price },
        });
        return;
    };
    // Only the filled position can have reached zero: removing it alone keeps the others'
    // order, as a `retain` of nonzero positions would.
    let p = &mut account.positions[j];
    if !is_option {
        let (s, e) = (p.size, p.entry_price);
        if s == 0.0 || s.signum() == size.signum() {
            p.entry_price = (s * e + size * price) / (s + size);
        } else {
            let closed = size.abs().min(s.abs()) * s.signum();
            let realised = closed * (price - e);
            if size.abs() > s.abs() {
                p.entry_price = price;
            }
            p.size = s + size;
            let closed_out = p.size == 0.0;
            add_balance(account, settle, realised);
            if closed_out {
                account.positions.remove(j);
            }
            return;
        }
    }
    p.size += size;
    if p.size == 0.0 {
        account.positions.remove(j);
    }
}

/// A copy of an account with room for one more position, balance and exposure (so a trial
/// fill does not reallocate).
fn clone_for_fill(account: &BookAccount) -> BookAccount {
    let with_room = |len: usize| len + 1;
    let mut positions = Vec::with_capacity(with_room(account.positions.len()));
    positions.extend_from_slice(&account.positions);
    let mut balances = Vec::with_capacity(with_room(account.balances.len()));
    balances.extend_from_slice(&account.balances);
    let mut exposures =
        Vec::with_capacity(with_room(account.positions.len() + account.balances.len()));
    exposures.extend_from_slice(&account.exposures);
    BookAccount {
        id: account.id.clone(),
        positions,
        balances,
        exposures,
    }
}

/// Recomputes which underlyings an account is exposed to (docs/MODEL.md section 4).
pub fn update_exposures(assets: &[Asset], account: &mut BookAccount) {
    let mut exposures = std::mem::take(&mut account.exposures);
    exposures.clear();
    exposures.extend(
        account
            .positions
            .iter()
            .filter(|p| p.size != 0.0)
            .map(|p| p.underlying),
    );
    exposures.extend(
        account
            .balances
            .iter()
            .filter(|b| b.amount != 0.0)
            .filter_map(|b| assets[b.asset].underlying),
    );
    exposures.sort_unstable();
    exposures.dedup();
    account.exposures = exposures;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every account whose figures a tick or fill left stale (screened) has every price inside
    /// its bands, and every band inside the window where its slopes hold: a drift of 20% in
    /// steps of 0.7% (five windows' width) on each underlying in turn, with fills between.
    #[test]
    fn screened_accounts_keep_their_prices_inside_bands_inside_their_windows() {
        use pmargin_core::synthetic;
        let book = synthetic::book(40, 17).unwrap();
        let cut = |i: usize, _: &str| 0.4 + 0.1 * (i % 8) as f64;
        let portfolio = synthetic::portfolio(&book, cut, |_, _| true, 1e10);
        let (market, params) = synthetic::market_and_params().unwrap();
        let mut e = Engine::new(&portfolio, &market, &params, EngineConfig::default()).unwrap();
        e.ensure_settlement_asset().unwrap();
        let names: Vec<String> = e.book.underlyings.iter().map(|u| u.name.clone()).collect();
        let mut stale_seen = 0;
        for (k, name) in names.iter().cycle().take(5 * 30).enumerate() {
            let price = e.market.prices[name] * 1.007;
            e.apply(&Event::Price {
                underlying: name.clone(),
                price,
            });
            if k % 7 == 0 {
                let i = (31 * k) % e.book.instruments.len();
                e.apply(&Event::Trade {
                    account: e.book.accounts[k % 40].id.clone(),
                    instrument: e.book.instruments[i].instrument.name.clone(),
                    size: 0.01,
                    price: e.arrays.values[i],
                    fee: 0.0,
                    counterparty: Some(e.book.accounts[(k + 3) % 40].id.clone()),
                });
            }
            for (a, account) in e.book.accounts.iter().enumerate() {
                if e.risk[a].get().is_some() {
                    continue;
                }
                stale_seen += 1;
                assert!(e.room[a] > 0.0, "account {a} stale without room");
                for &u in &account.exposures {
                    let band = &e.bands[u].0[a];
                    let p = e.book.underlyings[u].spot;
                    let window = band.window();
                    assert!(
                        band.lo <= p && p <= band.hi,
                        "tick {k}, account {a}: {p} outside {band:?}"
                    );
                    assert!(
                        window.0 <= band.lo && band.hi <= window.1,
                        "tick {k}, account {a}: {band:?} beyond {window:?}"
                    );
                }
            }
        }
        assert!(
            stale_seen > 1000,
            "only {stale_seen} account-ticks screened"
        );
    }

    #[test]
    fn held_marks_every_instrument_an_account_holds_and_is_unsure_beyond_its_bits() {
        let mut book = pmargin_core::synthetic::book(3, 7).unwrap();
        let n = book.instruments.len();
        let mut held = Held::of(&book);
        for (a, account) in book.accounts.iter().enumerate() {
            for i in 0..n {
                let holds = account.positions.iter().any(|p| p.instrument == i);
                // Built from the book, the bits are exact.
                assert_eq!(held.may_hold(a, i), holds, "account {a}, instrument {i}");
            }
        }
        // An instrument past the bits laid out, and an account past them: unsure, so yes.
        let beyond = held.words * 64;
        assert!(held.may_hold(0, beyond));
        assert!(held.may_hold(book.accounts.len(), 0));
        // A new account holds nothing; marking an instrument sets its bit alone.
        held.push();
        let new = book.accounts.len();
        assert!((0..n).all(|i| !held.may_hold(new, i)));
        held.mark(&book, new, 1);
        assert!(held.may_hold(new, 1) && !held.may_hold(new, 0) && !held.may_hold(new, 2));
        // Marking an instrument added past the bits lays them out again from the book's
        // holdings.
        let copy = book.instruments[0].clone();
        book.instruments.resize(beyond + 1, copy);
        let p = book.accounts[0].positions[0];
        book.accounts[0].positions.push(BookPosition {
            instrument: beyond,
            ..p
        });
        held.mark(&book, 0, beyond);
        assert!(held.words * 64 > beyond);
        assert!(held.may_hold(0, beyond) && held.may_hold(0, p.instrument));
        assert!(!held.may_hold(1, beyond));
    }

    #[test]
    fn fills_that_add_and_remove_positions_void_the_cached_grouping() {
        // One fill opens a position and another closes one, on the same underlying, between
        // two re-margins: as many positions as before, in another arrangement. The re-margin
        // sums that underlying's row anew (the others are reused) and must find its positions
        // where they are now.
        let book = pmargin_core::synthetic::book(4, 5).unwrap();
        let portfolio = pmargin_core::synthetic::portfolio(&book, |_, _| 5.0, |_, _| true, 1e10);
        let (market, params) = pmargin_core::synthetic::market_and_params().unwrap();
        let mut e = Engine::new(&portfolio, &market, &params, EngineConfig::default()).unwrap();
        e.ensure_settlement_asset().unwrap();
        e.set_row_cache_min_positions(0);
        let settle = e.settlement_index().unwrap();
        let a = 0;
        let account = &e.book.accounts[a];
        // The first position whose underlying holds another one, and an instrument on that
        // underlying the account does not hold.
        let (j, held) = account
            .positions
            .iter()
            .enumerate()
            .find(|(_, p)| {
                account
                    .positions
                    .iter()
                    .filter(|q| q.underlying == p.underlying)
                    .count()
                    >= 2
            })
            .map(|(j, p)| (j, *p))
            .unwrap();
        assert!(
            j + 1 < account.positions.len(),
            "a position after it moves down"
        );
        let fresh = (0..e.book.instruments.len())
            .find(|&i| {
                e.book.instruments[i].underlying == held.underlying
                    && !account.positions.iter().any(|p| p.instrument == i)
            })
            .unwrap();
        let count = account.positions.len();
        e.remargin(&[a], &mut Vec::new());
        let mark = |e: &Engine, i: usize| e.arrays.values[i];
        e.fill_account(a, fresh, 1.0, mark(&e, fresh), settle);
        e.fill_account(
            a,
            held.instrument,
            -held.size,
            mark(&e, held.instrument),
            settle,
        );
        assert_eq!(e.book.accounts[a].positions.len(), count);
        e.remargin(&[a], &mut Vec::new());
        let cached = *e.figures(a);
        let full = Evaluator::new(&e.book, &e.arrays)
            .requirement(&e.book.accounts[a])
            .unwrap();
        assert_eq!(cached.equity.to_bits(), full.equity.to_bits());
        assert_eq!(
            cached.initial_margin.to_bits(),
            full.initial_margin.to_bits()
        );
    }

    #[test]
    fn parallel_array_refresh_is_the_core_refresh_bit_for_bit() {
        let book = pmargin_core::synthetic::book(50, 3).unwrap();
        let mut market = pmargin_core::synthetic::market_and_params().unwrap().0;
        let mut ours = RiskArrays::compute(&book, None).unwrap();
        let mut core = ours.clone();
        let mut book = book;
        for (k, u) in [0usize, 2, 4].into_iter().enumerate() {
            let name = book.underlyings[u].name.clone();
            *market.prices.get_mut(&name).unwrap() *= 1.0 + 0.013 * (k as f64 + 1.0);
            book.remark_underlying(&market, u).unwrap();
            assert!(
                book.instruments
                    .iter()
                    .filter(|p| p.underlying == u)
                    .count()
                    >= PARALLEL_REFRESH_MIN
            );
            refresh_arrays(&mut ours, &book, u);
            core.refresh_underlying(&book, u);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&ours.values), bits(&core.values));
            assert_eq!(bits(&ours.deltas), bits(&core.deltas));
            assert_eq!(bits(&ours.grid), bits(&core.grid));
            assert_eq!(bits(&ours.asset_grid), bits(&core.asset_grid));
            assert_eq!(bits(&ours.fhs), bits(&core.fhs));
            let slope_bits = |a: &RiskArrays| {
                let parts = a.slopes.iter().flat_map(|s| [s.rows, s.centre, s.half]);
                bits(&parts.collect::<Vec<_>>())
            };
            assert_eq!(slope_bits(&ours), slope_bits(&core));
        }
        // The slopes are today's: those of arrays computed afresh from the book.
        let fresh = RiskArrays::compute(&book, None).unwrap();
        assert_eq!(ours.slopes, fresh.slopes);
        assert_eq!(ours.deltas, fresh.deltas);
    }
}
