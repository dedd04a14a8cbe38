//! The scenario grid (docs/MODEL.md section 4) and per-instrument risk arrays.
//!
//! Each underlying has the same set of scenario *slots*: the price steps with vol up and with
//! vol down, the two extremes, and the two decoupling moves. A risk array holds one
//! instrument's P&L per contract in each slot, computed once per snapshot as SPAN does; an
//! account's scenario losses are then sums of arrays weighted by position size, and the three
//! scenario families (single, tandem, decoupling) are read off those sums without repricing:
//! - single: one underlying moves, so the loss is that underlying's row alone;
//! - tandem: every underlying takes the same slot at once, so the loss is the column sum;
//! - decoupling: one underlying moves up (down) by the decoupling fraction while the others
//!   move the other way, i.e. one row's `dec+` slot plus every other row's `dec-` slot.

use crate::book::{Asset, OptionMark, Priced, Underlying};
use crate::input::params::{ExtendedMove, GridParams, VolDirection};
use pmargin_pricing::{black76, black76_value_delta, OptionKind};

/// Floor on a shocked vol, so a vol-down scenario never prices with a zero or negative vol.
pub const MIN_SCENARIO_VOL: f64 = 0.01;

/// The grid's shape: how many price steps, the extreme and decoupling settings, and the
/// extended moves (docs/MODEL.md section 10).
///
/// Slots per underlying, in this order: the `2n` price steps (vol up, vol down at each), the
/// two extremes, the extended moves in the parameter set's order, then the two decoupling
/// moves. Every slot but the decoupling pair belongs to the single and tandem families.
#[derive(Debug, Clone, PartialEq)]
pub struct GridShape {
    pub price_steps: usize,
    pub extreme_multiple: f64,
    pub extreme_cover: f64,
    pub decoupling_fraction: f64,
    pub extended: Vec<ExtendedMove>,
    /// Each slot's weight ([`GridShape::weights`]), kept for the hot path.
    slot_weights: Vec<f64>,
}

/// Vol direction of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolShift {
    Up,
    Down,
    None,
}

impl From<VolDirection> for VolShift {
    fn from(v: VolDirection) -> Self {
        match v {
            VolDirection::Up => VolShift::Up,
            VolDirection::None => VolShift::None,
            VolDirection::Down => VolShift::Down,
        }
    }
}

/// How far a slot moves the price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriceMove {
    /// A multiple of the underlying's scan range (the price steps, extremes, decoupling).
    Range(f64),
    /// An absolute fraction of the price, the same for every underlying (extended moves).
    Absolute(f64),
}

impl PriceMove {
    /// The fraction the price moves for an underlying with scan range `range`.
    #[inline]
    pub fn fraction(&self, range: f64) -> f64 {
        match *self {
            PriceMove::Range(k) => k * range,
            PriceMove::Absolute(m) => m,
        }
    }
}

/// One slot: a price move, a vol direction, and a weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub price: PriceMove,
    pub vol: VolShift,
    pub weight: f64,
}

impl GridShape {
    pub fn new(p: &GridParams) -> GridShape {
        let mut shape = GridShape {
            price_steps: p.price_steps,
            extreme_multiple: p.extreme_multiple,
            extreme_cover: p.extreme_cover,
            decoupling_fraction: p.decoupling_fraction,
            extended: p.extended_moves.clone(),
            slot_weights: Vec::new(),
        };
        shape.slot_weights = (0..shape.width()).map(|s| shape.slot(s).weight).collect();
        shape
    }

    /// Slots per underlying: 2n price/vol slots, 2 extremes, the extended moves, 2 decoupling
    /// moves.
    pub fn width(&self) -> usize {
        self.scan_width() + 2
    }

    /// Slots that belong to the single and tandem families (all but the decoupling pair).
    pub fn scan_width(&self) -> usize {
        2 * self.price_steps + 2 + self.extended.len()
    }

    pub fn decoupling_up(&self) -> usize {
        self.scan_width()
    }

    pub fn decoupling_down(&self) -> usize {
        self.scan_width() + 1
    }

    /// The first extended slot.
    pub fn first_extended(&self) -> usize {
        2 * self.price_steps + 2
    }

    /// `f_j = -1 + 2j/(n-1)`.
    pub fn fraction(&self, j: usize) -> f64 {
        -1.0 + 2.0 * j as f64 / (self.price_steps - 1) as f64
    }

