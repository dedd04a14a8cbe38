//! Applying one event: [`Engine::apply`] dispatches it to its handler; a refused event
//! changes nothing.

use super::fill::add_balance;
use super::pretrade::Trial;
use super::{positive, reject, Engine, RowCache, MAX_AMOUNT, MAX_PRICE};
use crate::event::{Event, Output};
use crate::oracle::{Health, IndexUpdate, Quote};
use crate::rejection::{RejectReason, Rejection};
use pmargin_core::book::{Book, BookExternal};
use pmargin_core::error::InputError;
use pmargin_core::input::portfolio::{valid_account_id, ExternalPosition};
use pmargin_core::instrument::{Instrument, Kind, OptionKind};
use pmargin_core::{Params, RiskArrays};

impl Engine {
    /// Applies one event and returns what the engine concluded. A refused event changes
    /// nothing and returns a single [`Output::Rejected`].
    pub fn apply(&mut self, event: &Event) -> Vec<Output> {
        self.apply_counted(event)
            .unwrap_or_else(|rejection| vec![rejection.into()])
    }

    /// [`Engine::apply`], except that a refused event does not count in the sequence either:
    /// the service logs only the events that changed something, so the log's numbering and the
    /// engine's stay one and the same (refusals change nothing, so leaving them out of the log
    /// replays to the same state).
    pub fn apply_accepted(&mut self, event: &Event) -> Vec<Output> {
        self.try_apply(event)
            .unwrap_or_else(|rejection| vec![rejection.into()])
    }

    /// [`Engine::apply_accepted`], with a refusal returned as such: why ([`RejectReason`],
    /// whose `label` names the kind) and, for a margin refusal, the figures.
    pub fn try_apply(&mut self, event: &Event) -> Result<Vec<Output>, Rejection> {
        let result = self.apply_counted(event);
        if result.is_err() {
            self.sequence -= 1;
        }
        result
    }

