//! Screening: safe bands that spare a tick the accounts whose status it cannot change.
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

use super::{AccountRisk, Band, Bands, Engine, ALWAYS, NOT_EXPOSED, UNEXPOSED};
use pmargin_core::account::{ExposureSums, Status};
use pmargin_core::book::{Book, BookAccount};
use pmargin_core::grid::{self, SLOPE_WINDOW};
use pmargin_core::liquidation::status_slope_parts_from;
use pmargin_core::Evaluator;
use std::sync::OnceLock;

/// Allowance for rounding, relative to the size of the figures and of the bounds: the
/// evaluated figures carry errors of order 1e-13 of the terms they are summed from.
pub(super) const ROUNDING_ALLOWANCE: f64 = 1e-9;

/// Widest relative band (keeps band edges finite).
pub(super) const MAX_BAND: f64 = 1e6;

impl Engine {
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
    #[inline]
    pub(super) fn screen_fill(
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

    /// A price left account `a`'s band and re-cutting did not prove its status: most of its
    /// slope bound is its margin balance's, which is cheap to recompute exactly (values and
    /// balances, no scenario). With it exact and the requirement bounded by its slope since the
    /// last evaluation (`|IM - IM_eval| <= sum_u R_u |p_u / p_u,eval - 1|`), the status is
    /// proven unchanged if every status figure stays on its side over that whole range; the
    /// bands can then be re-centred on today's prices ([`Engine::recentre`]) with what is left
    /// as their room (the requirement's spread so far is spent; later moves are covered by the
    /// full slopes). Returns that room and the relative band width, or `None` (the account must
    /// be re-margined).
    #[inline]
    pub(super) fn recentre_room(&self, a: usize) -> Option<(f64, f64)> {
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
    #[inline]
    pub(super) fn recentre(&mut self, a: usize, room: f64, delta: f64) {
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

    /// Centres account `a`'s bands on today's prices: `slopes` are its exposures' slope bounds
    /// (any exposure missing from them, or a room that is not positive, is never screened).
    #[inline]
    pub(super) fn set_screen(&mut self, a: usize, room: f64, slopes: Vec<(usize, f64)>) {
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
}

impl Band {
    /// Whether the band's slopes hold at price `p`: they were summed from options' bounds
    /// near the prices of the account's last evaluation ([`grid::WindowSlope`]), within
    /// [`SLOPE_WINDOW`] of them. (False for a NaN.)
    #[inline]
    pub(super) fn holds_at(&self, p: f64) -> bool {
        let (from, to) = self.window();
        from <= p && p <= to
    }

    /// The prices where the band's slopes hold.
    #[inline]
    pub(super) fn window(&self) -> (f64, f64) {
        let e = self.evaluated_at;
        (e - e * SLOPE_WINDOW, e + e * SLOPE_WINDOW)
    }

    /// Sets the band's edges to `[lo, hi]`, cut to where its slopes hold (anything NaN: an
    /// empty band).
    #[inline]
    pub(super) fn set_edges(&mut self, lo: f64, hi: f64) {
        let (from, to) = self.window();
        (self.lo, self.hi) = if from <= to && lo <= hi {
            (lo.max(from), hi.min(to))
        } else {
            ALWAYS
        };
    }
}

impl Bands {
    pub(super) fn new(n: usize) -> Bands {
        Bands(vec![UNEXPOSED; n])
    }

    #[inline]
    pub(super) fn push(&mut self) {
        self.0.push(UNEXPOSED);
    }

    #[inline]
    pub(super) fn clear(&mut self, a: usize) {
        self.0[a].lo = NOT_EXPOSED.0;
        self.0[a].hi = NOT_EXPOSED.1;
    }
}

/// What screening knows of an account after an evaluation: a lower bound on the distance of
/// each status figure from zero (`room`, rounding allowances taken) at the reference prices,
/// and the slope bound of each exposure (in `exposures` order; empty: not screened).
pub(super) struct Screen {
    pub(super) room: f64,
    pub(super) slopes: Vec<f64>,
    /// The requirement's part of each slope.
    pub(super) required: Vec<f64>,
}

impl Screen {
    pub(super) const NONE: Screen = Screen {
        room: f64::NEG_INFINITY,
        slopes: Vec::new(),
        required: Vec::new(),
    };
}

/// A fill accepted without evaluating the account: the screen it leaves (slopes per
/// underlying, at today's prices).
pub(super) struct ScreenedFill {
    pub(super) room: f64,
    pub(super) slopes: Vec<(usize, f64)>,
}

/// The accounts a price tick on `u` (at the book's new price) may concern: each exposed
/// account whose band the price leaves, unless re-cutting its bands ([`recut`]) still proves
/// its status. Accounts left inside their bands, and those re-cut, only have their figures
/// go stale. Unscreened ticks return every exposed account.
#[inline]
pub(super) fn screen_tick(
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
#[inline]
pub(super) fn recut(bands: &mut [Bands], book: &Book, room: f64, a: usize) -> bool {
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
#[inline]
pub(super) fn screen_of(
    evaluator: &Evaluator<'_>,
    factors: &[(f64, f64)],
    account: &BookAccount,
    r: &AccountRisk,
    screening: bool,
    sums: &[ExposureSums],
) -> Screen {
    // External positions (docs/MODEL.md section 12) are not in the slope bounds: a liquidity
    // position's value is concave in the price (short gamma), so an account holding any is
    // re-margined at every tick of its exposures and every fill, never screened.
    if !screening || account.exposures.is_empty() || !account.external.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::event::Event;

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
}