    pub fn slot(&self, s: usize) -> Slot {
        let n = self.price_steps;
        let plain = |range_multiple, vol| Slot {
            price: PriceMove::Range(range_multiple),
            vol,
            weight: 1.0,
        };
        let extended = s.checked_sub(self.first_extended());
        match s {
            s if s < 2 * n => plain(
                self.fraction(s / 2),
                if s.is_multiple_of(2) {
                    VolShift::Up
                } else {
                    VolShift::Down
                },
            ),
            s if s == 2 * n => Slot {
                price: PriceMove::Range(self.extreme_multiple),
                vol: VolShift::None,
                weight: self.extreme_cover,
            },
            s if s == 2 * n + 1 => Slot {
                price: PriceMove::Range(-self.extreme_multiple),
                vol: VolShift::None,
                weight: self.extreme_cover,
            },
            _ => match extended.and_then(|e| self.extended.get(e)) {
                Some(e) => Slot {
                    price: PriceMove::Absolute(e.price_move),
                    vol: e.vol.into(),
                    weight: e.cover,
                },
                None if s == self.decoupling_up() => {
                    plain(self.decoupling_fraction, VolShift::None)
                }
                None => plain(-self.decoupling_fraction, VolShift::None),
            },
        }
    }

    /// Each slot's weight in the grid risk (the extremes' and extended moves' cover, 1
    /// elsewhere).
    pub fn weights(&self) -> Vec<f64> {
        self.slot_weights.clone()
    }

    /// Price move `m` and vol shift `dv` of every slot for one underlying (the vol shift
    /// before an option's tenor scaling, [`OptionMark::vol_scale`]).
    pub fn shocks(&self, u: &Underlying) -> Vec<(f64, f64)> {
        (0..self.width())
            .map(|s| {
                let slot = self.slot(s);
                let dv = match slot.vol {
                    VolShift::Up => u.vol_scan_up,
                    VolShift::Down => -u.vol_scan_down,
                    VolShift::None => 0.0,
                };
                (slot.price.fraction(u.price_scan_range), dv)
            })
            .collect()
    }

    /// A person's name for a slot's move: `-1/3 vol+`, `extreme down`, `extended -0.66 vol up`.
    pub fn slot_label(&self, s: usize) -> String {
        let n = self.price_steps;
        if s < 2 * n {
            let j = (s / 2) as i64;
            let (num, den) = reduce(2 * j - (n as i64 - 1), n as i64 - 1);
            let vol = if s.is_multiple_of(2) { "vol+" } else { "vol-" };
            format!("{num}/{den} {vol}")
        } else if s == 2 * n {
            "extreme up".into()
        } else if s == 2 * n + 1 {
            "extreme down".into()
        } else if let Some(e) = self.extended.get(s - self.first_extended()) {
            format!("extended {:+} vol {}", e.price_move, e.vol.as_str())
        } else if s == self.decoupling_up() {
            "decoupling up".into()
        } else {
            "decoupling down".into()
        }
    }
}

fn reduce(num: i64, den: i64) -> (i64, i64) {
    let (mut a, mut b) = (num.abs(), den.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let g = a.max(1);
    (num / g, den / g)
}

/// P&L of one contract of `inst` in every slot, with the underlying first scaled by `scale`
/// (1 for today's market; other values for the liquidation-price search). Returns the
/// contract's value at `scale`, which the P&Ls are measured from: [`Priced::value_at`], bit
/// for bit, so a caller needing both prices the option once less.
#[inline]
pub fn fill_instrument(
    inst: &Priced,
    scale: f64,
    shocks: &[(f64, f64)],
    rate: f64,
    out: &mut [f64],
) -> f64 {
    fill_instrument_where(inst, scale, shocks, rate, out, |_| true)
}

/// [`fill_instrument`] in the slots `wanted` alone, the same numbers bit for bit: an option's
/// other slots are left as they are (a perpetual's or future's are all filled, at no cost).
#[inline]
pub fn fill_instrument_where(
    inst: &Priced,
    scale: f64,
    shocks: &[(f64, f64)],
    rate: f64,
    out: &mut [f64],
    wanted: impl Fn(usize) -> bool,
) -> f64 {
    let forward = inst.forward * scale;
    match &inst.option {
        None => {
            for (o, (m, _)) in out.iter_mut().zip(shocks) {
                *o = forward * m;
            }
            forward
        }
        Some(opt) => {
            let base = black76(opt.side, forward, opt.strike, opt.t, opt.vol, rate);
            for (s, (o, (m, dv))) in out.iter_mut().zip(shocks).enumerate() {
                if !wanted(s) {
                    continue;
                }
                let vol = (opt.vol + opt.vol_scale * dv).max(MIN_SCENARIO_VOL);
                *o = black76(opt.side, forward * (1.0 + m), opt.strike, opt.t, vol, rate) - base;
            }
            base
        }
    }
}

/// Half-width, relative, of the price window over which [`WindowSlope`] bounds hold: while
/// an underlying's prices stay within 4% of those the risk arrays were computed at, an
/// option's delta moves little, and its slopes are bounded far tighter than over every price.
pub const SLOPE_WINDOW: f64 = 0.04;

/// Bounds on how fast one contract of an option moves, per unit of relative move `x` of its
/// underlying's prices (spot, forwards and marks together, vols held), for every `x` within
/// [`SLOPE_WINDOW`] of 1 (today's prices):
/// - its value moves by `F (centre + d)` with `|d| <= half` (`F` today's forward);
/// - each scenario P&L, times its slot's weight, moves by at most `rows`.
///
/// From the deltas: `d/dx V(xF) = F delta(xF)`, and a slot's P&L `V_s(xF(1 + m)) - V(xF)`
/// (`V_s` at the slot's vol) moves by `F ((1 + m) delta_s(xF(1 + m)) - delta(xF))`. Delta
/// rises with the forward, by at most `D / (sqrt(2 pi) sigma sqrt t)` per unit of log
/// forward, so over the window each delta lies within that times `-ln(1 - SLOPE_WINDOW)` of
/// its value at `x = 1` (and within its range, `[0, D]` for a call, `[-D, 0]` for a put).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowSlope {
    pub rows: f64,
    pub centre: f64,
    pub half: f64,
}

