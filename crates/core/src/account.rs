//! An account's requirement (docs/MODEL.md sections 2, 4, 5 and 6): equity, margin balance,
//! grid and statistical risk, the short option minimum, initial and maintenance margin, and
//! the status that follows.
//!
//! The account is evaluated underlying by underlying: each underlying contributes its value,
//! its row of grid P&L and its historical P&L series. The same routine serves today's market
//! (reading the precomputed risk arrays) and the liquidation-price search (repricing one
//! underlying at a scaled price), so the two can never disagree on what a requirement is.

use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount, BookPosition};
use crate::error::{InputError, Result};
use crate::fhs::var_es;
use crate::grid::{
    self, fill_asset, fill_instrument, fill_instrument_where, GridOutcome, WindowSlope,
};

mod addons;
mod status;

use addons::AddonTally;
pub use addons::{delta_bounds, AddonBreakdown};
pub use status::Status;

/// Every figure of an account's requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub equity: f64,
    pub margin_balance: f64,
    pub grid: GridOutcome,
    pub var: f64,
    pub es: f64,
    pub statistical_risk: f64,
    pub short_option_minimum: f64,
    pub addons: f64,
    /// The add-ons apart (docs/MODEL.md section 11); `addons` is their sum.
    pub addon_breakdown: AddonBreakdown,
    pub initial_margin: f64,
    pub maintenance_margin: f64,
    pub status: Status,
}

impl Requirement {
    pub fn below_maintenance(&self) -> bool {
        self.margin_balance < self.maintenance_margin
    }
}

/// Running sums for one account while its underlyings are added.
#[derive(Debug, Clone)]
pub struct Partial {
    rows: Vec<f64>,
    fhs: Vec<f64>,
    /// Stable balances (no underlying): their equity and margin balance.
    fixed: ExposureSums,
    /// Per exposure, what its holdings add, each summed from zero; the account's figures add
    /// them up in exposure order ([`Evaluator::finish`]).
    sums: Vec<ExposureSums>,
    /// Per exposure, the scale its prices were summed at, for the external positions (which
    /// [`Evaluator::finish`] values at these scales); empty for an account without any.
    scales: Vec<f64>,
}

impl Partial {
    /// `rows[e * width + s]`: the account's P&L on its `e`-th exposure in slot `s`.
    pub fn rows(&self) -> &[f64] {
        &self.rows
    }

    /// Zeroes exposure `e`'s row (`width` slots), so that it can be summed anew (its sums are
    /// reset when it is).
    pub(crate) fn clear_row(&mut self, e: usize, width: usize) {
        self.rows[e * width..(e + 1) * width].fill(0.0);
    }

    /// Puts exposure `e`'s row, sums and scale back as they are in `from` (the same account's
    /// sums, with every other exposure as it is here).
    pub(crate) fn restore_exposure(&mut self, from: &Partial, e: usize, width: usize) {
        let row = e * width..(e + 1) * width;
        self.rows[row.clone()].copy_from_slice(&from.rows[row]);
        self.sums[e] = from.sums[e];
        if let (Some(at), Some(&was)) = (self.scales.get_mut(e), from.scales.get(e)) {
            *at = was;
        }
    }

    /// Exposure `e`'s row (`width` slots).
    pub(crate) fn row_mut(&mut self, e: usize, width: usize) -> &mut [f64] {
        &mut self.rows[e * width..(e + 1) * width]
    }

    /// The stable balances' sums and each exposure's, as [`Evaluator::finish`] adds them up.
    pub(crate) fn sums(&self) -> (&ExposureSums, &[ExposureSums]) {
        (&self.fixed, &self.sums)
    }
}

