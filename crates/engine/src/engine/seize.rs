//! Seizing collateral held in other protocols (issue 20, docs/METHODOLOGY.md "Seizing
//! collateral in other protocols").
//!
//! A deposit on a lending market or a liquidity position counts as collateral
//! (docs/MODEL.md section 12), but the engine cannot sell it: it sits in another protocol. As
//! Euler's vault connector lets an account's controller call `controlCollateral` on the
//! collateral vault, the engine instructs the protocol's controller to move part of it to the
//! liquidator (the service signs each [`Output::LiquidationSeize`] as an EIP-712
//! `SeizeInstruction`).
//!
//! The rule, once partial liquidation could not restore the account:
//! 1. its perpetuals, futures and options are closed first (to the liquidator, at mark, as a
//!    close-out closes them); if that brings it back to maintenance, nothing is seized;
//! 2. otherwise collateral is seized, never a borrow (a liability of the account, not an asset
//!    it can give up), position by position: each time the one whose seizure in full frees the
//!    most surplus (margin balance less maintenance margin) per dollar seized, so the riskiest,
//!    most heavily cut collateral goes first and the account gives up as little value as it
//!    can; of the position that restores maintenance, only the smallest amount that does (by
//!    bisection), and all of a position that does not;
//! 3. a seized part is worth its value at today's prices ([`Holding::value`]), which the
//!    liquidator pays into the account's settlement balance, with no penalty (the stage is a
//!    close-out's, whose fills carry none); the liquidator's book holds the seized part.
//!
//! An account still below maintenance once everything seizable is gone is closed out as
//! before (coin collateral sold, a deficit covered by the fund and deleveraging).
//!
//! [`plan`] is the pure decision, from the book and risk arrays alone.

use super::fill::update_exposures;
use super::Engine;
use crate::event::Output;
use pmargin_core::book::{Asset, Book, BookAccount, BookExternal};
use pmargin_core::external::Holding;
use pmargin_core::{Evaluator, RiskArrays};

/// Bisection steps for the smallest amount that restores maintenance: the amount is then
/// exact to 2^-60 of the position, far below the 18 decimals a controller reads.
const BISECTIONS: usize = 60;

/// A remainder below this fraction of a position (rounding dust, not worth a transaction) is
/// seized with the rest.
const DUST: f64 = 1e-9;

/// Part of one of an account's external positions to seize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seizure {
    /// The position's index in the account's `external`.
    pub external: usize,
    /// What is seized: a deposit's amount or a liquidity position's liquidity.
    pub amount: f64,
    /// Its value at today's prices.
    pub value: f64,
}

/// Its size: a deposit's or a borrow's amount, a liquidity position's liquidity.
fn size(h: &Holding<usize>) -> f64 {
    match *h {
        Holding::Lp { liquidity, .. } => liquidity,
        Holding::Deposit { amount, .. } | Holding::Borrow { amount, .. } => amount,
    }
}

/// The same position with size `s` (its value and token amounts scale with it).
fn resized(h: &Holding<usize>, s: f64) -> Holding<usize> {
    let mut h = *h;
    match &mut h {
        Holding::Lp { liquidity, .. } => *liquidity = s,
        Holding::Deposit { amount, .. } | Holding::Borrow { amount, .. } => *amount = s,
    }
    h
}

/// Collateral the engine may seize: a deposit or a liquidity position with something in it.
pub fn seizable(x: &BookExternal) -> bool {
    !matches!(x.holding, Holding::Borrow { .. }) && size(&x.holding) > 0.0
}

/// Whether two positions are the same one in their protocol (one balance per asset and kind,
/// one position per pool range), so a seized part joins what the receiver already holds.
fn same_position(a: &BookExternal, b: &BookExternal) -> bool {
    a.protocol == b.protocol && resized(&a.holding, 0.0) == resized(&b.holding, 0.0)
}

fn value_of(assets: &[Asset], h: &Holding<usize>) -> f64 {
    h.value(|a| assets[a].price)
}

/// `account` after the seizures `plan`: each seized part gone from its position (a position
/// seized in full removed) and its value in the settlement balance, exposures updated.
pub fn after(
    assets: &[Asset],
    account: &BookAccount,
    plan: &[Seizure],
    settle: usize,
) -> BookAccount {
    let mut out = account.clone();
    let mut emptied = vec![false; out.external.len()];
    for s in plan {
        let x = &mut out.external[s.external];
        let left = size(&x.holding) - s.amount;
        emptied[s.external] = left <= 0.0;
        x.holding = resized(&x.holding, left.max(0.0));
        super::fill::add_balance(&mut out, settle, s.value);
    }
    let mut j = 0;
    out.external.retain(|_| {
        j += 1;
        !emptied[j - 1]
    });
    update_exposures(assets, &mut out);
    out
}

