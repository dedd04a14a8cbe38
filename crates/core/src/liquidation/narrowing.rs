//! The narrowing of a liquidation-price search from few grid slots (see [`Narrowing`]).

use super::{cushion_with, grid_risk_of, Cushion};
use crate::account::{Evaluator, Partial};
use crate::book::BookAccount;

/// The trials of one narrowing ([`super::narrow`]) with the exposure's grid row summed in few slots.
///
/// The trials all lie between two steps, close together; the row of the exposure that moves
/// was summed in full at the first trial, `x0`, and each of its slots moves by at most
/// `bound[s] |x - x0|` from there (the Lipschitz bound of [`super::cushion_slope_bound`], slot by
/// slot: `|size| F` times the largest weighted move for a perpetual, a future or a coin, times
/// the option's largest delta and [`crate::grid::option_row_factor`] for an option). A later
/// trial reprices only the slots that might set the grid risk (and the decoupling pair), then
/// computes the grid risk twice, with every other slot at the low end of its range and at the
/// high end: the grid risk only rises as a slot's P&L falls (sums and maxima, rounding
/// included, are monotone), so the true one lies between the two, and where they are equal
/// it is that number, bit for bit what summing every slot gives. Otherwise the trial is
/// summed in full.
#[derive(Default)]
pub(super) struct Narrowing {
    /// The first trial's scale and the exposure's row there (`None` until it is summed, or
    /// if the rows are not all finite: a NaN has no order to bound it by).
    at: Option<f64>,
    row: Vec<f64>,
    /// Per slot, the Lipschitz bound of the row in the scale and an allowance for rounding.
    bound: Vec<f64>,
    slack: Vec<f64>,
    wanted: Vec<bool>,
}

impl Narrowing {
    /// Keeps the row of exposure `e` summed in full at scale `x`, if none is kept yet.
    pub(super) fn keep(
        &mut self,
        evaluator: &Evaluator<'_>,
        account: &BookAccount,
        (e, u, x): (usize, usize, f64),
        partial: &Partial,
    ) {
        if self.at.is_some() {
            return;
        }
        let (book, arrays) = (evaluator.book, evaluator.arrays);
        let width = arrays.width;
        let rows = partial.rows();
        if !rows.iter().all(|r| r.is_finite()) {
            return;
        }
        self.row.clear();
        self.row
            .extend_from_slice(&rows[e * width..(e + 1) * width]);
        let shocks = &arrays.grid_shocks[u];
        self.bound.clear();
        self.bound.resize(width, 0.0);
        self.slack.clear();
        self.slack.resize(width, 0.0);
        let rate = book.rate;
        let mut add = |notional: f64, largest: f64, factor: &dyn Fn(f64) -> f64| {
            for (s, &(m, _)) in shocks.iter().enumerate() {
                self.bound[s] += notional * factor(m);
                self.slack[s] += largest * (1.0 + m.abs());
            }
        };
        for p in account.positions.iter().filter(|p| p.underlying == u) {
            let inst = &book.instruments[p.instrument];
            let notional = p.size.abs() * inst.forward;
            match &inst.option {
                Some(o) => {
                    let d = crate::grid::delta_bound(o, rate);
                    let largest = p.size.abs() * (inst.forward + o.strike) * d.max(1.0);
                    add(notional * d, largest, &crate::grid::option_row_factor);
                }
                None => add(notional, notional, &|m: f64| m.abs()),
            }
        }
        for b in &account.balances {
            let asset = &book.assets[b.asset];
            if asset.underlying == Some(u) {
                let value = (b.amount * asset.price).abs();
                add(value, value, &|m: f64| m.abs());
            }
        }
        if self.bound.iter().chain(&self.slack).all(|b| b.is_finite()) {
            self.at = Some(x);
        }
    }