/// What one exposure's holdings add to an account's figures, apart from its grid row and
/// historical series: summed from zero over that underlying's holdings alone, in holding
/// order. The account's figures add these up exposure by exposure, so sums kept from one
/// evaluation and reused by a later one ([`Evaluator::requirement_reusing`]) give the same
/// figures, bit for bit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExposureSums {
    pub equity: f64,
    pub margin_balance: f64,
    pub short_option_notional: f64,
    /// The parts of the status slope bounds ([`crate::liquidation::status_slope_parts_into`]),
    /// in today's market: signed linear notional in the scenario rows, and in the margin
    /// balance (holdings haircut).
    pub linear: f64,
    pub linear_balance: f64,
    /// Options: notional times delta bound, its signed middle, and short options' spot
    /// notional.
    pub options: f64,
    pub centred: f64,
    pub short_option_spot: f64,
    /// Options again, by their bounds near today's prices ([`WindowSlope`]): scenario rows,
    /// signed middle and half range of the value's slope, summed over contracts. NaN when
    /// summed away from today's prices (a repriced evaluation), where they do not hold.
    pub window_rows: f64,
    pub window_centred: f64,
    pub window_half: f64,
    /// The add-ons on this exposure, at the prices summed at.
    pub addons: AddonBreakdown,
    /// How fast they move per unit of relative move of the underlying's prices: within
    /// [`grid::SLOPE_WINDOW`] of the prices summed at, and at any price (infinite where
    /// unbounded: the liquidity add-on of an option at or past expiry, whose delta jumps).
    pub addon_slope: f64,
    pub addon_slope_anywhere: f64,
}

impl ExposureSums {
    /// Adds a position (valued at `value`, its underlying at `spot`; the slope parts at
    /// today's forwards).
    fn add_position(
        &mut self,
        book: &Book,
        p: &BookPosition,
        value: f64,
        spot: f64,
        window: &WindowSlope,
    ) {
        let inst = &book.instruments[p.instrument];
        let pnl = p.size * (value - p.entry_price);
        self.equity += pnl;
        self.margin_balance += pnl;
        match &inst.option {
            None => {
                self.linear += p.size * inst.forward;
                self.linear_balance += p.size * inst.forward;
            }
            Some(o) => {
                if p.size < 0.0 {
                    self.short_option_notional += -p.size * spot;
                }
                let delta_bound = grid::delta_bound(o, book.rate);
                self.options += p.size.abs() * inst.forward * delta_bound;
                // A call's delta lies in [0, D], a put's in [-D, 0]: the middle of its range
                // nets with the other holdings, only half the range counts in size.
                let middle = match o.side {
                    pmargin_pricing::OptionKind::Call => 0.5,
                    pmargin_pricing::OptionKind::Put => -0.5,
                };
                self.centred += middle * p.size * inst.forward * delta_bound;
                self.window_rows += p.size.abs() * window.rows;
                self.window_centred += p.size * window.centre;
                self.window_half += p.size.abs() * window.half;
                if p.size < 0.0 {
                    self.short_option_spot += -p.size * book.underlyings[p.underlying].spot;
                }
            }
        }
    }

    /// [`ExposureSums::add_position`] without the slope parts: the figures of a requirement
    /// only (the same sums, so the same figures, bit for bit).
    #[inline]
    fn add_position_value(&mut self, book: &Book, p: &BookPosition, value: f64, spot: f64) {
        let pnl = p.size * (value - p.entry_price);
        self.equity += pnl;
        self.margin_balance += pnl;
        if p.size < 0.0 && book.instruments[p.instrument].option.is_some() {
            self.short_option_notional += -p.size * spot;
        }
    }

    /// Adds a coin balance worth `value` (haircut `haircut`); `today` is its value in today's
    /// market, for the slope parts.
    fn add_coin(&mut self, value: f64, haircut: f64, today: f64) {
        self.equity += value;
        self.margin_balance += haircut_value(value, haircut);
        self.linear += today;
        self.linear_balance += haircut_value(today, haircut);
    }
}

/// What an evaluation keeps of an account for a later one to reuse
/// ([`Evaluator::requirement_reusing`]): per exposure its grid row and its [`ExposureSums`],
/// and the account's positions grouped by exposure.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    rows: Vec<f64>,
    sums: Vec<ExposureSums>,
    /// The positions of exposure `e` are `order[starts[e]..starts[e + 1]]`, in holding order.
    order: Vec<u32>,
    starts: Vec<u32>,
}

impl Kept {
    /// `rows[e * width + s]`, as [`Partial::rows`].
    pub fn rows(&self) -> &[f64] {
        &self.rows
    }

    /// Per exposure.
    pub fn sums(&self) -> &[ExposureSums] {
        &self.sums
    }

