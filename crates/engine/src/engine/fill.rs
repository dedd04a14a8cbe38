//! Fills: a fill applied to an account's holdings, and which instruments an account holds.

use super::{Engine, Held};
use pmargin_core::book::{Asset, Book, BookAccount, BookBalance, BookPosition, Priced};

impl Engine {
    /// Applies a fill to account `a`'s holdings ([`apply_fill`]) and marks what of its cached
    /// rows and sums the fill voids. Returns whether it closed a position.
    #[inline]
    pub(super) fn fill_account(
        &mut self,
        a: usize,
        i: usize,
        size: f64,
        price: f64,
        settle: usize,
    ) -> bool {
        let before = self.book.accounts[a].positions.len();
        apply_fill(
            &self.book.instruments,
            &mut self.book.accounts[a],
            i,
            size,
            price,
            settle,
            self.held.may_hold(a, i),
        );
        let after = self.book.accounts[a].positions.len();
        if after > before {
            self.held.mark(&self.book, a, i);
        }
        self.row_void[a] |= self.fill_bits(i, settle, before, after);
        after < before
    }
}

impl Held {
    pub(super) fn of(book: &Book) -> Held {
        let words = book.instruments.len().div_ceil(64).max(1);
        let mut held = Held {
            bits: vec![0; words * book.accounts.len()],
            words,
        };
        for (a, account) in book.accounts.iter().enumerate() {
            for p in &account.positions {
                held.set(a, p.instrument);
            }
        }
        held
    }

    /// Room for a new account, holding nothing.
    #[inline]
    pub(super) fn push(&mut self) {
        self.bits.extend(std::iter::repeat_n(0, self.words));
    }

    /// Whether account `a` may hold instrument `i` (when unsure: yes).
    #[inline]
    pub(super) fn may_hold(&self, a: usize, i: usize) -> bool {
        i / 64 >= self.words
            || self
                .bits
                .get(a * self.words + i / 64)
                .is_none_or(|w| w >> (i % 64) & 1 == 1)
    }

    /// Account `a` has opened a position in instrument `i` (an instrument added to the book
    /// since the bits were laid out lays them out again).
    #[inline]
    pub(super) fn mark(&mut self, book: &Book, a: usize, i: usize) {
        if i / 64 < self.words {
            self.set(a, i);
        } else {
            *self = Held::of(book);
        }
    }

    #[inline]
    pub(super) fn set(&mut self, a: usize, i: usize) {
        if let Some(w) = self.bits.get_mut(a * self.words + i / 64) {
            *w |= 1 << (i % 64);
        }
    }
}

#[inline]
pub(super) fn add_balance(account: &mut BookAccount, asset: usize, amount: f64) {
    if amount == 0.0 {
        return;
    }
    match account.balances.iter_mut().find(|b| b.asset == asset) {
        Some(b) => b.amount += amount,
        None => account.balances.push(BookBalance { asset, amount }),
    }
}

/// Applies a fill of `size` at `price` to an account. Perpetuals and futures keep an average
/// entry price and realise P&L into the settlement balance when reduced; option premiums move
/// through the settlement balance. Either way the account's equity changes by exactly
/// `size x (mark - price)`.
///
/// `held`: whether the account may hold the instrument; if not, its positions are not
/// searched.
#[inline]
pub fn apply_fill(
    instruments: &[Priced],
    account: &mut BookAccount,
    instrument: usize,
    size: f64,
    price: f64,
    settle: usize,
    held: bool,
) {
    let priced = &instruments[instrument];
    let is_option = priced.option.is_some();
    if is_option {
        add_balance(account, settle, -size * price);
    }
    debug_assert!(
        held || account.positions.iter().all(|p| p.instrument != instrument),
        "an account holds an instrument it is not marked as holding"
    );
    let found = if held {
        account
            .positions
            .iter()
            .position(|p| p.instrument == instrument)
    } else {
        None
    };
    let Some(j) = found else {
        account.positions.push(BookPosition {
            instrument,
            underlying: priced.underlying,
            size,
            entry_price: if is_option { 0.0 } else { price },
        });
        return;
    };
    // Only the filled position can have reached zero: removing it alone keeps the others'
    // order, as a `retain` of nonzero positions would.
    let p = &mut account.positions[j];
    if !is_option {
        let (s, e) = (p.size, p.entry_price);
        if s == 0.0 || s.signum() == size.signum() {
            p.entry_price = (s * e + size * price) / (s + size);
        } else {
            let closed = size.abs().min(s.abs()) * s.signum();
            let realised = closed * (price - e);
            if size.abs() > s.abs() {
                p.entry_price = price;
            }
            p.size = s + size;
            let closed_out = p.size == 0.0;
            add_balance(account, settle, realised);
            if closed_out {
                account.positions.remove(j);
            }
            return;
        }
    }
    p.size += size;
    if p.size == 0.0 {
        account.positions.remove(j);
    }
}