impl WindowSlope {
    /// The bound widened to cover scenario P&Ls under `shocks` too (the historical ones),
    /// by the cruder bound that holds at every price.
    pub fn covering(self, inst: &Priced, shocks: &[(f64, f64)], rate: f64) -> WindowSlope {
        let Some(opt) = &inst.option else {
            return self;
        };
        let factor = shocks
            .iter()
            .fold(0.0f64, |f, &(m, _)| f.max(option_row_factor(m)));
        WindowSlope {
            rows: self
                .rows
                .max(inst.forward * delta_bound(opt, rate) * factor),
            ..self
        }
    }
}

/// How fast a scenario P&L `V(xF(1 + m)) - V(xF)` of an option can move per unit of `x` and
/// of `F D` (`D` its largest delta), at any price: its two deltas have the same sign, so by at
/// most `max(1 + m, 1)` (`|1 + m| + 1` below -100%).
pub fn option_row_factor(m: f64) -> f64 {
    if 1.0 + m >= 0.0 {
        (1.0 + m).max(1.0)
    } else {
        1.0 + (1.0 + m).abs()
    }
}

/// The most an option's delta moves per unit of log forward, at any forward:
/// `D phi(d1) / (sigma sqrt t) <= D / (sigma sqrt(2 pi t))` (`D` its [`delta_bound`]);
/// infinite at or past expiry, where its delta jumps at the strike.
pub fn delta_slope_bound(opt: &OptionMark, rate: f64) -> f64 {
    if opt.t > 0.0 {
        delta_bound(opt, rate) / (opt.vol * (2.0 * std::f64::consts::PI * opt.t).sqrt())
    } else {
        f64::INFINITY
    }
}

/// An option's largest delta in size: 1, or its discount factor under a negative rate.
pub fn delta_bound(opt: &OptionMark, rate: f64) -> f64 {
    if rate >= 0.0 || opt.t <= 0.0 {
        1.0
    } else {
        (-rate * opt.t).exp()
    }
}