    /// The account's positions on its `e`-th exposure, in holding order (as grouped).
    fn positions<'p>(
        &self,
        account: &'p BookAccount,
        e: usize,
    ) -> impl Iterator<Item = &'p BookPosition> + Clone + use<'_, 'p> {
        let (from, to) = (self.starts[e] as usize, self.starts[e + 1] as usize);
        self.order[from..to]
            .iter()
            .map(|&j| &account.positions[j as usize])
    }

    /// Groups the account's positions by exposure (one pass).
    fn group(&mut self, account: &BookAccount) {
        let k = account.exposures.len();
        let index = account.exposure_index();
        self.starts.clear();
        self.starts.resize(k + 1, 0);
        for p in &account.positions {
            if let Some(e) = index.of(p.underlying) {
                self.starts[e + 1] += 1;
            }
        }
        for e in 0..k {
            self.starts[e + 1] += self.starts[e];
        }
        self.order.clear();
        self.order.resize(self.starts[k] as usize, 0);
        let mut next: Vec<u32> = self.starts[..k].to_vec();
        for (j, p) in account.positions.iter().enumerate() {
            if let Some(e) = index.of(p.underlying) {
                self.order[next[e] as usize] = j as u32;
                next[e] += 1;
            }
        }
    }
}

/// Evaluates accounts of one book against its risk arrays.
pub struct Evaluator<'a> {
    pub book: &'a Book,
    pub arrays: &'a RiskArrays,
}

impl<'a> Evaluator<'a> {
    pub fn new(book: &'a Book, arrays: &'a RiskArrays) -> Self {
        Evaluator { book, arrays }
    }

    /// The account's requirement in today's market.
    pub fn requirement(&self, account: &BookAccount) -> Result<Requirement> {
        self.check_history(account)?;
        Ok(self.requirement_checked(account))
    }