/// A copy of an account with room for one more position, balance and exposure (so a trial
/// fill does not reallocate).
#[inline]
pub(super) fn clone_for_fill(account: &BookAccount) -> BookAccount {
    let with_room = |len: usize| len + 1;
    let mut positions = Vec::with_capacity(with_room(account.positions.len()));
    positions.extend_from_slice(&account.positions);
    let mut balances = Vec::with_capacity(with_room(account.balances.len()));
    balances.extend_from_slice(&account.balances);
    let mut exposures =
        Vec::with_capacity(with_room(account.positions.len() + account.balances.len()));
    exposures.extend_from_slice(&account.exposures);
    BookAccount {
        id: account.id.clone(),
        positions,
        balances,
        exposures,
        external: account.external.clone(),
    }
}

/// Recomputes which underlyings an account is exposed to (docs/MODEL.md section 4).
#[inline]
pub fn update_exposures(assets: &[Asset], account: &mut BookAccount) {
    let mut exposures = std::mem::take(&mut account.exposures);
    exposures.clear();
    exposures.extend(
        account
            .positions
            .iter()
            .filter(|p| p.size != 0.0)
            .map(|p| p.underlying),
    );
    exposures.extend(
        account
            .balances
            .iter()
            .filter(|b| b.amount != 0.0)
            .filter_map(|b| assets[b.asset].underlying),
    );
    for x in &account.external {
        exposures.extend(x.exposures(assets));
    }
    exposures.sort_unstable();
    exposures.dedup();
    account.exposures = exposures;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_marks_every_instrument_an_account_holds_and_is_unsure_beyond_its_bits() {
        let mut book = pmargin_core::synthetic::book(3, 7).unwrap();
        let n = book.instruments.len();
        let mut held = Held::of(&book);
        for (a, account) in book.accounts.iter().enumerate() {
            for i in 0..n {
                let holds = account.positions.iter().any(|p| p.instrument == i);
                // Built from the book, the bits are exact.
                assert_eq!(held.may_hold(a, i), holds, "account {a}, instrument {i}");
            }
        }
        // An instrument past the bits laid out, and an account past them: unsure, so yes.
        let beyond = held.words * 64;
        assert!(held.may_hold(0, beyond));
        assert!(held.may_hold(book.accounts.len(), 0));
        // A new account holds nothing; marking an instrument sets its bit alone.
        held.push();
        let new = book.accounts.len();
        assert!((0..n).all(|i| !held.may_hold(new, i)));
        held.mark(&book, new, 1);
        assert!(held.may_hold(new, 1) && !held.may_hold(new, 0) && !held.may_hold(new, 2));
        // Marking an instrument added past the bits lays them out again from the book's
        // holdings.
        let copy = book.instruments[0].clone();
        book.instruments.resize(beyond + 1, copy);
        let p = book.accounts[0].positions[0];
        book.accounts[0].positions.push(BookPosition {
            instrument: beyond,
            ..p
        });
        held.mark(&book, 0, beyond);
        assert!(held.words * 64 > beyond);
        assert!(held.may_hold(0, beyond) && held.may_hold(0, p.instrument));
        assert!(!held.may_hold(1, beyond));
    }
}