/// [`fill_instrument`] at today's prices (`scale` 1, the same values bit for bit), returning
/// the option's [`WindowSlope`] (zero for a perpetual or future: their slopes are exact and
/// summed apart). `weights` are the slots' weights (the extremes' cover).
pub fn fill_instrument_windowed(
    inst: &Priced,
    shocks: &[(f64, f64)],
    weights: &[f64],
    rate: f64,
    out: &mut [f64],
) -> WindowSlope {
    let Some(opt) = &inst.option else {
        fill_instrument(inst, 1.0, shocks, rate, out);
        return WindowSlope::default();
    };
    let forward = inst.forward;
    let d = delta_bound(opt, rate);
    // Delta's range, and the interval around `delta` it keeps to over the window.
    let (lowest, highest) = match opt.side {
        OptionKind::Call => (0.0, d),
        OptionKind::Put => (-d, 0.0),
    };
    let log_window = -(1.0 - SLOPE_WINDOW).ln() * (1.0 + 1e-6);
    // (Once per option: a slot only divides it by its vol.)
    let per_vol = d * log_window / ((2.0 * std::f64::consts::PI).sqrt() * opt.t.max(0.0).sqrt());
    let spread = |vol: f64| {
        let most = per_vol / vol;
        // (Not finite or not positive: delta may jump; only its range is known.)
        if most.is_finite() && most > 0.0 {
            most
        } else {
            d
        }
    };
    let around = |delta: f64, vol: f64| {
        let w = spread(vol);
        ((delta - w).max(lowest), (delta + w).min(highest))
    };
    let (base, base_delta) =
        black76_value_delta(opt.side, forward, opt.strike, opt.t, opt.vol, rate);
    let (b_lo, b_hi) = around(base_delta, opt.vol);
    let mut rows = 0.0f64;
    for ((o, &(m, dv)), &w) in out.iter_mut().zip(shocks).zip(weights) {
        let vol = (opt.vol + opt.vol_scale * dv).max(MIN_SCENARIO_VOL);
        let (value, delta) =
            black76_value_delta(opt.side, forward * (1.0 + m), opt.strike, opt.t, vol, rate);
        *o = value - base;
        // The cruder bound, which holds at every price, caps it.
        let crude = d * option_row_factor(m);
        let tight = if 1.0 + m > 0.0 {
            let (a_lo, a_hi) = around(delta, vol);
            let (a_lo, a_hi) = ((1.0 + m) * a_lo, (1.0 + m) * a_hi);
            (a_hi - b_lo).max(b_hi - a_lo)
        } else {
            crude
        };
        rows = rows.max(w * tight.min(crude));
    }
    // Rounding allowance: the deltas are computed to about 1e-15.
    let slack = 1e-9 * d;
    WindowSlope {
        rows: forward * (rows + slack),
        centre: forward * 0.5 * (b_lo + b_hi),
        half: forward * (0.5 * (b_hi - b_lo) + slack),
    }
}

/// P&L of one unit of a non-stable asset in every slot.
pub fn fill_asset(asset: &Asset, scale: f64, shocks: &[(f64, f64)], out: &mut [f64]) {
    for (o, (m, _)) in out.iter_mut().zip(shocks) {
        *o = asset.price * scale * m;
    }
}

/// Which scenario set the grid risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Single { underlying: usize, slot: usize },
    Tandem { slot: usize },
    Decoupling { underlying: usize, up: bool },
}

impl Scenario {
    pub fn label(&self, shape: &GridShape, names: &[impl AsRef<str>]) -> String {
        match *self {
            Scenario::Single { underlying, slot } => {
                format!(
                    "single {} {}",
                    names[underlying].as_ref(),
                    shape.slot_label(slot)
                )
            }
            Scenario::Tandem { slot } => format!("tandem {}", shape.slot_label(slot)),
            Scenario::Decoupling { underlying, up } => {
                let (this, others) = if up { ("up", "down") } else { ("down", "up") };
                format!(
                    "decoupling {} {this}, others {others}",
                    names[underlying].as_ref()
                )
            }
        }
    }
}

/// Grid risk of one account, read off its summed rows.
#[derive(Debug, Clone, PartialEq)]
pub struct GridOutcome {
    pub grid_risk: f64,
    /// Scanning risk of each exposure, in the order of `exposures`.
    pub scanning_risk: Vec<f64>,
    /// The scenario with the largest loss; `None` for an account without exposure.
    pub worst: Option<Scenario>,
}

/// `rows[e * width + s]` is the account's summed P&L on exposure `e` in slot `s`.
pub fn evaluate(shape: &GridShape, exposures: &[usize], rows: &[f64]) -> GridOutcome {
    evaluate_with(shape, exposures, rows, None)
}

/// The P&L, scenario by scenario, of holdings that are not a sum of one row per underlying
/// (an external position on two non-stable tokens moves with both at once,
/// [`crate::external`]): `single[e * scan_width + s]` when only exposure `e` moves, by slot
/// `s`; `tandem[s]` when every underlying takes slot `s`; `decoupling[e]` when exposure `e`
/// moves up (`[0]`) or down (`[1]`) and every other one the other way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JointPnl {
    pub single: Vec<f64>,
    pub tandem: Vec<f64>,
    pub decoupling: Vec<[f64; 2]>,
}