    /// [`Evaluator::requirement`] of an account whose history [`Evaluator::check_history`]
    /// has passed.
    fn requirement_checked(&self, account: &BookAccount) -> Requirement {
        // The sums' buffers are reused from one account to the next on each thread (a book's
        // recompute would otherwise allocate and zero them per account).
        thread_local! {
            static BUFFERS: std::cell::RefCell<(Vec<f64>, Vec<ExposureSums>)> =
                const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        BUFFERS.with(|buffers| {
            let (mut rows, mut sums) = buffers.take();
            let k = account.exposures.len();
            rows.clear();
            rows.resize(k * self.arrays.width, 0.0);
            sums.clear();
            sums.resize(k, ExposureSums::default());
            let mut partial = self.fixed_part_with(account, rows, sums);
            if !self.add_today_in_one_pass(account, &mut partial) {
                let mut scratch = Vec::new();
                for (e, &u) in account.exposures.iter().enumerate() {
                    self.add_underlying(account, e, u, 1.0, &mut partial, &mut scratch);
                }
            }
            let requirement = self.finish(account, &partial);
            buffers.replace((partial.rows, partial.sums));
            requirement
        })
    }

    /// The requirement with some underlyings' prices scaled (spot, forwards and marks together,
    /// vols held): `scales[e]` applies to the account's `e`-th exposure. Used to value an
    /// account at a slower "stable" price for initial-margin checks.
    pub fn requirement_at_scales(
        &self,
        account: &BookAccount,
        scales: &[f64],
    ) -> Result<Requirement> {
        self.check_history(account)?;
        let mut partial = self.fixed_part(account);
        let mut scratch = Vec::new();
        for (e, &u) in account.exposures.iter().enumerate() {
            let scale = scales.get(e).copied().unwrap_or(1.0);
            self.add_underlying(account, e, u, scale, &mut partial, &mut scratch);
        }
        Ok(self.finish(account, &partial))
    }

    /// Adds every exposure in today's market as [`Evaluator::add_underlying`] does one by one,
    /// in one pass over the holdings: each exposure's row and sums still take its own holdings
    /// in holding order (positions, then balances), so they are the same, bit for bit. Only
    /// where that is all there is to sum: no historical series (one series takes every
    /// exposure in turn), no add-on, and distinct exposures; returns false, summing nothing,
    /// otherwise.
    fn add_today_in_one_pass(&self, account: &BookAccount, partial: &mut Partial) -> bool {
        let (book, arrays) = (self.book, self.arrays);
        let exposures = &account.exposures;
        if arrays.has_history()
            || !exposures.windows(2).all(|w| w[0] < w[1])
            || exposures.iter().any(|&u| book.underlyings[u].addons.any())
        {
            return false;
        }
        let width = arrays.width;
        let index = account.exposure_index();
        let Partial { rows, sums, .. } = partial;
        for p in &account.positions {
            let Some(e) = index.of(p.underlying) else {
                continue;
            };
            let i = p.instrument;
            let spot = book.underlyings[p.underlying].spot * 1.0;
            sums[e].add_position_value(book, p, arrays.values[i], spot);
            let row = &mut rows[e * width..(e + 1) * width];
            add_scaled(row, &arrays.grid[i * width..(i + 1) * width], p.size);
        }
        for b in &account.balances {
            let asset = &book.assets[b.asset];
            let Some(e) = asset.underlying.and_then(|u| index.of(u)) else {
                continue;
            };
            let value = b.amount * asset.price * 1.0;
            sums[e].equity += value;
            sums[e].margin_balance += haircut_value(value, asset.haircut);
            let a = b.asset;
            let row = &mut rows[e * width..(e + 1) * width];
            add_scaled(
                row,
                &arrays.asset_grid[a * width..(a + 1) * width],
                b.amount,
            );
        }
        true
    }

    /// [`Evaluator::requirement`], reusing what `kept` holds of some exposures.
    ///
    /// Where `reuse[e]` is true, exposure `e`'s row and sums are taken from `kept` as they
    /// stand, and its positions are not read (unless the historical series needs them): the
    /// caller vouches that they were summed from the same holdings on that underlying and the
    /// same risk arrays of it. With `same_positions`, `kept`'s grouping of the positions by
    /// exposure is the account's (no position added or removed since, the same exposures);
    /// otherwise it is made anew. Every other exposure is summed anew. On return `kept` holds
    /// the account's in today's market.
    ///
    /// Rows and sums are each summed from zero over one underlying's holdings, in holding
    /// order, and the figures add them up exposure by exposure, so the requirement is bit for
    /// bit [`Evaluator::requirement`]'s.
    pub fn requirement_reusing(
        &self,
        account: &BookAccount,
        reuse: &[bool],
        same_positions: bool,
        kept: &mut Kept,
    ) -> Result<Requirement> {
        self.check_history(account)?;
        let width = self.arrays.width;
        let k = account.exposures.len();
        // (A grouping that cannot be this account's is made anew even if vouched for.)
        let n = account.positions.len();
        if !same_positions
            || kept.starts.len() != k + 1
            || kept.starts[k] as usize != kept.order.len()
            || kept.order.iter().any(|&j| j as usize >= n)
        {
            kept.group(account);
        }
        let reused = |e: usize| reuse.get(e).copied().unwrap_or(false);
        let mut rows = std::mem::take(&mut kept.rows);
        rows.resize(k * width, 0.0);
        for (e, row) in rows.chunks_exact_mut(width.max(1)).enumerate() {
            if !reused(e) {
                row.fill(0.0);
            }
        }
        let mut sums = std::mem::take(&mut kept.sums);
        sums.resize(k, ExposureSums::default());
        let mut partial = self.fixed_part_with(account, rows, sums);
        let history = self.arrays.fhs_shocks.as_ref();
        for (e, &u) in account.exposures.iter().enumerate() {
            let keep = reused(e);
            if keep && history.is_none_or(|h| h[u].is_none()) {
                continue;
            }
            self.add_today(
                account,
                kept.positions(account, e),
                e,
                u,
                &mut partial,
                !keep,
            );
        }
        let requirement = self.finish(account, &partial);
        kept.rows = partial.rows;
        kept.sums = partial.sums;
        Ok(requirement)
    }

    /// Per exposure, what the account's holdings add to its figures in today's market
    /// (values and slope parts; no scenario).
    pub fn exposure_sums(&self, account: &BookAccount) -> Vec<ExposureSums> {
        // No rows, no historical series (empty ones take nothing) and no stable balances: only
        // the sums are read.
        let mut partial = Partial {
            rows: Vec::new(),
            fhs: Vec::new(),
            fixed: ExposureSums::default(),
            sums: vec![ExposureSums::default(); account.exposures.len()],
            scales: Vec::new(),
        };
        let mut kept = Kept::default();
        kept.group(account);
        for (e, &u) in account.exposures.iter().enumerate() {
            self.add_today(
                account,
                kept.positions(account, e),
                e,
                u,
                &mut partial,
                false,
            );
        }
        partial.sums
    }

    /// [`Evaluator::add_underlying_parts`] in today's market (the arrays read, nothing
    /// repriced).
    fn add_today<'p>(
        &self,
        account: &BookAccount,
        positions: impl Iterator<Item = &'p BookPosition> + Clone,
        e: usize,
        u: usize,
        partial: &mut Partial,
        grid: bool,
    ) {
        self.add_underlying_parts(
            account,
            positions,
            e,
            u,
            1.0,
            partial,
            &mut Vec::new(),
            Parts {
                grid,
                slopes: true,
                repriced: None,
                slots: None,
            },
        );
    }