/// The seizures that bring `account` (its derivatives closed) back to maintenance with the
/// least value seized, or, when nothing can, every seizable position in full (see the module
/// documentation). Empty when the account is at maintenance already or holds no collateral in
/// another protocol.
pub fn plan(
    book: &Book,
    arrays: &RiskArrays,
    account: &BookAccount,
    settle: usize,
) -> Vec<Seizure> {
    let evaluator = Evaluator::new(book, arrays);
    let assets = &book.assets;
    // An evaluation the engine cannot make (unreachable for an account it holds) counts as
    // below maintenance: then everything is seized rather than nothing.
    let surplus = |plan: &[Seizure]| {
        evaluator
            .requirement(&after(assets, account, plan, settle))
            .map_or(f64::NEG_INFINITY, |r| {
                r.margin_balance - r.maintenance_margin
            })
    };
    let whole = |j: usize| {
        let h = &account.external[j].holding;
        Seizure {
            external: j,
            amount: size(h),
            value: value_of(assets, h),
        }
    };
    let mut left: Vec<usize> = (0..account.external.len())
        .filter(|&j| seizable(&account.external[j]))
        .collect();
    let mut plan: Vec<Seizure> = Vec::new();
    let mut now = surplus(&plan);
    while now < 0.0 && !left.is_empty() {
        // (score, place in `left`, surplus after seizing it in full)
        let mut best: Option<(f64, usize, f64)> = None;
        for (k, &j) in left.iter().enumerate() {
            plan.push(whole(j));
            let then = surplus(&plan);
            let seized = plan.pop().map_or(0.0, |s| s.value);
            let relief = then - now;
            let score = if relief.is_finite() {
                relief / seized.max(f64::MIN_POSITIVE)
            } else {
                f64::NEG_INFINITY
            };
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, k, then));
            }
        }
        let Some((_, k, then)) = best else { break };
        let full = whole(left.remove(k));
        if then < 0.0 {
            plan.push(full);
            now = then;
            continue;
        }
        // The smallest fraction of it that restores maintenance: below `lo` the account stays
        // below, at `hi` it is back.
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..BISECTIONS {
            let mid = 0.5 * (lo + hi);
            let h = resized(&account.external[full.external].holding, full.amount * mid);
            plan.push(Seizure {
                amount: full.amount * mid,
                value: value_of(assets, &h),
                ..full
            });
            let ok = surplus(&plan) >= 0.0;
            plan.pop();
            if ok {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let amount = if hi >= 1.0 - DUST {
            full.amount
        } else {
            full.amount * hi
        };
        let h = resized(&account.external[full.external].holding, amount);
        plan.push(Seizure {
            amount,
            value: value_of(assets, &h),
            ..full
        });
        break;
    }
    plan
}

