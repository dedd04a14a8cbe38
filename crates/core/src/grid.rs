//! The scenario grid (MODEL.md section 4) and per-instrument risk arrays.
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

use crate::book::{Asset, Priced, Underlying};
use crate::input::params::GridParams;
use pmargin_pricing::black76;

/// Floor on a shocked vol, so a vol-down scenario never prices with a zero or negative vol.
pub const MIN_SCENARIO_VOL: f64 = 0.01;

/// The grid's shape: how many price steps, and the extreme and decoupling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GridShape {
    pub price_steps: usize,
    pub extreme_multiple: f64,
    pub extreme_cover: f64,
    pub decoupling_fraction: f64,
}

/// Vol direction of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolShift {
    Up,
    Down,
    None,
}

/// One slot: a price move as a multiple of the scan range, a vol direction, and a weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub range_multiple: f64,
    pub vol: VolShift,
    pub weight: f64,
}

impl GridShape {
    pub fn new(p: &GridParams) -> GridShape {
        GridShape {
            price_steps: p.price_steps,
            extreme_multiple: p.extreme_multiple,
            extreme_cover: p.extreme_cover,
            decoupling_fraction: p.decoupling_fraction,
        }
    }

    /// Slots per underlying: 2n price/vol slots, 2 extremes, 2 decoupling moves.
    pub fn width(&self) -> usize {
        2 * self.price_steps + 4
    }

    /// Slots that belong to the single and tandem families (all but the decoupling pair).
    pub fn scan_width(&self) -> usize {
        2 * self.price_steps + 2
    }

    pub fn decoupling_up(&self) -> usize {
        2 * self.price_steps + 2
    }

    pub fn decoupling_down(&self) -> usize {
        2 * self.price_steps + 3
    }

    /// `f_j = -1 + 2j/(n-1)`.
    pub fn fraction(&self, j: usize) -> f64 {
        -1.0 + 2.0 * j as f64 / (self.price_steps - 1) as f64
    }

    pub fn slot(&self, s: usize) -> Slot {
        let n = self.price_steps;
        let plain = |range_multiple, vol| Slot {
            range_multiple,
            vol,
            weight: 1.0,
        };
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
                range_multiple: self.extreme_multiple,
                vol: VolShift::None,
                weight: self.extreme_cover,
            },
            s if s == 2 * n + 1 => Slot {
                range_multiple: -self.extreme_multiple,
                vol: VolShift::None,
                weight: self.extreme_cover,
            },
            s if s == 2 * n + 2 => plain(self.decoupling_fraction, VolShift::None),
            _ => plain(-self.decoupling_fraction, VolShift::None),
        }
    }

    /// Price move `m` and vol shift `dv` of every slot for one underlying.
    pub fn shocks(&self, u: &Underlying) -> Vec<(f64, f64)> {
        (0..self.width())
            .map(|s| {
                let slot = self.slot(s);
                let dv = match slot.vol {
                    VolShift::Up => u.vol_scan_up,
                    VolShift::Down => -u.vol_scan_down,
                    VolShift::None => 0.0,
                };
                (slot.range_multiple * u.price_scan_range, dv)
            })
            .collect()
    }

    /// A person's name for a slot's move: `-1/3 vol+`, `extreme down`.
    pub fn slot_label(&self, s: usize) -> String {
        let n = self.price_steps;
        if s < 2 * n {
            let j = (s / 2) as i64;
            let (num, den) = reduce(2 * j - (n as i64 - 1), n as i64 - 1);
            let vol = if s.is_multiple_of(2) { "vol+" } else { "vol-" };
            format!("{num}/{den} {vol}")
        } else if s == 2 * n {
            "extreme up".into()
        } else {
            "extreme down".into()
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
/// (1 for today's market; other values for the liquidation-price search).
pub fn fill_instrument(
    inst: &Priced,
    scale: f64,
    shocks: &[(f64, f64)],
    rate: f64,
    out: &mut [f64],
) {
    let forward = inst.forward * scale;
    match &inst.option {
        None => {
            for (o, (m, _)) in out.iter_mut().zip(shocks) {
                *o = forward * m;
            }
        }
        Some(opt) => {
            let base = black76(opt.side, forward, opt.strike, opt.t, opt.vol, rate);
            for (o, (m, dv)) in out.iter_mut().zip(shocks) {
                let vol = (opt.vol + dv).max(MIN_SCENARIO_VOL);
                *o = black76(opt.side, forward * (1.0 + m), opt.strike, opt.t, vol, rate) - base;
            }
        }
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
    let width = shape.width();
    let scan = shape.scan_width();
    // A scan slot's weight: 1, but the extremes' cover (as `GridShape::slot` gives it); a
    // table for the usual grid.
    let extremes = 2 * shape.price_steps;
    const TABLE: usize = 64;
    let mut table = [1.0f64; TABLE];
    for w in table.iter_mut().take(scan).skip(extremes) {
        *w = shape.extreme_cover;
    }
    let weight = |s: usize| {
        if s < TABLE {
            table[s]
        } else if s >= extremes {
            shape.extreme_cover
        } else {
            1.0
        }
    };
    // The first scenario with the largest loss, in the order they are considered (singles,
    // tandems, decouplings): a later one replaces it only with a strictly larger loss (so a
    // NaN first loss stays the worst, as `loss > NaN` never holds).
    let mut worst: Option<Scenario> = None;
    let mut worst_loss = f64::NAN;
    let mut scanning_risk = Vec::with_capacity(exposures.len());
    for (e, &u) in exposures.iter().enumerate() {
        let row = &rows[e * width..e * width + scan];
        let mut max_loss = 0.0f64;
        for (s, pnl) in row.iter().enumerate() {
            let loss = -weight(s) * pnl;
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
        for s in 0..scan {
            let total: f64 = (0..exposures.len()).map(|e| rows[e * width + s]).sum();
            let loss = -weight(s) * total;
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
            let loss = -(own_up + (total_down - own_down));
            if loss > worst_loss {
                worst_loss = loss;
                worst = Some(Scenario::Decoupling {
                    underlying: u,
                    up: true,
                });
            }
            let loss = -(own_down + (total_up - own_up));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> GridShape {
        GridShape::new(&GridParams::default())
    }

    #[test]
    fn seven_steps_give_spans_sixteen_scenarios() {
        let g = shape();
        assert_eq!(g.scan_width(), 16);
        let moves: Vec<f64> = (0..14)
            .step_by(2)
            .map(|s| g.slot(s).range_multiple)
            .collect();
        let thirds = [-1.0, -2.0 / 3.0, -1.0 / 3.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];
        for (m, t) in moves.iter().zip(thirds) {
            assert!((m - t).abs() < 1e-15);
        }
        assert_eq!(
            g.slot(14),
            Slot {
                range_multiple: 2.0,
                vol: VolShift::None,
                weight: 0.35
            }
        );
        assert_eq!(g.slot(17).range_multiple, -0.5);
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
        let g = shape();
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
                evaluate(&g, &exposures, &rows),
                reference_evaluate(&g, &exposures, &rows),
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