    /// The account's margin balance in today's market and the gross size of the terms summed
    /// for it (for a rounding allowance): values and balances only, no scenario, so a cheap
    /// read where only the balance is wanted. Sums the terms [`Evaluator::requirement`] sums
    /// (in another order, so it may differ in the last bits).
    pub fn margin_balance(&self, account: &BookAccount) -> (f64, f64) {
        let (book, arrays) = (self.book, self.arrays);
        let (mut balance, mut gross) = (0.0, 0.0);
        for b in &account.balances {
            let asset = &book.assets[b.asset];
            let value = b.amount * asset.price;
            balance += haircut_value(value, asset.haircut);
            gross += value.abs();
        }
        for p in &account.positions {
            let pnl = p.size * (arrays.values[p.instrument] - p.entry_price);
            balance += pnl;
            gross += (p.size * arrays.values[p.instrument]).abs() + (p.size * p.entry_price).abs();
        }
        for x in &account.external {
            let value = x.value(&book.assets);
            balance += x.margin_value(&book.assets, value);
            gross += value.abs();
        }
        (balance, gross)
    }

    /// The account's sums in today's market, read from the risk arrays.
    pub(crate) fn partial(&self, account: &BookAccount) -> Partial {
        let mut partial = self.fixed_part(account);
        for (e, &u) in account.exposures.iter().enumerate() {
            self.add_underlying(account, e, u, 1.0, &mut partial, &mut Vec::new());
        }
        partial
    }

    /// Requirements of every account in the book, in book order (in parallel on rayon's pool).
    pub fn requirements(&self) -> Result<Vec<Requirement>> {
        use rayon::prelude::*;
        // Checked first, so that the requirements are collected straight into their places
        // (a collect of results gathers them in pieces and copies them again).
        for account in &self.book.accounts {
            self.check_history(account)?;
        }
        Ok(self
            .book
            .accounts
            .par_iter()
            .map(|a| self.requirement_checked(a))
            .collect())
    }

    /// An account exposed to an underlying the history lacks cannot be simulated.
    pub fn check_history(&self, account: &BookAccount) -> Result<()> {
        if let Some(shocks) = &self.arrays.fhs_shocks {
            if let Some(&u) = account.exposures.iter().find(|&&u| shocks[u].is_none()) {
                let name = &self.book.underlyings[u].name;
                return Err(InputError::new(
                    "history",
                    name.as_str(),
                    format!("the price history has no column for {name}, to which the account is exposed"),
                )
                .with_account(&account.id));
            }
        }
        Ok(())
    }

    /// Stable balances, which no scenario moves, with zeroed rows and sums for every
    /// exposure.
    pub(crate) fn fixed_part(&self, account: &BookAccount) -> Partial {
        let k = account.exposures.len();
        self.fixed_part_with(
            account,
            vec![0.0; k * self.arrays.width],
            vec![ExposureSums::default(); k],
        )
    }

