//! The pre-trade check: would a fill be accepted, and the account's figures after it.

use super::fill::{add_balance, apply_fill, clone_for_fill, update_exposures};
use super::screening::ScreenedFill;
use super::{
    reject, AccountRisk, Engine, RowCache, MAX_AMOUNT, MAX_INSTRUMENTS_PER_UNDERLYING, MAX_PRICE,
    MAX_SIZE,
};
use crate::rejection::{RejectReason, Rejection};
use pmargin_core::book::BookAccount;
use pmargin_core::input::params::DEFAULT_MAX_FILL_DEVIATION;
use pmargin_core::instrument::Instrument;
use pmargin_core::Evaluator;

impl Engine {
    /// Would this fill be accepted? `Ok(())` or the refusal with the figures.
    pub fn check_trade(
        &mut self,
        account: &str,
        instrument: &str,
        size: f64,
        price: f64,
        fee: f64,
    ) -> Result<(), Rejection> {
        let listed = self.book.instruments.len();
        let checked = self
            .trial_trade(account, instrument, size, price, fee)
            .map(|_| ());
        // A check lists nothing: only an accepted fill adds an instrument.
        self.forget_instruments_from(listed);
        checked
    }

    /// Drops the instruments from `listed` on (added by a fill that was then refused).
    pub(super) fn forget_instruments_from(&mut self, listed: usize) {
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
    pub(super) fn trial_trade(
        &mut self,
        account: &str,
        instrument: &str,
        size: f64,
        price: f64,
        fee: f64,
    ) -> Result<(usize, usize, Trial), Rejection> {
        // An instrument the book holds was parsed when it was added, under this very name.
        let known = self.book.instrument_index(instrument);
        let inst = match known {
            Some(_) => None,
            None => Some(
                Instrument::parse(instrument)
                    .map_err(|e| reject(RejectReason::InvalidInstrument(e)))?,
            ),
        };
        if !(size.is_finite()
            && size != 0.0
            && price.is_finite()
            && price >= 0.0
            && fee.is_finite()
            && fee >= 0.0)
        {
            return Err(reject(RejectReason::InvalidTrade));
        }
        if size.abs() > MAX_SIZE {
            return Err(reject(RejectReason::TooLarge {
                what: "trade: size",
                value: size,
                max: MAX_SIZE,
            }));
        }
        if price > MAX_PRICE {
            return Err(reject(RejectReason::TooLarge {
                what: "trade: price",
                value: price,
                max: MAX_PRICE,
            }));
        }
        if fee > MAX_AMOUNT {
            return Err(reject(RejectReason::TooLarge {
                what: "trade: fee",
                value: fee,
                max: MAX_AMOUNT,
            }));
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
                        return Err(reject(RejectReason::TooManyInstruments {
                            underlying: inst.underlying.clone(),
                            listed,
                        }));
                    }
                }
                let i = self
                    .book
                    .ensure_instrument(&inst, &self.market)
                    .map_err(|e| reject(RejectReason::Input(Box::new(e))))?;
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
    #[inline]
    pub(super) fn check_price_band(
        &self,
        instrument: &str,
        i: usize,
        price: f64,
    ) -> Result<(), Rejection> {
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
        Err(reject(RejectReason::PriceBand {
            instrument: instrument.to_string(),
            price,
            mark,
            deviation,
            underlying: underlying.clone(),
        }))
    }

    /// [`Engine::trial_trade`] of a known instrument `i`, with the figures checked.
    #[inline]
    pub(super) fn trial_fill(
        &self,
        account: &str,
        i: usize,
        size: f64,
        price: f64,
        fee: f64,
    ) -> Result<(usize, Trial), Rejection> {
        let a = *self.accounts.get(account).ok_or_else(|| {
            reject(RejectReason::UnknownAccount {
                event: "trade",
                account: account.to_string(),
            })
        })?;
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

    /// The pre-trade rule: accepted if the account covers initial margin afterwards, or if the
    /// change strictly lowers its requirement without lowering its surplus over it. Brings the
    /// trial's exposures up to date; on acceptance returns its figures.
    ///
    /// The rows still valid in `rows` (a cache of the account's), less those `void` marks, are
    /// reused; on return it holds the trial's rows and sums.
    #[inline]
    pub(super) fn admit(
        &self,
        a: usize,
        trial: &mut BookAccount,
        rows: &mut RowCache,
        void: u64,
    ) -> Result<AccountRisk, Rejection> {
        update_exposures(&self.book.assets, trial);
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        let mut after = self
            .evaluate_cached(&evaluator, trial, rows, void)
            .map_err(|e| reject(RejectReason::Input(Box::new(e))))?;
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
                    .map_err(|e| reject(RejectReason::Input(Box::new(e))))?;
                // A NaN valuation is taken as the worse one.
                if at.margin_balance.is_nan() || at.margin_balance < after.margin_balance {
                    worst[e] = x;
                }
            }
            if worst.iter().any(|&x| x != 1.0) {
                let at_stable = evaluator
                    .requirement_at_scales(trial, &worst)
                    .map_err(|e| reject(RejectReason::Input(Box::new(e))))?;
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
            Err(Rejection {
                reason: RejectReason::BelowInitialMargin {
                    account: trial.id.clone(),
                },
                required: Some(after.initial_margin),
                available: Some(after.margin_balance),
            })
        }
    }

    /// Stable price / index price of each of the account's exposures (1 without a stable price).
    #[inline]
    pub(super) fn stable_scales(&self, account: &BookAccount) -> Vec<f64> {
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
}

/// The outcome of an accepted pre-trade check.
pub(super) enum Trial {
    /// The account after the fill, evaluated, with its grid rows.
    Evaluated(BookAccount, AccountRisk, Box<RowCache>),
    /// The fill provably leaves the account healthy; it is applied without evaluation.
    Screened(ScreenedFill),
}