/// [`evaluate`], each scenario's P&L also taking `joint`'s, where given.
pub fn evaluate_with(
    shape: &GridShape,
    exposures: &[usize],
    rows: &[f64],
    joint: Option<&JointPnl>,
) -> GridOutcome {
    let Some(joint) = joint else {
        return evaluate_rows(shape, exposures, rows);
    };
    let joint = Some(joint);
    let width = shape.width();
    let scan = shape.scan_width();
    // A scan slot's weight: 1, but the extremes' and extended moves' cover.
    let weights = &shape.slot_weights[..scan];
    // The first scenario with the largest loss, in the order they are considered (singles,
    // tandems, decouplings): a later one replaces it only with a strictly larger loss (so a
    // NaN first loss stays the worst, as `loss > NaN` never holds).
    let mut worst: Option<Scenario> = None;
    let mut worst_loss = f64::NAN;
    let mut scanning_risk = Vec::with_capacity(exposures.len());
    for (e, &u) in exposures.iter().enumerate() {
        let row = &rows[e * width..e * width + scan];
        let mut max_loss = 0.0f64;
        for (s, (pnl, w)) in row.iter().zip(weights).enumerate() {
            let pnl = joint.map_or(*pnl, |j| pnl + j.single[e * scan + s]);
            let loss = -w * pnl;
            max_loss = max_loss.max(loss);
            if loss > worst_loss || worst.is_none() {
                worst_loss = loss;
                worst = Some(Scenario::Single {
                    underlying: u,
                    slot: s,
                });
            }
        }
        scanning_risk.push(max_loss);
    }
    if exposures.len() > 1 {
        for (s, w) in weights.iter().enumerate() {
            let total: f64 = (0..exposures.len()).map(|e| rows[e * width + s]).sum();
            let total = joint.map_or(total, |j| total + j.tandem[s]);
            let loss = -w * total;
            if loss > worst_loss {
                worst_loss = loss;
                worst = Some(Scenario::Tandem { slot: s });
            }
        }
        let (up, down) = (shape.decoupling_up(), shape.decoupling_down());
        let total_up: f64 = (0..exposures.len()).map(|e| rows[e * width + up]).sum();
        let total_down: f64 = (0..exposures.len()).map(|e| rows[e * width + down]).sum();
        for (e, &u) in exposures.iter().enumerate() {
            let (own_up, own_down) = (rows[e * width + up], rows[e * width + down]);
            let [joint_up, joint_down] = joint.map_or([0.0; 2], |j| j.decoupling[e]);
            let mut loss = -(own_up + (total_down - own_down));
            if joint.is_some() {
                loss -= joint_up;
            }
            if loss > worst_loss {
                worst_loss = loss;
                worst = Some(Scenario::Decoupling {
                    underlying: u,
                    up: true,
                });
            }
            let mut loss = -(own_down + (total_up - own_up));
            if joint.is_some() {
                loss -= joint_down;
            }
            if loss > worst_loss {
                worst_loss = loss;
                worst = Some(Scenario::Decoupling {
                    underlying: u,
                    up: false,
                });
            }
        }
    }
    GridOutcome {
        grid_risk: worst.map_or(0.0, |_| worst_loss.max(0.0)),
        scanning_risk,
        worst,
    }
}