impl Engine {
    /// The step of a liquidation between partial liquidation and close-out, for an account
    /// holding collateral in another protocol: closes its derivatives, then seizes what
    /// [`plan`] says. Returns whether the account is back at maintenance (if not, the caller
    /// closes it out); false, having done nothing, for an account without such collateral.
    pub(super) fn seize_external(
        &mut self,
        a: usize,
        liquidator: usize,
        settle: usize,
        out: &mut Vec<Output>,
    ) -> bool {
        if !self.book.accounts[a].external.iter().any(seizable) {
            return false;
        }
        self.close_positions(a, liquidator, settle, out);
        let current = *self.figures(a);
        if current.margin_balance >= current.maintenance_margin {
            return true;
        }
        let account = &self.book.accounts[a];
        let seizures = plan(&self.book, &self.arrays, account, settle);
        if seizures.is_empty() {
            return false;
        }
        let seized = after(&self.book.assets, account, &seizures, settle);
        let (id, receiver) = (account.id.clone(), self.config.liquidator.clone());
        let held = account.external.clone();
        let mut emptied = Vec::new();
        for s in &seizures {
            let x = held[s.external];
            let part = BookExternal {
                holding: resized(&x.holding, s.amount),
                ..x
            };
            if s.amount >= size(&x.holding) {
                emptied.push(super::attested::position_key(&self.book.external_input(&x)));
            }
            out.push(Output::LiquidationSeize {
                account: id.clone(),
                receiver: receiver.clone(),
                position: self.book.external_input(&part),
                value: s.value,
            });
            let taker = &mut self.book.accounts[liquidator];
            match taker.external.iter_mut().find(|y| same_position(y, &part)) {
                Some(y) => y.holding = resized(&y.holding, size(&y.holding) + s.amount),
                None => taker.external.push(part),
            }
            super::fill::add_balance(taker, settle, -s.value);
        }
        // The exposures before the seizure stay until `refresh`, which clears the bands of
        // those it no longer has.
        let exposures = std::mem::take(&mut self.book.accounts[a].exposures);
        self.book.accounts[a] = BookAccount {
            exposures,
            ..seized
        };
        // A position seized in full no longer rests on its attestation; one seized in part
        // does until the protocol attests what is left.
        if let Some(stamps) = self.attested.positions.get_mut(&id) {
            stamps.retain(|key, _| !emptied.contains(key));
            if stamps.is_empty() {
                self.attested.positions.remove(&id);
            }
        }
        self.void_row_caches();
        self.refresh(&[a], out);
        self.liquidator_dirty = true;
        let now = *self.figures(a);
        now.margin_balance >= now.maintenance_margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmargin_core::{Market, Params, Portfolio};

    /// ETH at 2,000 (scan range 10 %, haircut 10 %), Aave cutting 5 %; account 0 owes 10,000
    /// USDC and has deposited 5 ETH: 10,000 x 0.855 = 8,550 against the 10,000 owed.
    fn book_with(external: &str) -> Book {
        let params = r#"{"version": 1,
          "underlyings": {"ETH": {"price_scan_range": 0.10, "vol_scan_up": 0.1, "vol_scan_down": 0.1,
                                  "standard_im_rate": 0.1, "standard_mm_rate": 0.05}},
          "collateral": {"USDC": {"haircut": 0.0}, "ETH": {"haircut": 0.10, "underlying": "ETH"}},
          "external_protocols": {"aave-v3": {"haircut": 0.05}}}"#;
        let market = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"ETH": 2000, "USDC": 1}}"#;
        let portfolio = format!(
            r#"{{"accounts": [{{"id": "a", "balances": {{"USDC": 0}}, "external": [{external}]}}]}}"#
        );
        Book::build(
            &Portfolio::parse("p", &portfolio).unwrap(),
            &Market::parse("m", market).unwrap(),
            &Params::parse("r", params).unwrap(),
        )
        .unwrap()
    }

    const OWED: &str =
        r#"{"kind": "lending_borrow", "protocol": "aave-v3", "asset": "USDC", "amount": 10000}"#;
    const ETH5: &str =
        r#"{"kind": "lending_deposit", "protocol": "aave-v3", "asset": "ETH", "amount": 5}"#;

    fn usdc(book: &Book) -> usize {
        book.assets.iter().position(|a| a.name == "USDC").unwrap()
    }

    /// Margin balance 8,550 - 10,000 = -1,450, maintenance 0.75 x 1,000 = 750: seizing f of
    /// the deposit, -1,450 + 10,000 x 0.145 f = 750 (1 - f), f = 2,200 / 2,200 = 1: all of it,
    /// which leaves exactly 0 against 0. The borrow stays.
    #[test]
    fn the_plan_takes_what_restores_maintenance_and_never_the_borrow() {
        let book = book_with(&format!("{OWED}, {ETH5}"));
        let arrays = RiskArrays::compute(&book, None).unwrap();
        let account = &book.accounts[0];
        let settle = usdc(&book);
        let plan = plan(&book, &arrays, account, settle);
        assert_eq!(
            plan,
            vec![Seizure {
                external: 1,
                amount: 5.0,
                value: 10000.0
            }]
        );
        let left = after(&book.assets, account, &plan, settle);
        assert_eq!(left.external, vec![account.external[0]]);
        assert_eq!(left.balances[0].amount, 10000.0);
        assert!(left.exposures.is_empty(), "{:?}", left.exposures);
        // With only the borrow there is nothing to seize.
        let only_owed = book_with(OWED);
        let arrays = RiskArrays::compute(&only_owed, None).unwrap();
        let settle = usdc(&only_owed);
        assert!(plan_of(&only_owed, &arrays, settle).is_empty());
    }

    fn plan_of(book: &Book, arrays: &RiskArrays, settle: usize) -> Vec<Seizure> {
        plan(book, arrays, &book.accounts[0], settle)
    }

    /// An account at maintenance gives up nothing: 5 ETH alone, no debt.
    #[test]
    fn nothing_is_planned_for_an_account_at_maintenance() {
        let book = book_with(ETH5);
        let arrays = RiskArrays::compute(&book, None).unwrap();
        assert!(plan_of(&book, &arrays, usdc(&book)).is_empty());
    }

    /// A seized part joins the receiver's position of the same protocol, asset and kind, and
    /// only that one.
    #[test]
    fn a_seized_part_joins_the_same_position_only() {
        let book = book_with(&format!("{OWED}, {ETH5}"));
        let [borrow, deposit] = [book.accounts[0].external[0], book.accounts[0].external[1]];
        let part = BookExternal {
            holding: resized(&deposit.holding, 1.5),
            ..deposit
        };
        assert!(same_position(&deposit, &part));
        assert!(!same_position(&borrow, &part));
        assert!(seizable(&deposit) && !seizable(&borrow));
        assert!(!seizable(&BookExternal {
            holding: resized(&deposit.holding, 0.0),
            ..deposit
        }));
    }
}