    /// [`Evaluator::fixed_part`] with the given rows (`exposures x width`) and sums (one per
    /// exposure) in place of zeroes.
    fn fixed_part_with(
        &self,
        account: &BookAccount,
        rows: Vec<f64>,
        sums: Vec<ExposureSums>,
    ) -> Partial {
        let mut fixed = ExposureSums::default();
        for b in &account.balances {
            let asset = &self.book.assets[b.asset];
            if asset.underlying.is_none() {
                let value = b.amount * asset.price;
                fixed.equity += value;
                fixed.margin_balance += haircut_value(value, asset.haircut);
            }
        }
        let scales = if account.external.is_empty() {
            Vec::new()
        } else {
            vec![1.0; account.exposures.len()]
        };
        Partial {
            rows,
            fhs: vec![0.0; self.arrays.fhs_count],
            fixed,
            sums,
            scales,
        }
    }

    /// Adds everything the account holds on underlying `u` (its `e`-th exposure), with `u`'s
    /// prices scaled by `scale`. At scale 1 the precomputed arrays are read; otherwise the
    /// instruments are repriced into `scratch`.
    pub(crate) fn add_underlying(
        &self,
        account: &BookAccount,
        e: usize,
        u: usize,
        scale: f64,
        partial: &mut Partial,
        scratch: &mut Vec<f64>,
    ) {
        let positions = account.positions.iter().filter(|p| p.underlying == u);
        let parts = Parts::requirement(None);
        self.add_underlying_parts(account, positions, e, u, scale, partial, scratch, parts);
    }