    /// Applies one event, which counts in the sequence whether it is refused or not.
    fn apply_counted(&mut self, event: &Event) -> Result<Vec<Output>, Rejection> {
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
                confidence,
                weight,
            } => self.quote(
                Quote {
                    source: source.clone(),
                    underlying: underlying.clone(),
                    price: *price,
                    ts_ms: *ts_ms,
                    confidence: *confidence,
                    weight: *weight,
                },
                &mut out,
            ),
            Event::OracleTick { now_ms } => self.oracle_tick(*now_ms, &mut out),
            Event::Liquidate => {
                self.liquidation_round(&mut out);
                Ok(())
            }
            Event::Attestation {
                account,
                position,
                attester,
                nonce,
                valid_until,
                now_s,
            } => self.attest(
                &super::attested::Attestation {
                    account,
                    position,
                    attester,
                    nonce: *nonce,
                    valid_until: *valid_until,
                    now_s: *now_s,
                },
                &mut out,
            ),
            Event::AttestationTick { now_s } => self.attestation_tick(*now_s, &mut out),
        };
        if voids {
            self.void_row_caches();
        }
        result.map(|()| out)
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
    pub(super) fn oracle_tick(
        &mut self,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let Some(oracle) = self.oracle.as_mut() else {
            return Err(reject(RejectReason::NoOracle {
                event: "oracle_tick",
            }));
        };
        let mut updates = Vec::new();
        for u in &self.book.underlyings {
            if oracle.state(&u.name).is_some_and(|s| s.updated_ms < now_ms) {
                updates.push(oracle.update(&u.name, now_ms));
            }
        }
        for update in updates {
            self.index_moved(&update, out)?;
        }
        Ok(())
    }

    /// What an index update makes the engine do: a new index re-prices and re-margins the
    /// underlying, a new confidence becomes the market's `confidence` (docs/MODEL.md section
    /// 11; an index without one leaves the last in place), and a change of health suspends or
    /// resumes liquidations.
    fn index_moved(
        &mut self,
        update: &IndexUpdate,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let name = &update.underlying;
        let u = self.underlying(name)?;
        let price = update.price.filter(|_| update.price_changed);
        let confidence = update
            .confidence
            .filter(|c| update.confidence_changed && self.market.confidence.get(name) != Some(c));
        if let Some(c) = confidence {
            self.market.confidence.insert(name.clone(), c);
        }
        // The screened re-margin of a tick proves statuses for the prices of `u` scaled
        // together with the confidence held: a confidence the oracle add-on reads re-margins
        // every exposed account.
        let addon_reads =
            confidence.is_some() && self.book.underlyings[u].addons.oracle_multiple != 0.0;
        if let Some(index) = price {
            self.reprice(name, index)?;
        }
        if price.is_some() || addon_reads {
            self.remargin_underlying(u, !addon_reads, out)?;
        } else if let Some(c) = confidence {
            // Nothing reads it on `u` (its multiple is 0): the book takes it as it is.
            self.book.underlyings[u].confidence = c;
        }
        if update.health_changed {
            out.extend(self.set_liquidations_suspended(name, update.health != Health::Fresh));
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

    pub(super) fn deposit(
        &mut self,
        account: &str,
        asset: &str,
        amount: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        amount_in_range("deposit: amount", amount)?;
        // Refused deposits change nothing (the service does not log them): the account id is
        // checked before the asset is listed.
        if !self.accounts.contains_key(account) && !valid_account_id(account) {
            return Err(reject(RejectReason::InvalidAccountId {
                id: account.to_string(),
            }));
        }
        let asset = self
            .book
            .ensure_asset(asset, &self.market)
            .map_err(|e| reject(RejectReason::Input(Box::new(e))))?;
        self.arrays.extend(&self.book);
        let a = match self.accounts.get(account) {
            Some(&a) => a,
            None => self.open_account(account)?,
        };
        add_balance(&mut self.book.accounts[a], asset, amount);
        self.refresh(&[a], out);
        Ok(())
    }

    /// Replaces account `a`'s positions held in other protocols (docs/MODEL.md section 12)
    /// with `positions`, and re-margins it: the handler of an attested change (the service
    /// verifies the attestation and logs the change as an event; a position whose attestation
    /// expired is left out of `positions`). Creates the account if it does not exist. Refused,
    /// changing nothing, if a position breaks a rule of the format or names a protocol or a
    /// token the parameter set does not list; never for margin (it states a fact elsewhere).
    pub fn set_external_into(
        &mut self,
        account: &str,
        positions: &[ExternalPosition],
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        if !self.accounts.contains_key(account) && !valid_account_id(account) {
            return Err(reject(RejectReason::InvalidAccountId {
                id: account.to_string(),
            }));
        }
        let invalid = |e| reject(RejectReason::Input(Box::new(e)));
        let file = "external positions";
        // Every position is checked before the book lists a new token: a refusal adds nothing.
        let (book, market) = (&self.book, &self.market);
        let listable = |name: &str, path: &str| {
            if let Some(a) = book.assets.iter().position(|a| a.name == name) {
                Ok(a)
            } else if !book.params.collateral.contains_key(name) {
                Err(InputError::new(
                    file,
                    path,
                    format!("asset {name} has no entry in the parameter set's `collateral`"),
                ))
            } else if !market.prices.contains_key(name) {
                Err(InputError::new(
                    file,
                    path,
                    format!("no price for asset {name}"),
                ))
            } else {
                Ok(usize::MAX)
            }
        };
        for (j, x) in positions.iter().enumerate() {
            let path = format!("external[{j}]");
            x.validate(file, &path).map_err(invalid)?;
            BookExternal::bind(x, &path, file, &book.params, listable).map_err(invalid)?;
        }
        let mut bound = Vec::with_capacity(positions.len());
        let params = self.book.params.clone();
        for (j, x) in positions.iter().enumerate() {
            let (book, market) = (&mut self.book, &self.market);
            let b = BookExternal::bind(x, &format!("external[{j}]"), file, &params, |name, _| {
                book.ensure_asset(name, market)
            })
            .map_err(invalid)?;
            bound.push(b);
        }
        self.arrays.extend(&self.book);
        let a = match self.accounts.get(account) {
            Some(&a) => a,
            None => self.open_account(account)?,
        };
        self.book.accounts[a].external = bound;
        self.refresh(&[a], out);
        Ok(())
    }

    pub(super) fn withdraw(
        &mut self,
        account: &str,
        asset: &str,
        amount: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        amount_in_range("withdrawal: amount", amount)?;
        let a = *self.accounts.get(account).ok_or_else(|| {
            reject(RejectReason::UnknownAccount {
                event: "withdrawal",
                account: account.to_string(),
            })
        })?;
        let asset = self
            .book
            .assets
            .iter()
            .position(|x| x.name == asset)
            .ok_or_else(|| {
                reject(RejectReason::NoBalance {
                    account: account.to_string(),
                    asset: asset.to_string(),
                })
            })?;
        // An index the oracle distrusts (stale, no quorum, an unconfirmed jump) prices nothing
        // that leaves the venue: a dead feed must not let collateral out at its last print.
        if let Some(&u) = self.book.accounts[a]
            .exposures
            .iter()
            .find(|u| self.suspended.contains(u))
        {
            let name = &self.book.underlyings[u].name;
            let health = self
                .oracle
                .as_ref()
                .and_then(|o| o.state(name))
                .map(|s| s.health);
            return Err(reject(RejectReason::StaleIndex {
                underlying: name.clone(),
                health,
            }));
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
    pub(super) fn trade(
        &mut self,
        account: &str,
        instrument: &str,
        size: f64,
        price: f64,
        fee: f64,
        counterparty: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let listed = self.book.instruments.len();
        let (a, i, first) = self
            .trial_trade(account, instrument, size, price, fee)
            .inspect_err(|_| self.forget_instruments_from(listed))?;
        let first = (a, first);
        let second = match counterparty {
            Some(c) if c == account => {
                self.forget_instruments_from(listed);
                return Err(reject(RejectReason::SelfTrade));
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

    pub(super) fn price(
        &mut self,
        underlying: &str,
        price: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let u = self.reprice(underlying, price)?;
        self.remargin_underlying(u, true, out)
    }

    /// A new index of `underlying` in the market, its perpetual's and futures' marks moved with
    /// it (their basis held); the underlying's index.
    fn reprice(&mut self, underlying: &str, price: f64) -> Result<usize, Rejection> {
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
        Ok(u)
    }

    /// A venue quote: the oracle aggregates it; an accepted index move re-margins the
    /// underlying, and a change of the index's health suspends or resumes liquidations.
    pub(super) fn quote(&mut self, quote: Quote, out: &mut Vec<Output>) -> Result<(), Rejection> {
        self.underlying(&quote.underlying)?;
        if quote.price > MAX_PRICE {
            return Err(reject(RejectReason::TooLarge {
                what: "quote: price",
                value: quote.price,
                max: MAX_PRICE,
            }));
        }
        let oracle = self
            .oracle
            .as_mut()
            .ok_or_else(|| reject(RejectReason::NoOracle { event: "quote" }))?;
        let (underlying, ts_ms) = (quote.underlying.clone(), quote.ts_ms);
        oracle
            .submit(quote)
            .map_err(|e| reject(RejectReason::InvalidQuote(e)))?;
        let update = oracle.update(&underlying, ts_ms);
        self.index_moved(&update, out)
    }

    pub(super) fn mark(
        &mut self,
        instrument: &str,
        price: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let inst = Instrument::parse(instrument)
            .map_err(|e| reject(RejectReason::InvalidInstrument(e)))?;
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
                return Err(reject(RejectReason::MarkOfOption {
                    instrument: instrument.to_string(),
                }))
            }
        }
        self.remargin_underlying(u, false, out)
    }

    pub(super) fn vol(
        &mut self,
        underlying: &str,
        vol: f64,
        instrument: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let u = self.underlying(underlying)?;
        positive("vol", vol)?;
        match instrument {
            Some(name) => {
                let inst = Instrument::parse(name)
                    .map_err(|e| reject(RejectReason::InvalidInstrument(e)))?;
                if !inst.is_option() || inst.underlying != underlying {
                    return Err(reject(RejectReason::NotAnOption {
                        instrument: name.to_string(),
                        underlying: underlying.to_string(),
                    }));
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

    pub(super) fn activate(
        &mut self,
        params: &Params,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let invalid = |e| reject(RejectReason::InvalidParams(Box::new(e)));
        // A set built in code rather than read from an event has not met the rules yet; the
        // engine's set is named as the event names it, whoever built it.
        let mut params = params.clone();
        params.source = "activate_params".to_string();
        params.validate(&params.source).map_err(invalid)?;
        let book = Book::build(&self.portfolio(), &self.market, &params).map_err(invalid)?;
        let arrays = RiskArrays::compute(&book, None).map_err(invalid)?;
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

    /// The index of an instrument the book lists; a settlement or funding of one it does not
    /// list (nobody ever held it) is refused.
    fn listed(&self, instrument: &str, event: &'static str) -> Result<usize, Rejection> {
        self.book.instrument_index(instrument).ok_or_else(|| {
            reject(RejectReason::NoPosition {
                event,
                instrument: instrument.to_string(),
            })
        })
    }

    pub(super) fn settle(
        &mut self,
        instrument: &str,
        price: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        if !(price.is_finite() && price >= 0.0) {
            return Err(reject(RejectReason::SettlementPrice { price }));
        }
        let i = self.listed(instrument, "settlement")?;
        let kind = self.book.instruments[i].instrument.kind;
        if kind == Kind::Perpetual {
            return Err(reject(RejectReason::PerpetualSettlement));
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

    pub(super) fn funding(
        &mut self,
        instrument: &str,
        rate: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        if !(rate.is_finite() && rate.abs() < 1.0) {
            return Err(reject(RejectReason::FundingRate { rate }));
        }
        let i = self.listed(instrument, "funding")?;
        if self.book.instruments[i].instrument.kind != Kind::Perpetual {
            return Err(reject(RejectReason::NotPerpetual {
                instrument: instrument.to_string(),
            }));
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
}

/// A deposit's or withdrawal's amount: positive, finite, and at most [`MAX_AMOUNT`].
fn amount_in_range(what: &'static str, amount: f64) -> Result<(), Rejection> {
    positive(what, amount)?;
    if amount > MAX_AMOUNT {
        return Err(reject(RejectReason::TooLarge {
            what,
            value: amount,
            max: MAX_AMOUNT,
        }));
    }
    Ok(())
}
