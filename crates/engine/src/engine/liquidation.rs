//! Liquidation: partial liquidation of an account below maintenance, close-out of one that
//! cannot be restored, and deleveraging of what the insurance fund cannot cover.

use super::fill::{add_balance, apply_fill, update_exposures};
use super::Engine;
use crate::event::Output;
use pmargin_core::account::Kept;
use pmargin_core::book::BookBalance;
use pmargin_core::external::Holding;
use pmargin_core::Evaluator;

/// Largest number of partial liquidation steps one account takes in one round before it is
/// closed out: a bound, so a pathological book cannot stall the engine.
pub const MAX_LIQUIDATION_STEPS: usize = 200;

/// Passes of one liquidation round (a close-out can change other accounts).
pub const MAX_LIQUIDATION_PASSES: usize = 8;

impl Engine {
    /// Liquidates every account below maintenance, in account order, except the liquidator
    /// and accounts exposed to an underlying whose liquidations are suspended.
    pub(super) fn liquidation_round(&mut self, out: &mut Vec<Output>) {
        // A close-out can deleverage other accounts; they are looked at again in the next
        // pass. Bounded: each pass either liquidates something or ends the round.
        for _ in 0..MAX_LIQUIDATION_PASSES {
            let liquidator = self.accounts.get(&self.config.liquidator).copied();
            let candidates: Vec<usize> = self
                .failing
                .iter()
                .copied()
                .filter(|&a| Some(a) != liquidator)
                .filter(|&a| {
                    !self.book.accounts[a]
                        .exposures
                        .iter()
                        .any(|u| self.suspended.contains(u))
                })
                .filter(|&a| self.has_anything_to_liquidate(a))
                .collect();
            if candidates.is_empty() {
                break;
            }
            for a in candidates {
                self.liquidate(a, out);
            }
        }
        if std::mem::take(&mut self.liquidator_dirty) {
            if let Some(l) = self.accounts.get(&self.config.liquidator).copied() {
                self.refresh(&[l], out);
            }
        }
    }

    /// An account holding positions, coin collateral or collateral in another protocol can be
    /// liquidated; one holding only a negative settlement balance has a deficit to cover once.
    /// After a close-out that nobody could fully cover, what remains is bad debt on the books,
    /// not something to act on again.
    pub(super) fn has_anything_to_liquidate(&self, a: usize) -> bool {
        let settle = self.settlement_index().ok();
        let account = &self.book.accounts[a];
        !account.positions.is_empty()
            || account
                .balances
                .iter()
                .any(|b| Some(b.asset) != settle && b.amount != 0.0)
            || account.external.iter().any(super::seize::seizable)
            || !self.bad_debt.contains(&a)
    }

    /// Partial liquidation: repeatedly take the step that restores the most margin surplus
    /// (margin balance minus initial margin) per dollar of penalty, until the account covers
    /// initial margin again. An account that cannot be restored, or whose margin balance is
    /// negative, is closed out.
    pub(super) fn liquidate(&mut self, a: usize, out: &mut Vec<Output>) {
        let Some(liquidator) = self.accounts.get(&self.config.liquidator).copied() else {
            return;
        };
        let Ok(settle) = self.settlement_index() else {
            return;
        };
        // What the chosen trial kept of the account's rows: after its step the account holds
        // exactly the trial's positions, so the next step starts from them.
        let mut carried = None;
        for _ in 0..MAX_LIQUIDATION_STEPS {
            let current = *self.figures(a);
            if current.margin_balance >= current.initial_margin {
                return;
            }
            if current.margin_balance < 0.0 {
                break;
            }
            match self.best_step(a, settle, &mut carried) {
                Some((position, step)) => {
                    self.transfer(a, liquidator, position, step, settle, true, out)
                }
                None => break,
            }
        }
        let current = *self.figures(a);
        if current.margin_balance < current.initial_margin {
            // Deleveraging looks for the opposites of what the account held before anything
            // was closed.
            let held = self.held_sides(a);
            // Collateral in other protocols is seized once the derivatives are closed (seize.rs).
            if self.seize_external(a, liquidator, settle, out) {
                return;
            }
            self.close_out(a, liquidator, settle, &held, out);
        }
    }