    /// The cushion at scale `x` from few slots, or `None` where it takes every slot.
    pub(super) fn cushion(
        &mut self,
        evaluator: &Evaluator<'_>,
        account: &BookAccount,
        (e, u, x): (usize, usize, f64),
        partial: &mut Partial,
        scratch: &mut Vec<f64>,
    ) -> Option<Cushion> {
        let x0 = self.at?;
        let arrays = evaluator.arrays;
        let (width, scan, weights) = (
            arrays.width,
            arrays.shape.scan_width(),
            &arrays.slot_weights,
        );
        let k = account.exposures.len();
        let dx = (x - x0).abs();
        // Each slot's range: far wider than the rounding of the sums it bounds.
        let reach = |s: usize| self.bound[s] * dx * (1.0 + 1e-9) + 1e-9 * self.slack[s];
        let grid = |partial: &Partial| grid_risk_of(&arrays.shape, weights, k, partial.rows());
        let fill = |partial: &mut Partial, wanted: &[bool], sign: f64| {
            let row = partial.row_mut(e, width);
            for (s, r) in row.iter_mut().enumerate() {
                if !wanted.get(s).copied().unwrap_or(false) {
                    *r = self.row[s] + sign * reach(s);
                }
            }
        };
        // A grid risk no lower than... a floor: every slot at the top of its range.
        self.wanted.clear();
        self.wanted.resize(width, false);
        fill(partial, &self.wanted, 1.0);
        let floor = grid(partial);
        let rows = partial.rows();
        let floor = floor - 1e-9 * (1.0 + floor.abs());
        let mut wanted = std::mem::take(&mut self.wanted);
        for (s, w) in wanted.iter_mut().enumerate() {
            *w = if s >= scan {
                true
            } else {
                // The most this slot's loss can be, alone and in tandem with the others.
                let low = self.row[s] - reach(s);
                let alone = -weights[s] * low;
                let tandem = if k > 1 {
                    let others: f64 = (0..k)
                        .filter(|&f| f != e)
                        .map(|f| rows[f * width + s])
                        .sum();
                    -weights[s] * (others + low)
                } else {
                    f64::NEG_INFINITY
                };
                alone.max(tandem) >= floor
            };
        }
        let result = if wanted.iter().all(|&w| w) {
            None
        } else {
            partial.clear_row(e, width);
            evaluator.add_underlying_slots(account, (e, u, x), &wanted, partial, scratch);
            let row = &partial.rows()[e * width..(e + 1) * width];
            let exact = row.iter().zip(&wanted).all(|(r, &w)| !w || r.is_finite());
            fill(partial, &wanted, -1.0);
            let high = grid(partial);
            fill(partial, &wanted, 1.0);
            let low = grid(partial);
            (exact && high == low && high.is_finite())
                .then(|| cushion_with(evaluator, partial, high))
        };
        self.wanted = wanted;
        if result.is_none() {
            // Summed in full by the caller.
            partial.clear_row(e, width);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::super::{cushion_of, others_than};
    use super::*;

    #[test]
    fn narrowing_from_few_slots_gives_the_full_cushion_bit_for_bit() {
        // Every exposure of synthetic accounts (options, futures, perpetuals, coins; version 1,
        // and version 2 with extended moves and every add-on) summed in full at one scale, then
        // at scales up to a step away: wherever the trial is answered from few slots, its
        // cushion is exactly that of summing every slot.
        use crate::{synthetic, Evaluator, RiskArrays};
        let (mut answered, mut trials) = (0usize, 0usize);
        for book in [
            synthetic::book(60, 11).unwrap(),
            synthetic::book_v2(60, 11).unwrap(),
        ] {
            let arrays = RiskArrays::compute(&book, None).unwrap();
            let evaluator = Evaluator::new(&book, &arrays);
            let mut scratch = Vec::new();
            for account in &book.accounts {
                for (e, &u) in account.exposures.iter().enumerate() {
                    let others = others_than(&evaluator, account, e);
                    let full = |x: f64, scratch: &mut Vec<f64>| {
                        let mut partial = others.clone();
                        partial.clear_row(e, arrays.width);
                        evaluator.add_underlying(account, e, u, x, &mut partial, scratch);
                        (cushion_of(&evaluator, account, &partial), partial)
                    };
                    for x0 in [0.62, 0.97, 1.013, 1.6] {
                        let mut narrowing = Narrowing::default();
                        let (_, at_x0) = full(x0, &mut scratch);
                        narrowing.keep(&evaluator, account, (e, u, x0), &at_x0);
                        for dx in [1e-9, -3e-7, 2e-4, -1.1e-3, 2.2e-2] {
                            let x = x0 + dx;
                            let mut partial = others.clone();
                            let fast = narrowing.cushion(
                                &evaluator,
                                account,
                                (e, u, x),
                                &mut partial,
                                &mut scratch,
                            );
                            trials += 1;
                            if let Some(fast) = fast {
                                let (slow, _) = full(x, &mut scratch);
                                assert_eq!(
                                    (fast.value.to_bits(), fast.scale.to_bits()),
                                    (slow.value.to_bits(), slow.scale.to_bits()),
                                    "account {} exposure {e} at {x}",
                                    account.id
                                );
                                answered += 1;
                            }
                        }
                    }
                }
            }
        }
        // Most trials close to the kept scale are answered from few slots.
        assert!(
            answered * 2 > trials,
            "{answered} of {trials} trials answered"
        );
    }
}