    /// [`Evaluator::add_underlying`] with `u`'s instruments read from `repriced` (computed at
    /// `scale`, bit for bit what repricing them here would give) instead of repriced.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_underlying_repriced(
        &self,
        account: &BookAccount,
        e: usize,
        u: usize,
        scale: f64,
        repriced: Repriced<'_>,
        partial: &mut Partial,
        scratch: &mut Vec<f64>,
    ) {
        let positions = account.positions.iter().filter(|p| p.underlying == u);
        let parts = Parts::requirement(Some(repriced));
        self.add_underlying_parts(account, positions, e, u, scale, partial, scratch, parts);
    }

    /// [`Evaluator::add_underlying`] at a scale other than 1 with only the grid slots `wanted`
    /// summed in the exposure's row (the same numbers there, bit for bit); its other slots
    /// are left meaningless.
    pub(crate) fn add_underlying_slots(
        &self,
        account: &BookAccount,
        (e, u, scale): (usize, usize, f64),
        wanted: &[bool],
        partial: &mut Partial,
        scratch: &mut Vec<f64>,
    ) {
        let positions = account.positions.iter().filter(|p| p.underlying == u);
        let parts = Parts {
            slots: Some(wanted),
            ..Parts::requirement(None)
        };
        self.add_underlying_parts(account, positions, e, u, scale, partial, scratch, parts);
    }

    /// [`Evaluator::add_underlying`]; without `grid`, the exposure's grid row is left as it is
    /// (everything else is summed: its sums are replaced, its historical series added).
    #[allow(clippy::too_many_arguments)]
    fn add_underlying_parts<'p>(
        &self,
        account: &BookAccount,
        positions: impl Iterator<Item = &'p BookPosition>,
        e: usize,
        u: usize,
        scale: f64,
        partial: &mut Partial,
        scratch: &mut Vec<f64>,
        parts: Parts<'_>,
    ) {
        let Parts {
            grid,
            slopes,
            repriced,
            slots,
        } = parts;
        let book = self.book;
        let arrays = self.arrays;
        let (width, n_fhs, rate) = (arrays.width, arrays.fhs_count, book.rate);
        let fresh = scale != 1.0;
        let fhs_shocks = arrays.fhs_shocks.as_ref().and_then(|s| s[u].as_ref());
        let spot = book.underlyings[u].spot * scale;
        if let Some(at) = partial.scales.get_mut(e) {
            *at = scale;
        }
        let Partial {
            rows, fhs, sums, ..
        } = partial;
        // (Summed in place: the sums are too large to copy cheaply.)
        let sum = &mut sums[e];
        *sum = ExposureSums::default();
        // The add-ons' tally, where one is set (version 1 sums none), in the same pass.
        let addon_rates = book.underlyings[u].addons;
        let mut tally = addon_rates
            .any()
            .then(|| AddonTally::new(addon_rates.liquidity != 0.0, slopes));
        let row: &mut [f64] = if grid {
            &mut rows[e * width..(e + 1) * width]
        } else {
            &mut []
        };
        for p in positions {
            let inst = &book.instruments[p.instrument];
            let i = p.instrument;
            let record = repriced.filter(|_| fresh).and_then(|r| r.record(i));
            // At a fresh scale the grid row is measured from the value there: filled first, it
            // gives the value too (bit for bit `value_at`), an option priced once less.
            let filled = grid && fresh && record.is_none();
            let (value, window) = if let Some(r) = record {
                (r[0], &AWAY)
            } else if filled {
                scratch.resize(width, 0.0);
                let shocks = &arrays.grid_shocks[u];
                let value = if let Some(wanted) = slots {
                    fill_instrument_where(inst, scale, shocks, rate, scratch, |s| wanted[s])
                } else {
                    fill_instrument(inst, scale, shocks, rate, scratch)
                };
                (value, &AWAY)
            } else if fresh {
                (inst.value_at(scale, rate), &AWAY)
            } else {
                (arrays.values[i], &arrays.slopes[i])
            };
            if slopes {
                sum.add_position(book, p, value, spot, window);
            } else {
                sum.add_position_value(book, p, value, spot);
            }
            if let Some(tally) = &mut tally {
                let delta = || {
                    if let Some(r) = record {
                        r[1]
                    } else if fresh {
                        inst.delta_at(scale, rate)
                    } else {
                        arrays.deltas[i]
                    }
                };
                tally.position(p.size, inst.option.as_ref(), rate, delta);
            }
            if grid {
                let grid_row: &[f64] = if let Some(r) = record {
                    &r[2..2 + width]
                } else if filled {
                    scratch
                } else {
                    &arrays.grid[i * width..(i + 1) * width]
                };
                add_scaled(row, grid_row, p.size);
            }
            if let Some(shocks) = fhs_shocks {
                let fhs_row: &[f64] = if fresh {
                    scratch.resize(n_fhs, 0.0);
                    fill_instrument(inst, scale, shocks, rate, scratch);
                    scratch
                } else {
                    &arrays.fhs[i * n_fhs..(i + 1) * n_fhs]
                };
                add_scaled(fhs, fhs_row, p.size);
            }
        }
        for b in &account.balances {
            let asset = &book.assets[b.asset];
            if asset.underlying != Some(u) {
                continue;
            }
            let today = b.amount * asset.price;
            if let Some(tally) = &mut tally {
                // Units of the underlying: the asset's price and the spot scale together.
                tally.linear(b.amount * asset.price / book.underlyings[u].spot);
            }
            if slopes {
                sum.add_coin(today * scale, asset.haircut, today);
            } else {
                sum.equity += today * scale;
                sum.margin_balance += haircut_value(today * scale, asset.haircut);
            }
            let a = b.asset;
            if grid {
                let grid_row: &[f64] = if fresh {
                    scratch.resize(width, 0.0);
                    fill_asset(asset, scale, &arrays.grid_shocks[u], scratch);
                    scratch
                } else {
                    &arrays.asset_grid[a * width..(a + 1) * width]
                };
                add_scaled(row, grid_row, b.amount);
            }
            if let Some(shocks) = fhs_shocks {
                let fhs_row: &[f64] = if fresh {
                    scratch.resize(n_fhs, 0.0);
                    fill_asset(asset, scale, shocks, scratch);
                    scratch
                } else {
                    &arrays.asset_fhs[a * n_fhs..(a + 1) * n_fhs]
                };
                add_scaled(fhs, fhs_row, b.amount);
            }
        }
        if let Some(tally) = tally {
            let underlying = &book.underlyings[u];
            (sum.addons, sum.addon_slope, sum.addon_slope_anywhere) =
                tally.finish(&addon_rates, spot, underlying.confidence);
        }
    }

    /// The account's external positions (docs/MODEL.md section 12) at the scales `partial`
    /// was summed at, and their P&L in every scenario; `None` for an account without any.
    pub(crate) fn external_figures(
        &self,
        account: &BookAccount,
        partial: &Partial,
    ) -> Option<crate::external_risk::ExternalFigures> {
        (!account.external.is_empty()).then(|| {
            crate::external_risk::figures(self.book, self.arrays, account, &partial.scales)
        })
    }

    /// Turns the sums into requirements and a status.
    pub(crate) fn finish(&self, account: &BookAccount, partial: &Partial) -> Requirement {
        let params = &self.book.params;
        let external = self.external_figures(account, partial);
        let grid = grid::evaluate_with(
            &self.arrays.shape,
            &account.exposures,
            &partial.rows,
            external.as_ref().map(|x| &x.joint),
        );
        let (var, es) = if self.arrays.has_history() && !account.exposures.is_empty() {
            let mut losses: Vec<f64> = partial.fhs.iter().map(|p| -p).collect();
            if let Some(x) = &external {
                for (loss, pnl) in losses.iter_mut().zip(&x.fhs) {
                    *loss -= pnl;
                }
            }
            var_es(&mut losses, params.statistical.confidence)
        } else {
            (0.0, 0.0)
        };
        let statistical_risk = es.max(0.0);
        let (mut equity, mut margin_balance) = (partial.fixed.equity, partial.fixed.margin_balance);
        if let Some(x) = &external {
            equity += x.equity;
            margin_balance += x.margin_balance;
        }
        let mut short_option_notional = 0.0;
        let mut addon_breakdown = AddonBreakdown::default();
        for sum in &partial.sums {
            equity += sum.equity;
            margin_balance += sum.margin_balance;
            short_option_notional += sum.short_option_notional;
            addon_breakdown.add(&sum.addons);
        }
        let short_option_minimum = params.som_rate * short_option_notional;
        let addons = addon_breakdown.total();
        let initial_margin = grid
            .grid_risk
            .max(statistical_risk)
            .max(short_option_minimum)
            + addons;
        let maintenance_margin = params.mm_fraction * initial_margin;
        Requirement {
            equity,
            margin_balance,
            status: Status::of(margin_balance, initial_margin, maintenance_margin),
            grid,
            var,
            es,
            statistical_risk,
            short_option_minimum,
            addons,
            addon_breakdown,
            initial_margin,
            maintenance_margin,
        }
    }
}

