//! The engine: accounts, positions and the active parameter set, kept margined as events
//! arrive.
//!
//! State changes only through [`Engine::apply`]. A price or vol update on one underlying
//! re-marks that underlying's instruments once, refreshes their risk arrays, and re-margins
//! only the accounts exposed to it (an index from underlying to accounts is kept). Accounts
//! that fall below maintenance are liquidated in the same step, unless the oracle has
//! suspended liquidations on one of their underlyings.
//!
//! Value is conserved: every fill moves `size x (mark - price)` between two accounts, fees and
//! penalties move value from accounts to the insurance fund, a deficit moves from the fund (or,
//! beyond it, from deleveraged accounts) to the bankrupt account. Only deposits and
//! withdrawals change the total of every account's equity plus the fund.

use crate::event::{Event, Output};
use crate::oracle::{Health, Oracle, OracleConfig, Quote};
use pmargin_core::account::{Requirement, Status};
use pmargin_core::book::{Asset, Book, BookAccount, BookBalance, BookPosition, Priced};
use pmargin_core::input::portfolio::{valid_account_id, Account, Portfolio, Position};
use pmargin_core::instrument::{Instrument, Kind, OptionKind};
use pmargin_core::{Evaluator, Market, Params, RiskArrays};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Largest number of partial liquidation steps one account takes in one round before it is
/// closed out: a bound, so a pathological book cannot stall the engine.
pub const MAX_LIQUIDATION_STEPS: usize = 200;

/// Fewest accounts re-margined on the thread pool rather than inline.
pub const PARALLEL_REMARGIN_MIN: usize = 256;

/// Passes of one liquidation round (a close-out can change other accounts).
pub const MAX_LIQUIDATION_PASSES: usize = 8;

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

