//! Re-margining from cached grid rows.
//!
//! An account's grid rows (its summed scenario P&L per exposure) and its other sums per exposure
//! (values, short option notional, the parts of its slope bounds) are each summed from one
//! underlying's holdings alone, and its figures add them up exposure by exposure. An account with
//! at least [`ROW_CACHE_MIN_POSITIONS`](super::ROW_CACHE_MIN_POSITIONS) positions keeps them from
//! its last re-margin (`RowCache`), with its positions grouped by exposure, so re-margining it
//! after a tick on `u` reads only its positions on `u`, if nothing else moved: the figures are bit
//! for bit those of a full evaluation. A row is reused only while the account's holdings and that
//! underlying's risk arrays are those it was summed from: a fill (a trade, or a liquidation passing
//! a position to the liquidator) voids the row of its underlying in its two accounts' caches (and
//! their grouping, if it opens or closes a position), any other change of holdings (close-outs,
//! deleveraging, deposits, settlements, any event but a trade or a price tick) voids every
//! account's, and a refresh of an underlying's arrays gives them a new version. The pre-trade
//! check's evaluation of an account after a fill, and a liquidation step's trials, reuse the
//! account's rows the same way.

use super::{Engine, RowCache};
use pmargin_core::account::Requirement;
use pmargin_core::book::BookAccount;
use pmargin_core::Evaluator;

/// The bit of underlying `u` in a mask of voided rows (bit 62 stands for every underlying
/// from 62 on: voiding one of them voids them all, which is only more cautious).
#[inline]
pub(super) fn row_bit(u: usize) -> u64 {
    1 << u.min(62)
}

/// The bit of a mask of voided rows that says a position was added or removed (so the
/// positions' grouping by exposure is void too).
pub(super) const SHAPE: u64 = 1 << 63;

impl Engine {
    /// What a fill of instrument `i` settled in asset `settle`, which took the account from
    /// `before` to `after` positions, voids: the rows of the instrument's underlying and of the
    /// settlement asset's, if it has one (the other rows, summed from other holdings, stay
    /// exact), and the grouping of the positions if it opened or closed one.
    #[inline]
    pub(super) fn fill_bits(&self, i: usize, settle: usize, before: usize, after: usize) -> u64 {
        let asset = self.book.assets[settle].underlying.map_or(0, row_bit);
        let shape = if after == before { 0 } else { SHAPE };
        row_bit(self.book.instruments[i].underlying) | asset | shape
    }

    /// An account's requirement, reusing the rows and sums of `cache` still valid and not
    /// marked in `void`, and leaving the account's in it.
    #[inline]
    pub(super) fn evaluate_cached(
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
    #[inline]
    pub(super) fn trim_cache(&self, account: &BookAccount, cache: &mut RowCache) {
        if account.positions.len() < self.row_cache_min {
            *cache = RowCache::default();
        }
    }

    /// A version never handed out before.
    #[inline]
    pub(super) fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Voids every account's row cache (holdings may have changed).
    #[inline]
    pub(super) fn void_row_caches(&mut self) {
        self.generation = self.next_version();
    }

    /// Underlying `u`'s risk arrays were refreshed: cached rows of it are void.
    #[inline]
    pub(super) fn arrays_changed(&mut self, u: usize) {
        let version = self.next_version();
        if self.array_version.len() <= u {
            self.array_version.resize(u + 1, 0);
            self.void_row_caches();
        }
        self.array_version[u] = version;
    }
}

impl RowCache {
    /// The account's requirement, reusing the rows and sums still valid (those of the
    /// underlyings marked in `void` are not: holdings on them changed; removing a position
    /// keeps the order of the rest, so the other rows stay exact) and keeping the new ones.
    #[inline]
    pub(super) fn evaluate(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

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
}