    /// Each instrument account `a` holds, with the side it holds.
    fn held_sides(&self, a: usize) -> Vec<(usize, i8)> {
        self.book.accounts[a]
            .positions
            .iter()
            .map(|p| (p.instrument, p.size.signum() as i8))
            .collect()
    }

    /// Moves every position of account `a` to the liquidator at mark, without penalty.
    pub(super) fn close_positions(
        &mut self,
        a: usize,
        liquidator: usize,
        settle: usize,
        out: &mut Vec<Output>,
    ) {
        self.void_row_caches();
        while let Some(j) = self.book.accounts[a]
            .positions
            .iter()
            .position(|p| p.size != 0.0)
        {
            let step = self.book.accounts[a].positions[j].size.abs();
            self.transfer(a, liquidator, j, step, settle, false, out);
        }
        self.book.accounts[a].positions.clear();
    }

    /// The liquidation step with the best surplus relief per unit of penalty, if any helps.
    ///
    /// `carried`: on entry, what the previous step's chosen trial kept, if it was summed by
    /// reuse (its positions are the account's now, the risk arrays unchanged, so it is what a
    /// fresh evaluation would keep, bit for bit); on return, the chosen trial's, likewise.
    pub(super) fn best_step(
        &self,
        a: usize,
        settle: usize,
        carried: &mut Option<Kept>,
    ) -> Option<(usize, f64)> {
        let account = &self.book.accounts[a];
        let current = *self.figures(a);
        let surplus = current.margin_balance - current.initial_margin;
        let evaluator = Evaluator::new(&self.book, &self.arrays);
        // A step changes one position and the settlement balance: unless it closes the last
        // position on an underlying (or the settlement asset moves with one), the exposures
        // stay, and so does every grid row and sum but the step's underlying's, which each trial
        // then reuses (`requirement_reusing`: bit for bit a full evaluation).
        let stable_settlement = self.book.assets[settle].underlying.is_none();
        let mut kept = Kept::default();
        let base = stable_settlement
            && match carried.take() {
                Some(previous) => {
                    kept = previous;
                    true
                }
                None => evaluator
                    .requirement_reusing(account, &[], false, &mut kept)
                    .is_ok(),
            };
        let mut best_kept: Option<Kept> = None;
        let mut reuse = vec![false; account.exposures.len()];
        let mut trial_kept = Kept::default();
        let mut trial = account.clone();
        let mut best: Option<(f64, usize, f64)> = None;
        for (j, p) in account.positions.iter().enumerate() {
            if p.size == 0.0 {
                continue;
            }
            let price = self.arrays.values[p.instrument];
            let spot = self.book.underlyings[p.underlying].spot;
            let min_size = self.config.min_liquidation_notional / spot.max(f64::MIN_POSITIVE);
            let step = (p.size.abs() * self.config.liquidation_step)
                .max(min_size)
                .min(p.size.abs());
            let penalty = step * price.abs() * self.config.liquidation_penalty;
            trial.positions.clone_from(&account.positions);
            trial.balances.clone_from(&account.balances);
            trial.exposures.clone_from(&account.exposures);
            apply_fill(
                &self.book.instruments,
                &mut trial,
                p.instrument,
                -p.size.signum() * step,
                price,
                settle,
                true,
            );
            add_balance(&mut trial, settle, -penalty);
            let same_holdings_shape =
                stable_settlement && trial.positions.len() == account.positions.len();
            let reused = base && same_holdings_shape;
            let evaluated = if reused {
                for (r, &u) in reuse.iter_mut().zip(&account.exposures) {
                    *r = u != p.underlying;
                }
                trial_kept.clone_from(&kept);
                evaluator.requirement_reusing(&trial, &reuse, true, &mut trial_kept)
            } else {
                update_exposures(&self.book.assets, &mut trial);
                evaluator.requirement(&trial)
            };
            let Ok(after) = evaluated else {
                continue;
            };
            let relief = (after.margin_balance - after.initial_margin) - surplus;
            if relief > 0.0 {
                let score = relief / penalty.max(1e-9);
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, j, step));
                    match (&mut best_kept, reused) {
                        (Some(k), true) => k.clone_from(&trial_kept),
                        (slot, true) => *slot = Some(trial_kept.clone()),
                        (slot, false) => *slot = None,
                    }
                }
            }
        }
        *carried = best_kept.filter(|_| best.is_some());
        best.map(|(_, j, step)| (j, step))
    }

    /// Moves `step` contracts of position `j` of account `a` to the liquidator at the mark.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transfer(
        &mut self,
        a: usize,
        liquidator: usize,
        j: usize,
        step: f64,
        settle: usize,
        with_penalty: bool,
        out: &mut Vec<Output>,
    ) {
        let p = self.book.accounts[a].positions[j];
        let price = self.arrays.values[p.instrument];
        let size = -p.size.signum() * step;
        // The penalty never takes more than the account's remaining margin balance: it must not
        // turn a liquidation into a bankruptcy. (A fill at the mark leaves equity unchanged.)
        let penalty = if with_penalty {
            (step * price.abs() * self.config.liquidation_penalty)
                .min(self.figures(a).margin_balance.max(0.0))
        } else {
            0.0
        };
        self.fill_account(a, p.instrument, size, price, settle);
        add_balance(&mut self.book.accounts[a], settle, -penalty);
        self.fill_account(liquidator, p.instrument, -size, price, settle);
        self.insurance_fund += penalty;
        out.push(Output::LiquidationFill {
            account: self.book.accounts[a].id.clone(),
            instrument: self.book.instruments[p.instrument].instrument.name.clone(),
            size,
            price,
            penalty,
        });
        // The liquidator holds every instrument it ever took over, so it is the costliest account
        // to evaluate: it is re-margined once at the end of the round, not after every step.
        self.refresh(&[a], out);
        self.liquidator_dirty = true;
    }

    /// Closes every position to the liquidator at mark, sells coin collateral to it at price,
    /// and covers any deficit from the insurance fund, then by deleveraging profitable accounts
    /// holding the opposite of `held` ([`Engine::held_sides`] before the liquidation closed
    /// anything).
    pub(super) fn close_out(
        &mut self,
        a: usize,
        liquidator: usize,
        settle: usize,
        held: &[(usize, i8)],
        out: &mut Vec<Output>,
    ) {
        self.close_positions(a, liquidator, settle, out);
        let coins: Vec<BookBalance> = self.book.accounts[a]
            .balances
            .iter()
            .copied()
            .filter(|b| b.asset != settle && b.amount != 0.0)
            .collect();
        for b in coins {
            let value = b.amount * self.book.assets[b.asset].price;
            add_balance(&mut self.book.accounts[a], b.asset, -b.amount);
            add_balance(&mut self.book.accounts[a], settle, value);
            add_balance(&mut self.book.accounts[liquidator], b.asset, b.amount);
            add_balance(&mut self.book.accounts[liquidator], settle, -value);
        }
        let balance = self.book.accounts[a]
            .balances
            .iter()
            .find(|b| b.asset == settle)
            .map_or(0.0, |b| b.amount);
        let deficit = (-balance).max(0.0);
        let insurance_paid = deficit.min(self.insurance_fund);
        self.insurance_fund -= insurance_paid;
        add_balance(&mut self.book.accounts[a], settle, insurance_paid);
        let mut touched = vec![a, liquidator];
        let socialised =
            self.deleverage(a, deficit - insurance_paid, held, settle, &mut touched, out);
        out.push(Output::CloseOut {
            account: self.book.accounts[a].id.clone(),
            deficit,
            insurance_paid,
            socialised,
        });
        self.refresh(&touched, out);
        // Left below zero by a borrow in another protocol, which the engine cannot settle, the
        // account has nothing more to act on either: closing it out again would repeat this.
        let owes_elsewhere = self.book.accounts[a]
            .external
            .iter()
            .any(|x| matches!(x.holding, Holding::Borrow { amount, .. } if amount > 0.0))
            && self.figures(a).margin_balance < 0.0;
        if deficit - insurance_paid - socialised > 0.0 || owes_elsewhere {
            self.bad_debt.insert(a);
        } else {
            self.bad_debt.remove(&a);
        }
    }

    /// Takes `amount` from the most profitable, most leveraged accounts holding positions
    /// opposite to the bankrupt account's, up to each one's unrealised profit. Returns what was
    /// covered; any remainder stays as bad debt on the bankrupt account.
    pub(super) fn deleverage(
        &mut self,
        a: usize,
        amount: f64,
        held: &[(usize, i8)],
        settle: usize,
        touched: &mut Vec<usize>,
        out: &mut Vec<Output>,
    ) -> f64 {
        self.void_row_caches();
        if amount <= 0.0 {
            return 0.0;
        }
        let liquidator = self.accounts.get(&self.config.liquidator).copied();
        let mut ranked: Vec<(f64, usize, f64)> = Vec::new();
        for (b, account) in self.book.accounts.iter().enumerate() {
            if b == a || Some(b) == liquidator {
                continue;
            }
            let opposite = account.positions.iter().any(|p| {
                held.iter()
                    .any(|(i, s)| *i == p.instrument && p.size.signum() as i8 == -s)
            });
            if !opposite {
                continue;
            }
            let profit: f64 = account
                .positions
                .iter()
                .filter(|p| self.book.instruments[p.instrument].option.is_none())
                .map(|p| p.size * (self.arrays.values[p.instrument] - p.entry_price))
                .sum();
            let notional: f64 = account
                .positions
                .iter()
                .map(|p| (p.size * self.arrays.values[p.instrument]).abs())
                .sum();
            let equity = self.figures(b).equity.max(1.0);
            if profit > 0.0 {
                ranked.push((profit * notional / equity, b, profit));
            }
        }
        ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut remaining = amount;
        for (_, b, profit) in ranked {
            if remaining <= 0.0 {
                break;
            }
            // Never more than the account's surplus over maintenance: deleveraging must not make
            // another account liquidatable, let alone bankrupt.
            let figures = self.figures(b);
            let surplus = figures.margin_balance - figures.maintenance_margin;
            let take = profit.min(remaining).min(surplus.max(0.0));
            if take <= 0.0 {
                continue;
            }
            add_balance(&mut self.book.accounts[b], settle, -take);
            add_balance(&mut self.book.accounts[a], settle, take);
            remaining -= take;
            touched.push(b);
            out.push(Output::Deleveraged {
                account: self.book.accounts[b].id.clone(),
                amount: take,
            });
        }
        amount - remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use pmargin_core::synthetic;

    /// What a chosen step's trial kept, carried to the next step, is what evaluating the
    /// account afresh after the step keeps, bit for bit (versions 1 and 2, thin collateral so
    /// that accounts take many steps).
    #[test]
    fn the_carried_rows_are_a_fresh_evaluation_of_the_account_after_its_step() {
        let book = synthetic::book(300, 17).unwrap();
        let usdc = |_: usize, asset: &str| if asset == "USDC" { 0.35 } else { 0.0 };
        let portfolio = synthetic::portfolio(&book, usdc, |_, _| true, 1e12);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut checked = 0;
        for v2 in [false, true] {
            let (market, params) = if v2 {
                synthetic::market_and_params_v2()
            } else {
                synthetic::market_and_params()
            }
            .unwrap();
            let mut e = Engine::new(&portfolio, &market, &params, EngineConfig::default()).unwrap();
            e.ensure_settlement_asset().unwrap();
            let settle = e.settlement_index().unwrap();
            let liquidator = e.accounts["liquidator"];
            let failing: Vec<usize> = e.failing.iter().copied().take(40).collect();
            let mut out = Vec::new();
            for a in failing {
                let mut carried = None;
                for _ in 0..30 {
                    let current = *e.figures(a);
                    if current.margin_balance >= current.initial_margin
                        || current.margin_balance < 0.0
                    {
                        break;
                    }
                    let Some((j, step)) = e.best_step(a, settle, &mut carried) else {
                        break;
                    };
                    e.transfer(a, liquidator, j, step, settle, true, &mut out);
                    let Some(kept) = &carried else { continue };
                    let evaluator = Evaluator::new(&e.book, &e.arrays);
                    let mut fresh = Kept::default();
                    evaluator
                        .requirement_reusing(&e.book.accounts[a], &[], false, &mut fresh)
                        .unwrap();
                    assert_eq!(bits(kept.rows()), bits(fresh.rows()), "account {a}");
                    assert_eq!(
                        format!("{:?}", kept.sums()),
                        format!("{:?}", fresh.sums()),
                        "account {a}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "{checked} steps carried");
    }
}