/// [`evaluate`] without joint P&L: the same losses compared in the same order, so the same
/// outcome bit for bit, in fewer instructions (the replay benchmark evaluates hundreds of
/// thousands of grids): the single family is scanned row by row for its largest loss before any
/// scenario is recorded, and the tandem totals are summed row after row in one buffer.
fn evaluate_rows(shape: &GridShape, exposures: &[usize], rows: &[f64]) -> GridOutcome {
    let width = shape.width();
    let scan = shape.scan_width();
    let weights = &shape.slot_weights[..scan];
    let k = exposures.len();
    let mut scanning_risk = Vec::with_capacity(k);
    if k == 0 || scan == 0 {
        return GridOutcome {
            grid_risk: 0.0,
            scanning_risk: vec![0.0; k],
            worst: None,
        };
    }
    // The first single scenario is the worst until a strictly larger loss comes (a NaN there
    // stays the worst, as `loss > NaN` never holds).
    let mut worst_loss = -weights[0] * rows[0];
    let mut worst = Scenario::Single {
        underlying: exposures[0],
        slot: 0,
    };
    for (e, &u) in exposures.iter().enumerate() {
        let row = &rows[e * width..e * width + scan];
        let mut top = f64::NEG_INFINITY;
        for (pnl, w) in row.iter().zip(weights) {
            top = top.max(-w * pnl);
        }
        // The running maximum from 0 ends on the largest loss when that is above 0; otherwise
        // (zeros of either sign, NaNs) it is taken as `evaluate_with` takes it, loss by loss.
        let max_loss = if top > 0.0 {
            top
        } else {
            row.iter()
                .zip(weights)
                .fold(0.0f64, |m, (pnl, w)| m.max(-w * pnl))
        };
        // A scan in order would record the first loss above the worst so far, then the first
        // above that, ...: it ends on the first of the row's largest (NaNs never count).
        if top > worst_loss {
            if let Some(s) = row.iter().zip(weights).position(|(pnl, w)| -w * pnl == top) {
                worst_loss = -weights[s] * row[s];
                worst = Scenario::Single {
                    underlying: u,
                    slot: s,
                };
            }
        }
        scanning_risk.push(max_loss);
    }
    if k > 1 {
        let (up, down) = (shape.decoupling_up(), shape.decoupling_down());
        // Each total is summed over the exposures in order from the neutral element of `sum`
        // (the same additions as `(0..k).map(..).sum()`, so the same bits).
        let zero: f64 = std::iter::empty::<f64>().sum();
        let mut totals = [zero; 64];
        let columns = width.min(totals.len());
        if columns == width {
            for row in rows.chunks_exact(width).take(k) {
                for (t, r) in totals[..width].iter_mut().zip(row) {
                    *t += r;
                }
            }
        } else {
            for (s, t) in totals.iter_mut().enumerate() {
                *t = (0..k).map(|e| rows[e * width + s]).sum();
            }
        }
        let total = |s: usize| -> f64 {
            if s < columns {
                totals[s]
            } else {
                (0..k).map(|e| rows[e * width + s]).sum()
            }
        };
        for (s, w) in weights.iter().enumerate() {
            let loss = -w * total(s);
            if loss > worst_loss {
                worst_loss = loss;
                worst = Scenario::Tandem { slot: s };
            }
        }
        let (total_up, total_down) = (total(up), total(down));
        for (e, &u) in exposures.iter().enumerate() {
            let (own_up, own_down) = (rows[e * width + up], rows[e * width + down]);
            let loss = -(own_up + (total_down - own_down));
            if loss > worst_loss {
                worst_loss = loss;
                worst = Scenario::Decoupling {
                    underlying: u,
                    up: true,
                };
            }
            let loss = -(own_down + (total_up - own_up));
            if loss > worst_loss {
                worst_loss = loss;
                worst = Scenario::Decoupling {
                    underlying: u,
                    up: false,
                };
            }
        }
    }
    GridOutcome {
        grid_risk: worst_loss.max(0.0),
        scanning_risk,
        worst: Some(worst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::OptionMark;
    use crate::instrument::Instrument;
    use pmargin_pricing::black76_greeks;
    use proptest::prelude::*;

    fn shape() -> GridShape {
        GridShape::new(&GridParams::default())
    }

    fn option(side: OptionKind, forward: f64, strike: f64, t: f64, vol: f64) -> Priced {
        Priced {
            instrument: Instrument::parse("BTC-27DEC26-60000-C").unwrap(),
            underlying: 0,
            forward,
            option: Some(OptionMark {
                strike,
                side,
                vol,
                t,
                vol_scale: 1.0,
            }),
        }
    }

    fn scan(range: f64) -> Underlying {
        Underlying {
            name: "BTC".into(),
            spot: 1.0,
            price_scan_range: range,
            vol_scan_up: 0.1,
            vol_scan_down: 0.1,
            standard_im_rate: 0.1,
            standard_mm_rate: 0.05,
            tenor: Default::default(),
            addons: Default::default(),
            confidence: 0.0,
        }
    }

    proptest! {
        /// At every price within the window, the option's value and every slot's P&L move
        /// (per unit of relative move) within the bounds, by the closed-form deltas there;
        /// and the row filled beside them is `fill_instrument`'s, bit for bit.
        #[test]
        fn window_slopes_bound_the_deltas_anywhere_in_the_window(
            call in any::<bool>(),
            forward in 100.0f64..100_000.0,
            moneyness in -1.0f64..1.0,
            t in prop_oneof![Just(0.0), 0.002f64..2.0],
            vol in 0.05f64..2.0,
            rate in -0.05f64..0.1,
            range in 0.05f64..0.5,
            x in (1.0 - SLOPE_WINDOW)..(1.0 + SLOPE_WINDOW),
        ) {
            let side = if call { OptionKind::Call } else { OptionKind::Put };
            let inst = option(side, forward, forward * moneyness.exp(), t, vol);
            let g = shape();
            let shocks = g.shocks(&scan(range));
            let mut row = vec![0.0; g.width()];
            let slope = fill_instrument_windowed(&inst, &shocks, &g.weights(), rate, &mut row);
            let mut plain = vec![0.0; g.width()];
            fill_instrument(&inst, 1.0, &shocks, rate, &mut plain);
            prop_assert_eq!(
                row.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let strike = forward * moneyness.exp();
            let delta = |f: f64, v: f64| black76_greeks(side, f, strike, t, v, rate).delta;
            let tolerance = 1e-12 * forward;
            let value_slope = forward * delta(x * forward, vol);
            prop_assert!(
                (value_slope - slope.centre).abs() <= slope.half + tolerance,
                "value slope {} outside {} +- {}", value_slope, slope.centre, slope.half
            );
            for (s, &(m, dv)) in shocks.iter().enumerate() {
                let shocked = delta(x * forward * (1.0 + m), (vol + dv).max(MIN_SCENARIO_VOL));
                let moved = forward * ((1.0 + m) * shocked - delta(x * forward, vol));
                prop_assert!(
                    g.slot(s).weight * moved.abs() <= slope.rows + tolerance,
                    "slot {} moves {} beyond {}", s, moved, slope.rows
                );
            }
        }
    }

    /// A one-month at-the-money call, vol 60%, scan range 15%: by hand, its delta near today
    /// is N(0.086) = 0.534 and moves by at most -ln(0.96) / (sqrt(2 pi) 0.6 sqrt(30/365)) =
    /// 0.095 over the window, so the value's half range is 0.095 F (0.5 F at every price);
    /// the widest slot is +15% with vol 50% (delta N(1.047) = 0.852, moving by at most
    /// 0.114), so the rows are bounded by 1.15 x (0.852 + 0.114) - (0.534 - 0.095) = 0.671 F
    /// (1.15 F at every price).
    #[test]
    fn window_slopes_of_an_at_the_money_call_are_well_inside_the_crude_ones() {
        let inst = option(OptionKind::Call, 60_000.0, 60_000.0, 30.0 / 365.0, 0.6);
        let g = shape();
        let shocks = g.shocks(&scan(0.15));
        let mut row = vec![0.0; g.width()];
        let slope = fill_instrument_windowed(&inst, &shocks, &g.weights(), 0.0, &mut row);
        let per_forward = |v: f64| v / 60_000.0;
        assert!((per_forward(slope.half) - 0.095).abs() < 0.002, "{slope:?}");
        assert!(
            (per_forward(slope.centre) - 0.534).abs() < 0.002,
            "{slope:?}"
        );
        assert!((per_forward(slope.rows) - 0.671).abs() < 0.002, "{slope:?}");
    }

    #[test]
    fn seven_steps_give_spans_sixteen_scenarios() {
        let g = shape();
        assert_eq!(g.scan_width(), 16);
        let moves: Vec<f64> = (0..14)
            .step_by(2)
            .map(|s| match g.slot(s).price {
                PriceMove::Range(k) => k,
                PriceMove::Absolute(_) => f64::NAN,
            })
            .collect();
        let thirds = [-1.0, -2.0 / 3.0, -1.0 / 3.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];
        for (m, t) in moves.iter().zip(thirds) {
            assert!((m - t).abs() < 1e-15);
        }
        assert_eq!(
            g.slot(14),
            Slot {
                price: PriceMove::Range(2.0),
                vol: VolShift::None,
                weight: 0.35
            }
        );
        assert_eq!(g.slot(17).price, PriceMove::Range(-0.5));
        assert_eq!(g.slot_label(0), "-1/1 vol+");
        assert_eq!(g.slot_label(3), "-2/3 vol-");
        assert_eq!(g.slot_label(6), "0/1 vol+");
    }

    #[test]
    fn short_perpetual_worst_case_is_the_capped_extreme_or_full_range() {
        // One short BTC perp at mark 60,000, range 10%: full range up loses 6,000;
        // the extreme (+20%) loses 12,000 x 0.35 = 4,200. Scanning risk = 6,000.
        let g = shape();
        let u = Underlying {
            name: "BTC".into(),
            spot: 60000.0,
            price_scan_range: 0.1,
            vol_scan_up: 0.1,
            vol_scan_down: 0.1,
            standard_im_rate: 0.1,
            standard_mm_rate: 0.05,
            tenor: Default::default(),
            addons: Default::default(),
            confidence: 0.0,
        };
        let rows: Vec<f64> = g.shocks(&u).iter().map(|(m, _)| -60000.0 * m).collect();
        let out = evaluate(&g, &[0], &rows);
        assert!((out.grid_risk - 6000.0).abs() < 1e-9);
        assert_eq!(out.scanning_risk.len(), 1);
        assert_eq!(
            out.worst.unwrap().label(&g, &["BTC"]),
            "single BTC 1/1 vol+"
        );
    }

    /// The first implementation of `evaluate`, kept to check the faster one against.
    fn reference_evaluate(shape: &GridShape, exposures: &[usize], rows: &[f64]) -> GridOutcome {
        let width = shape.width();
        let scan = shape.scan_width();
        let weights: Vec<f64> = (0..scan).map(|s| shape.slot(s).weight).collect();
        let mut worst: Option<(f64, Scenario)> = None;
        let mut consider = |loss: f64, scenario: Scenario| {
            if worst.is_none_or(|(w, _)| loss > w) {
                worst = Some((loss, scenario));
            }
        };
        let mut scanning_risk = Vec::with_capacity(exposures.len());
        for (e, &u) in exposures.iter().enumerate() {
            let row = &rows[e * width..e * width + scan];
            let mut max_loss = 0.0f64;
            for (s, (pnl, w)) in row.iter().zip(&weights).enumerate() {
                let loss = -w * pnl;
                max_loss = max_loss.max(loss);
                consider(
                    loss,
                    Scenario::Single {
                        underlying: u,
                        slot: s,
                    },
                );
            }
            scanning_risk.push(max_loss);
        }
        if exposures.len() > 1 {
            for (s, w) in weights.iter().enumerate() {
                let total: f64 = (0..exposures.len()).map(|e| rows[e * width + s]).sum();
                consider(-w * total, Scenario::Tandem { slot: s });
            }
            let (up, down) = (shape.decoupling_up(), shape.decoupling_down());
            let total_up: f64 = (0..exposures.len()).map(|e| rows[e * width + up]).sum();
            let total_down: f64 = (0..exposures.len()).map(|e| rows[e * width + down]).sum();
            for (e, &u) in exposures.iter().enumerate() {
                let (own_up, own_down) = (rows[e * width + up], rows[e * width + down]);
                consider(
                    -(own_up + (total_down - own_down)),
                    Scenario::Decoupling {
                        underlying: u,
                        up: true,
                    },
                );
                consider(
                    -(own_down + (total_up - own_up)),
                    Scenario::Decoupling {
                        underlying: u,
                        up: false,
                    },
                );
            }
        }
        GridOutcome {
            grid_risk: worst.map_or(0.0, |(loss, _)| loss.max(0.0)),
            scanning_risk,
            worst: worst.map(|(_, s)| s),
        }
    }

    #[test]
    fn evaluate_matches_the_reference_on_random_rows() {
        // Version 1's grid, version 2's extended moves (ties between slots of different
        // cover), and a grid wider than the fast path's buffer of tandem totals.
        let extended = GridParams {
            extended_moves: vec![
                ExtendedMove {
                    price_move: -0.3,
                    vol: VolDirection::Up,
                    cover: 0.5,
                },
                ExtendedMove {
                    price_move: 0.4,
                    vol: VolDirection::None,
                    cover: 1.0,
                },
            ],
            ..GridParams::default()
        };
        let wide = GridParams {
            price_steps: 40,
            ..GridParams::default()
        };
        for g in [shape(), GridShape::new(&extended), GridShape::new(&wide)] {
            evaluate_matches_the_reference_with(&g);
        }
    }

    fn evaluate_matches_the_reference_with(g: &GridShape) {
        let width = g.width();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..2_000 {
            let k = case % 6;
            let exposures: Vec<usize> = (0..k).map(|e| 2 * e + 1).collect();
            let rows: Vec<f64> = (0..k * width)
                .map(|_| match (next() * 20.0) as u32 {
                    0 => 0.0,
                    1 => -0.0,
                    2 if case % 7 == 0 => f64::NAN,
                    3 => 1000.0,
                    _ => (next() - 0.5) * 1e4,
                })
                .collect();
            let (fast, slow) = (
                evaluate(g, &exposures, &rows),
                reference_evaluate(g, &exposures, &rows),
            );
            assert_eq!(
                fast.grid_risk.to_bits(),
                slow.grid_risk.to_bits(),
                "case {case}"
            );
            assert_eq!(fast.worst, slow.worst, "case {case}");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast.scanning_risk), bits(&slow.scanning_risk));
        }
    }
}