/// The engine's state. See the module documentation.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    market: Market,
    book: Book,
    arrays: RiskArrays,
    accounts: BTreeMap<String, usize>,
    /// Per underlying, the accounts exposed to it.
    exposed: Vec<BTreeSet<usize>>,
    risk: Vec<AccountRisk>,
    insurance_fund: f64,
    suspended: BTreeSet<usize>,
    /// Accounts left with a deficit after a close-out that neither the fund nor
    /// deleveraging could cover.
    bad_debt: BTreeSet<usize>,
    /// The liquidator took positions this round and has not been re-margined yet.
    liquidator_dirty: bool,
    oracle: Option<Oracle>,
    sequence: u64,
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
        let arrays = RiskArrays::compute(&book, None)?;
        let mut engine = Engine {
            oracle,
            insurance_fund: config.insurance_fund,
            config,
            market: market.clone(),
            accounts: book
                .accounts
                .iter()
                .enumerate()
                .map(|(i, a)| (a.id.clone(), i))
                .collect(),
            exposed: vec![BTreeSet::new(); book.underlyings.len()],
            risk: Vec::new(),
            book,
            arrays,
            suspended: BTreeSet::new(),
            bad_debt: BTreeSet::new(),
            liquidator_dirty: false,
            sequence: 0,
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
        self.accounts.get(account).map(|&i| self.risk[i])
    }

    /// Every account's cached figures, in account order.
    pub fn risks(&self) -> impl Iterator<Item = (&str, &AccountRisk)> {
        self.book
            .accounts
            .iter()
            .map(|a| a.id.as_str())
            .zip(&self.risk)
    }

    pub fn accounts_exposed_to(&self, underlying: &str) -> usize {
        self.book
            .underlying_index(underlying)
            .map_or(0, |u| self.exposed[u].len())
    }

    pub fn liquidations_suspended(&self, underlying: &str) -> bool {
        self.book
            .underlying_index(underlying)
            .is_some_and(|u| self.suspended.contains(&u))
    }

    /// Sum of every account's equity plus the insurance fund: conserved by every event but
    /// deposits and withdrawals (with stablecoin collateral; coin collateral moves with price).
    pub fn total_value(&self) -> f64 {
        self.risk.iter().map(|r| r.equity).sum::<f64>() + self.insurance_fund
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
            positions: a
                .positions
                .iter()
                .map(|p| {
                    let inst = &book.instruments[p.instrument].instrument;
                    Position {
                        instrument: inst.clone(),
                        size: p.size,
                        entry_price: (!inst.is_option()).then_some(p.entry_price),
                    }
                })
                .collect(),
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

    /// The cached figures, in account order.
    pub fn cached_requirements(&self) -> &[AccountRisk] {
        &self.risk
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
        let inst = Instrument::parse(instrument).map_err(reject)?;
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
        let i = self
            .book
            .ensure_instrument(&inst, &self.market)
            .map_err(|e| reject(e.to_string()))?;
        self.arrays.extend(&self.book);
        let a = *self
            .accounts
            .get(account)
            .ok_or_else(|| reject(format!("trade: no account `{account}`")))?;
        let settle = self.settlement_index().map_err(reject)?;
        let mut trial = self.book.accounts[a].clone();
        apply_fill(&self.book.instruments, &mut trial, i, size, price, settle);
        add_balance(&mut trial, settle, -fee);
        self.admit(a, &trial)
    }

    /// The pre-trade rule: accepted if the account covers initial margin afterwards, or if the
    /// change strictly lowers its requirement without lowering its surplus over it.
    fn admit(&self, a: usize, trial: &BookAccount) -> Result<(), Output> {
        let mut trial = trial.clone();
        update_exposures(&self.book.assets, &mut trial);
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let mut after = evaluator
            .requirement(&trial)
            .map_err(|e| reject(e.to_string()))?;
        // With a stable price, collateral cannot be borrowed against a sudden print: the
        // margin balance counted for initial margin is the lower of its value at the index and
        // at the stable price.
        let scales = self.stable_scales(&trial);
        if scales.iter().any(|&x| x != 1.0) {
            let at_stable = evaluator
                .requirement_at_scales(&trial, &scales)
                .map_err(|e| reject(e.to_string()))?;
            after.margin_balance = after.margin_balance.min(at_stable.margin_balance);
        }
        let before = &self.risk[a];
        let covered = after.margin_balance >= after.initial_margin;
        // Reducing risk is allowed even short of initial margin, but only if it does not also
        // eat the account's surplus: a closing fill far from the mark is a loss, not a hedge.
        let reduces = after.initial_margin < before.initial_margin
            && after.margin_balance - after.initial_margin
                >= before.margin_balance - before.initial_margin;
        if covered || reduces {
            Ok(())
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

    /// Applies one event and returns what the engine concluded. A refused event changes
    /// nothing and returns a single [`Output::Rejected`].
    pub fn apply(&mut self, event: &Event) -> Vec<Output> {
        self.sequence += 1;
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
            Event::Liquidate => {
                self.liquidation_round(&mut out);
                Ok(())
            }
        };
        match result {
            Ok(()) => out,
            Err(rejection) => vec![rejection],
        }
    }

    /// Marks an underlying's liquidations suspended (the oracle distrusts its price) or resumed.
    pub fn set_liquidations_suspended(&mut self, underlying: &str, suspended: bool) -> Vec<Output> {
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
        let mut trial = self.book.accounts[a].clone();
        add_balance(&mut trial, asset, -amount);
        self.admit(a, &trial)?;
        self.book.accounts[a] = trial;
        self.refresh(&[a], out);
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
        self.check_trade(account, instrument, size, price, fee)?;
        if let Some(c) = counterparty {
            if c == account {
                return Err(reject("trade: an account cannot trade with itself".into()));
            }
            self.check_trade(c, instrument, -size, price, fee)?;
        }
        let i = self
            .book
            .instrument_index(instrument)
            .ok_or_else(|| reject(format!("trade: unknown instrument {instrument}")))?;
        let settle = self.settlement_index().map_err(reject)?;
        let mut touched = Vec::with_capacity(2);
        for (id, q) in std::iter::once((account, size)).chain(counterparty.map(|c| (c, -size))) {
            let a = self.accounts[id];
            apply_fill(
                &self.book.instruments,
                &mut self.book.accounts[a],
                i,
                q,
                price,
                settle,
            );
            add_balance(&mut self.book.accounts[a], settle, -fee);
            self.insurance_fund += fee;
            touched.push(a);
        }
        self.refresh(&touched, out);
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
        self.remargin_underlying(u, out)
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
        self.remargin_underlying(u, out)
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
        self.remargin_underlying(u, out)
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
        self.exposed = vec![BTreeSet::new(); self.book.underlyings.len()];
        let before = std::mem::take(&mut self.risk);
        self.full_recompute();
        for (a, (old, new)) in before.iter().zip(self.risk.clone()).enumerate() {
            self.emit_change(a, old.status, &new, out);
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
    /// to it, then liquidates what has to be.
    fn remargin_underlying(&mut self, u: usize, out: &mut Vec<Output>) -> Result<(), Output> {
        self.book
            .remark_underlying(&self.market, u)
            .map_err(|e| reject(e.to_string()))?;
        self.arrays.refresh_underlying(&self.book, u);
        let accounts: Vec<usize> = self.exposed[u].iter().copied().collect();
        self.remargin(&accounts, out);
        self.liquidation_round(out);
        Ok(())
    }

    /// Recomputes the given accounts (in parallel) and records status changes in order.
    fn remargin(&mut self, accounts: &[usize], out: &mut Vec<Output>) {
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let one = |&a: &usize| {
            evaluator
                .requirement(&self.book.accounts[a])
                .map(|r| AccountRisk::from(&r))
                .unwrap_or(self.risk[a])
        };
        // Fanning a trade's two accounts out to the thread pool costs more than computing them.
        let fresh: Vec<AccountRisk> = if accounts.len() < PARALLEL_REMARGIN_MIN {
            accounts.iter().map(one).collect()
        } else {
            accounts.par_iter().map(one).collect()
        };
        for (&a, new) in accounts.iter().zip(fresh) {
            let old = self.risk[a].status;
            self.risk[a] = new;
            self.emit_change(a, old, &new, out);
        }
    }

    /// After an account's holdings changed: its exposures, its index entries, its figures.
    fn refresh(&mut self, accounts: &[usize], out: &mut Vec<Output>) {
        for &a in accounts {
            for set in &mut self.exposed {
                set.remove(&a);
            }
            update_exposures(&self.book.assets, &mut self.book.accounts[a]);
            for &u in &self.book.accounts[a].exposures {
                self.exposed[u].insert(a);
            }
        }
        self.remargin(accounts, out);
    }

    fn full_recompute(&mut self) {
        for a in 0..self.book.accounts.len() {
            update_exposures(&self.book.assets, &mut self.book.accounts[a]);
            for &u in &self.book.accounts[a].exposures {
                self.exposed[u].insert(a);
            }
        }
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let zero = AccountRisk {
            equity: 0.0,
            margin_balance: 0.0,
            initial_margin: 0.0,
            maintenance_margin: 0.0,
            status: Status::Healthy,
        };
        self.risk = self
            .book
            .accounts
            .par_iter()
            .map(|a| {
                evaluator
                    .requirement(a)
                    .map(|r| AccountRisk::from(&r))
                    .unwrap_or(zero)
            })
            .collect();
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
            let candidates: Vec<usize> = (0..self.risk.len())
                .filter(|&a| Some(a) != liquidator)
                .filter(|&a| matches!(self.risk[a].status, Status::Liquidatable | Status::Bankrupt))
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
            let current = self.risk[a];
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
        if self.risk[a].margin_balance < self.risk[a].initial_margin {
            self.close_out(a, liquidator, settle, out);
        }
    }

    /// The liquidation step with the best surplus relief per unit of penalty, if any helps.
    fn best_step(&self, a: usize, settle: usize) -> Option<(usize, f64)> {
        let account = &self.book.accounts[a];
        let current = self.risk[a];
        let surplus = current.margin_balance - current.initial_margin;
        let evaluator = Evaluator::new(&self.book, &self.arrays);
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
            let mut trial = account.clone();
            apply_fill(
                &self.book.instruments,
                &mut trial,
                p.instrument,
                -p.size.signum() * step,
                price,
                settle,
            );
            add_balance(&mut trial, settle, -penalty);
            update_exposures(&self.book.assets, &mut trial);
            let Ok(after) = evaluator.requirement(&trial) else {
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
                .min(self.risk[a].margin_balance.max(0.0))
        } else {
            0.0
        };
        apply_fill(
            &self.book.instruments,
            &mut self.book.accounts[a],
            p.instrument,
            size,
            price,
            settle,
        );
        add_balance(&mut self.book.accounts[a], settle, -penalty);
        apply_fill(
            &self.book.instruments,
            &mut self.book.accounts[liquidator],
            p.instrument,
            -size,
            price,
            settle,
        );
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
            let equity = self.risk[b].equity.max(1.0);
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
            let surplus = self.risk[b].margin_balance - self.risk[b].maintenance_margin;
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
        self.risk.push(AccountRisk {
            equity: 0.0,
            margin_balance: 0.0,
            initial_margin: 0.0,
            maintenance_margin: 0.0,
            status: Status::Healthy,
        });
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
        let name = self.config.settlement_asset.clone();
        self.book.ensure_asset(&name, &self.market)?;
        self.arrays.extend(&self.book);
        Ok(())
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
pub fn apply_fill(
    instruments: &[Priced],
    account: &mut BookAccount,
    instrument: usize,
    size: f64,
    price: f64,
    settle: usize,
) {
    let priced = &instruments[instrument];
    let is_option = priced.option.is_some();
    if is_option {
        add_balance(account, settle, -size * price);
    }
    let Some(p) = account
        .positions
        .iter_mut()
        .find(|p| p.instrument == instrument)
    else {
        account.positions.push(BookPosition {
            instrument,
            underlying: priced.underlying,
            size,
            entry_price: if is_option { 0.0 } else { price },
        });
        return;
    };
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
            add_balance(account, settle, realised);
            account.positions.retain(|p| p.size != 0.0);
            return;
        }
    }
    p.size += size;
    account.positions.retain(|p| p.size != 0.0);
}

/// Recomputes which underlyings an account is exposed to (MODEL.md section 4).
pub fn update_exposures(assets: &[Asset], account: &mut BookAccount) {
    let mut exposures: Vec<usize> = account
        .positions
        .iter()
        .filter(|p| p.size != 0.0)
        .map(|p| p.underlying)
        .collect();
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
