//! Re-margining: the accounts a change concerns are evaluated again, and their status
//! changes reported.

use super::fill::update_exposures;
use super::screening::{screen_of, screen_tick, Screen};
use super::{reject, AccountRisk, Bands, Engine, Held, RowCache, PARALLEL_REMARGIN_MIN, ZERO_RISK};
use crate::event::Output;
use crate::rejection::{RejectReason, Rejection};
use pmargin_core::account::{ExposureSums, Kept, Status};
use pmargin_core::book::{Book, BookAccount};
use pmargin_core::grid::{fill_asset, fill_instrument, fill_instrument_windowed};
use pmargin_core::liquidation::slope_factors;
use pmargin_core::{Evaluator, RiskArrays};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Fewest accounts in the book for a tick to scan its bands on the thread pool, beside the
/// refresh of its risk arrays, rather than after it.
pub(super) const PARALLEL_TICK_MIN_ACCOUNTS: usize = 1024;

/// Fewest accounts evaluated on the thread pool when a tick re-margins them (an evaluation
/// takes microseconds: from about 16 the pool's hand-off pays; in the replay benchmark 4 ticks
/// in 10 re-margin fewer than 60 accounts).
pub(super) const PARALLEL_EVALUATION_MIN: usize = 16;

impl Engine {
    /// Re-marks underlying `u`, refreshes its risk arrays once, re-margins the accounts exposed
    /// to it, then liquidates what has to be. With `screened` (a price tick that scales every
    /// price of `u` together), only the accounts whose safe band the new price leaves are
    /// re-margined; the others keep their status and their figures go stale.
    pub(super) fn remargin_underlying(
        &mut self,
        u: usize,
        screened: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        // The bands assume vols held: if re-marking moved an option's vol (a smile read at the
        // new forward), every exposed account is re-margined.
        let vols_before: Vec<(usize, f64)> = if screened {
            self.option_vols(u)
        } else {
            Vec::new()
        };
        self.book
            .remark_underlying(&self.market, u)
            .map_err(|e| reject(RejectReason::Input(Box::new(e))))?;
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

    /// The vol of every option on `u` in the book, in instrument order.
    pub(super) fn option_vols(&self, u: usize) -> Vec<(usize, f64)> {
        self.book
            .instruments
            .iter()
            .enumerate()
            .filter(|(_, p)| p.underlying == u)
            .filter_map(|(i, p)| p.option.map(|o| (i, o.vol)))
            .collect()
    }

    /// Recomputes the given accounts (in parallel) and records status changes in order.
    #[inline]
    pub(super) fn remargin(&mut self, accounts: &[usize], out: &mut Vec<Output>) {
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

    /// Records account `a`'s fresh figures and its screen.
    #[inline]
    pub(super) fn set_figures(&mut self, a: usize, risk: AccountRisk, screen: Screen) {
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

    /// Brings account `a`'s exposures up to date after its holdings changed; underlyings it
    /// left lose its bands (the new ones get theirs when it is re-margined).
    #[inline]
    pub(super) fn update_exposures_of(&mut self, a: usize) {
        let old = std::mem::take(&mut self.book.accounts[a].exposures);
        update_exposures(&self.book.assets, &mut self.book.accounts[a]);
        for u in old {
            if !self.book.accounts[a].exposures.contains(&u) {
                self.bands[u].clear(a);
            }
        }
    }

    /// After an account's holdings changed: its exposures, its bands, its figures.
    #[inline]
    pub(super) fn refresh(&mut self, accounts: &[usize], out: &mut Vec<Output>) {
        for &a in accounts {
            self.update_exposures_of(a);
        }
        self.remargin(accounts, out);
    }

    /// Replaces account `a`'s holdings by `trial`, whose exposures are up to date and whose
    /// figures in today's book are `risk` (as [`Engine::admit`] computed them).
    /// `sums`: the trial's sums per exposure, as its evaluation kept them.
    #[inline]
    pub(super) fn commit(
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

    pub(super) fn full_recompute(&mut self) {
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

    #[inline]
    pub(super) fn emit_change(
        &self,
        a: usize,
        old: Status,
        new: &AccountRisk,
        out: &mut Vec<Output>,
    ) {
        if old != new.status {
            out.push(Output::MarginChange {
                account: self.book.accounts[a].id.clone(),
                from: old,
                to: new.status,
                margin_balance: new.margin_balance,
                initial_margin: new.initial_margin,
                maintenance_margin: new.maintenance_margin,
            });
        }
    }
}

/// Fewest instruments on an underlying whose risk arrays are refreshed on the thread pool.
pub(super) const PARALLEL_REFRESH_MIN: usize = 64;

/// [`RiskArrays::refresh_underlying`], the rows of many instruments filled in parallel (each
/// row by the same calls, so the arrays are the same, bit for bit).
pub(super) fn refresh_arrays(arrays: &mut RiskArrays, book: &Book, u: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