/// What [`Evaluator::add_underlying_parts`] sums besides the figures of a requirement: the
/// exposure's grid row, the slope parts of its sums (only an evaluation in today's market that
/// keeps them needs those), and where repriced instruments are read from.
#[derive(Debug, Clone, Copy)]
struct Parts<'r> {
    grid: bool,
    slopes: bool,
    repriced: Option<Repriced<'r>>,
    /// The grid slots to sum where instruments are repriced (every slot if `None`): the
    /// others' sums in the row are left meaningless, for the caller to overwrite.
    slots: Option<&'r [bool]>,
}

impl<'r> Parts<'r> {
    fn requirement(repriced: Option<Repriced<'r>>) -> Self {
        Parts {
            grid: true,
            slopes: false,
            repriced,
            slots: None,
        }
    }
}

/// Instruments already repriced at one step of the liquidation-price search (its ladder,
/// [`crate::liquidation::Ladder`]), read in place of repricing them per account: book
/// instrument `i`'s column, where computed, is `columns[2 i + direction]`, and its record at
/// this step `[value, delta, grid row]` sits at `offset` (the delta only where the liquidity
/// add-on reads it). An instrument without a column is repriced as usual.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Repriced<'r> {
    pub columns: &'r [std::sync::OnceLock<Box<[f64]>>],
    pub direction: usize,
    pub offset: usize,
    pub len: usize,
}

impl<'r> Repriced<'r> {
    #[inline]
    fn record(&self, i: usize) -> Option<&'r [f64]> {
        let column = self.columns.get(2 * i + self.direction)?.get()?;
        column.get(self.offset..self.offset + self.len)
    }
}

/// The window bounds of an option repriced away from today's prices: unknown.
const AWAY: WindowSlope = WindowSlope {
    rows: f64::NAN,
    centre: f64::NAN,
    half: f64::NAN,
};

/// A positive holding counts for its value less the haircut; a borrow counts in full.
#[inline]
fn haircut_value(value: f64, haircut: f64) -> f64 {
    if value > 0.0 {
        value * (1.0 - haircut)
    } else {
        value
    }
}

#[inline]
fn add_scaled(acc: &mut [f64], row: &[f64], size: f64) {
    for (a, r) in acc.iter_mut().zip(row) {
        *a += size * r;
    }
}

#[cfg(test)]
mod tests;
