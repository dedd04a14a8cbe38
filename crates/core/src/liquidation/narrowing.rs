//! The narrowing of a liquidation-price search from few grid slots (see [`Narrowing`]).

use super::{cushion_with, grid_risk_of, Cushion};
use crate::account::{Evaluator, Partial};
use crate::book::BookAccount;

/// The trials of one narrowing ([`super::narrow`]) with the exposure's grid row summed in few slots.
///
/// The trials all lie between two steps, close together; the row of the exposure that moves
/// was summed in full at `x0` (the step that crossed, from the ladder, or the last trial
/// summed in full), and each of its slots moves by at most `bound[s] |x - x0|` from there
/// (the Lipschitz bound of [`super::cushion_slope_bound`], slot by slot: `|size| F` times the
/// largest weighted move for a perpetual, a future or a coin, times the option's largest
/// delta and [`crate::grid::option_row_factor`] for an option). A trial reprices only the
/// slots that might set the grid risk (the decoupling pair together, where it might), judged
/// against a floor: the grid risk where it was last known, less its own Lipschitz bound times
/// the distance. It then computes the grid risk twice, with every other slot at the low end
/// of its range and at the high end: the grid risk only rises as a scanning slot's P&L falls
/// (sums and maxima, rounding included, are monotone), so the true one lies between the two,
/// and where they are equal it is that number, bit for bit what summing every slot gives.
/// Otherwise the trial is summed in full.
#[derive(Default)]
pub(super) struct Narrowing {
    /// The scale of the last row summed in full and the exposure's row there (`None` until
    /// one is summed with every row finite: a NaN has no order to bound it by).
    at: Option<f64>,
    row: Vec<f64>,
    /// Per slot, the Lipschitz bound of the row in the scale and an allowance for rounding
    /// (the same at every scale; `None` until computed, `Some(false)` where not finite).
    bounded: Option<bool>,
    bound: Vec<f64>,
    slack: Vec<f64>,
    /// The largest weighted slot bound: the grid risk's own Lipschitz bound in the scale.
    steepest: f64,
    /// The last scale the grid risk is known at exactly, and that grid risk; and an allowance
    /// for the rounding of the grid risk's sums (from the size of every row).
    known: (f64, f64),
    allowance: f64,
    wanted: Vec<bool>,
}

impl Narrowing {
    /// Keeps the row of exposure `e` summed in full at scale `x`, where the grid risk is
    /// `grid_risk`, as the one later trials are bounded from (any row summed in full serves;
    /// the nearer the trials, the tighter).
    pub(super) fn keep(
        &mut self,
        evaluator: &Evaluator<'_>,
        account: &BookAccount,
        (e, u, x): (usize, usize, f64),
        partial: &Partial,
        grid_risk: f64,
    ) {
        let width = evaluator.arrays.width;
        let rows = partial.rows();
        if self.bounded == Some(false) || !rows.iter().all(|r| r.is_finite()) {
            return;
        }
        self.row.clear();
        self.row
            .extend_from_slice(&rows[e * width..(e + 1) * width]);
        if self.bounded.is_none() {
            self.bound_slots(evaluator, account, u);
        }
        if self.bounded == Some(true) {
            self.at = Some(x);
            self.known = (x, grid_risk);
            let size: f64 = rows.iter().map(|r| r.abs()).sum();
            let slack = self.slack.iter().fold(0.0f64, |m, s| m.max(*s));
            self.allowance = 1e-9 * (1.0 + grid_risk.abs() + size + slack);
        }
    }

    /// Each slot's Lipschitz bound and rounding allowance, for the holdings on `u`.
    fn bound_slots(&mut self, evaluator: &Evaluator<'_>, account: &BookAccount, u: usize) {
        let (book, arrays) = (evaluator.book, evaluator.arrays);
        let width = arrays.width;
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
        self.bounded = Some(self.bound.iter().chain(&self.slack).all(|b| b.is_finite()));
        // A scanning slot's losses move with its weight, a decoupling loss with the row.
        let weights = &arrays.slot_weights;
        let scan = arrays.shape.scan_width();
        self.steepest = self.bound.iter().enumerate().fold(0.0f64, |m, (s, b)| {
            m.max(if s < scan { weights[s] * b } else { *b })
        });
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
        // The grid risk here is no lower than where it was last known, less its Lipschitz
        // bound times the distance (every loss moves at most that fast), less rounding.
        let (known_at, known) = self.known;
        let floor = known - self.steepest * (x - known_at).abs() * (1.0 + 1e-9) - self.allowance;
        let rows = partial.rows();
        let mut wanted = std::mem::take(&mut self.wanted);
        wanted.clear();
        wanted.resize(width, false);
        let pair = (arrays.shape.decoupling_up(), arrays.shape.decoupling_down());
        let lowest = [pair.0, pair.1].map(|s| self.row[s] - reach(s));
        let decoupling = decoupling_wanted(rows, (width, k, e), pair, lowest, floor);
        for (s, w) in wanted.iter_mut().enumerate() {
            *w = if s == pair.0 || s == pair.1 {
                decoupling
            } else if s >= scan {
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
            let answered = exact && high == low && high.is_finite();
            if answered {
                self.known = (x, high);
            }
            answered.then(|| cushion_with(evaluator, partial, high))
        };
        self.wanted = wanted;
        if result.is_none() {
            // Summed in full by the caller.
            partial.clear_row(e, width);
        }
        result
    }
}

/// Whether exposure `e`'s decoupling P&Ls (up, down), each no lower than `lowest`, might set
/// the grid risk: the most each decoupling loss can be is compared with `floor`. The grid risk
/// sums these slots as `own + (total - own other)`, where rounding does not keep a loss
/// monotone in a row's P&L as it keeps the scanning slots' sums, and brings both of the
/// row's P&Ls into every loss: the pair is wanted together or not at all, and the allowance
/// is far above the rounding of every term, so that a pair left out cannot set the grid risk
/// at any value in its range. (With one exposure there is no decoupling loss.)
fn decoupling_wanted(
    rows: &[f64],
    (width, k, e): (usize, usize, usize),
    (up, down): (usize, usize),
    lowest: [f64; 2],
    floor: f64,
) -> bool {
    if k < 2 {
        return false;
    }
    let others = || {
        rows.chunks_exact(width)
            .take(k)
            .enumerate()
            .filter(move |&(f, _)| f != e)
            .map(|(_, r)| (r[up], r[down]))
    };
    let (mut ups, mut downs, mut size) = (0.0, 0.0, 0.0);
    for (u, d) in others() {
        ups += u;
        downs += d;
        size += u.abs() + d.abs();
    }
    // Its own up with the others down, and its own down with the others up; then each other
    // exposure's own move with the rest, this one among them, the other way.
    let mut most = [-(lowest[0] + downs), -(lowest[1] + ups)];
    for (u, d) in others() {
        most[0] = most[0].max(-(d + (ups - u) + lowest[0]));
        most[1] = most[1].max(-(u + (downs - d) + lowest[1]));
    }
    let allowance = 1e-9 * (1.0 + floor.abs() + size + lowest[0].abs() + lowest[1].abs());
    // (A NaN anywhere leaves the pair wanted.)
    !most.iter().all(|m| m + allowance < floor)
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
                        let k = account.exposures.len();
                        let weights = &arrays.slot_weights;
                        let grid_risk = grid_risk_of(&arrays.shape, weights, k, at_x0.rows());
                        narrowing.keep(&evaluator, account, (e, u, x0), &at_x0, grid_risk);
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
