//! Pre-trade what-if: the account's margin before and after a set of trades.
//!
//! This is the question traders ask most: "what is my margin if I add this?". A perpetual or
//! future fills at the given price (default: its mark, so no P&L on entry); an option's premium
//! is paid from (or received into) the settlement balance at the given price (default: its
//! Black-76 value, so equity is unchanged by the trade itself).

use crate::book::Book;
use crate::error::{InputError, Result};
use crate::input::history::History;
use crate::input::market::Market;
use crate::input::params::Params;
use crate::input::portfolio::{Account, Portfolio, Position};
use crate::instrument::Instrument;
use crate::report::{margin_report, AccountReport, ReportOptions};
use serde::Serialize;

/// A hypothetical fill: `INSTRUMENT:SIZE[@PRICE]`, size signed (negative sells).
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub instrument: Instrument,
    pub size: f64,
    pub price: Option<f64>,
}

impl Trade {
    pub fn parse(text: &str) -> std::result::Result<Trade, String> {
        let (name, rest) = text.split_once(':').ok_or_else(|| {
            format!("trade `{text}`: expected INSTRUMENT:SIZE[@PRICE], like BTC-PERPETUAL:-2@61000")
        })?;
        let instrument = Instrument::parse(name)?;
        let (size, price) = match rest.split_once('@') {
            Some((s, p)) => (s, Some(p)),
            None => (rest, None),
        };
        let size: f64 = size
            .parse()
            .map_err(|_| format!("trade `{text}`: size `{size}` is not a number"))?;
        if !size.is_finite() || size == 0.0 {
            return Err(format!(
                "trade `{text}`: size must be a finite nonzero number"
            ));
        }
        let price = match price {
            Some(p) => {
                let v: f64 = p
                    .parse()
                    .map_err(|_| format!("trade `{text}`: price `{p}` is not a number"))?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!(
                        "trade `{text}`: price must be a non-negative finite number"
                    ));
                }
                Some(v)
            }
            None => None,
        };
        Ok(Trade {
            instrument,
            size,
            price,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fill {
    pub instrument: String,
    pub size: f64,
    pub price: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIf {
    pub account: String,
    pub fills: Vec<Fill>,
    pub before: AccountReport,
    pub after: AccountReport,
    /// A trade is accepted when the account still covers initial margin afterwards, or when
    /// it strictly lowers the requirement (reducing risk is always allowed).
    pub accepted: bool,
    pub reason: String,
}

pub fn what_if(
    portfolio: &Portfolio,
    account_id: &str,
    trades: &[Trade],
    market: &Market,
    params: &Params,
    history: Option<&History>,
    settlement_asset: &str,
) -> Result<WhatIf> {
    let account = portfolio
        .accounts
        .iter()
        .find(|a| a.id == account_id)
        .ok_or_else(|| {
            InputError::new(
                &portfolio.source,
                "accounts",
                format!("no account with id `{account_id}`"),
            )
            .with_account(account_id)
        })?;
    let single = |account: Account| Portfolio {
        source: portfolio.source.clone(),
        accounts: vec![account],
    };
    // Price every traded instrument through the same marks the margin run uses.
    let mut probe = account.clone();
    probe.positions = trades
        .iter()
        .map(|t| Position {
            instrument: t.instrument.clone(),
            size: t.size,
            entry_price: (!t.instrument.is_option()).then_some(0.0),
        })
        .collect();
    let book = Book::build(&single(probe), market, params)?;
    let mut after = account.clone();
    let mut fills = Vec::with_capacity(trades.len());
    for (trade, position) in trades.iter().zip(&book.accounts[0].positions) {
        let priced = &book.instruments[position.instrument];
        let price = trade
            .price
            .unwrap_or_else(|| priced.value_at(1.0, book.rate));
        if trade.instrument.is_option() {
            *after
                .balances
                .entry(settlement_asset.to_string())
                .or_insert(0.0) -= trade.size * price;
        }
        after.positions.push(Position {
            instrument: trade.instrument.clone(),
            size: trade.size,
            entry_price: (!trade.instrument.is_option()).then_some(price),
        });
        fills.push(Fill {
            instrument: trade.instrument.name.clone(),
            size: trade.size,
            price,
        });
    }
    let options = ReportOptions::default();
    let mut before = margin_report(&single(account.clone()), market, params, history, options)?;
    let mut after = margin_report(&single(after), market, params, history, options)?;
    let (before, after) = (before.accounts.remove(0), after.accounts.remove(0));
    let covered = after.margin_balance >= after.initial_margin;
    let reduces = after.initial_margin < before.initial_margin;
    let reason = if covered {
        format!(
            "margin balance {:.2} covers initial margin {:.2}",
            after.margin_balance, after.initial_margin
        )
    } else if reduces {
        format!(
            "reduces the requirement from {:.2} to {:.2}",
            before.initial_margin, after.initial_margin
        )
    } else {
        format!(
            "would need initial margin {:.2} with only {:.2} available",
            after.initial_margin, after.margin_balance
        )
    };
    Ok(WhatIf {
        account: account_id.to_string(),
        fills,
        accepted: covered || reduces,
        reason,
        before,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trades() {
        let t = Trade::parse("BTC-PERPETUAL:-2@61000").unwrap();
        assert_eq!((t.size, t.price), (-2.0, Some(61000.0)));
        let t = Trade::parse("DOGE-27DEC26-0.25-C:1000").unwrap();
        assert_eq!((t.size, t.price), (1000.0, None));
        for bad in [
            "BTC-PERPETUAL",
            "BTC-PERPETUAL:x",
            "BTC-PERPETUAL:0",
            "BTC-PERP:1",
            "BTC-PERPETUAL:1@-5",
            "BTC-PERPETUAL:inf",
        ] {
            assert!(Trade::parse(bad).is_err(), "{bad}");
        }
    }
}
