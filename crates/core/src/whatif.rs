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
        fill(&mut after, trade, price, settlement_asset);
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

/// Applies a fill as the real-time engine does (`pmargin_engine::apply_fill`): a trade in an
/// instrument the account already holds nets into that position, so closing a position leaves
/// none (and no basis add-on on a leg that is gone). Perpetuals and futures keep an average
/// entry price and realise P&L into the settlement balance when reduced; option premiums move
/// through the settlement balance.
fn fill(account: &mut Account, trade: &Trade, price: f64, settlement_asset: &str) {
    let is_option = trade.instrument.is_option();
    let mut cash = if is_option { -trade.size * price } else { 0.0 };
    let size = trade.size;
    match account
        .positions
        .iter()
        .position(|p| p.instrument.name == trade.instrument.name)
    {
        None => account.positions.push(Position {
            instrument: trade.instrument.clone(),
            size,
            entry_price: (!is_option).then_some(price),
        }),
        Some(j) => {
            let p = &mut account.positions[j];
            let (s, e) = (p.size, p.entry_price.unwrap_or(price));
            if !is_option && s != 0.0 && s.signum() != size.signum() {
                let closed = size.abs().min(s.abs()) * s.signum();
                cash += closed * (price - e);
                if size.abs() > s.abs() {
                    p.entry_price = Some(price);
                }
            } else if !is_option {
                p.entry_price = Some((s * e + size * price) / (s + size));
            }
            p.size = s + size;
            if p.size == 0.0 {
                account.positions.remove(j);
            }
        }
    }
    if cash != 0.0 {
        *account
            .balances
            .entry(settlement_asset.to_string())
            .or_insert(0.0) += cash;
    }
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

    fn long_two_perps() -> Account {
        Account {
            id: "a".into(),
            balances: [("USDC".to_string(), 1000.0)].into_iter().collect(),
            positions: vec![Position {
                instrument: Instrument::parse("BTC-PERPETUAL").unwrap(),
                size: 2.0,
                entry_price: Some(50_000.0),
            }],
            external: Vec::new(),
        }
    }

    #[test]
    fn a_trade_nets_into_the_position_it_meets() {
        let sell = |size: f64| Trade::parse(&format!("BTC-PERPETUAL:{size}@60000")).unwrap();
        // Closing: no position is left and 2 x (60,000 - 50,000) is realised.
        let mut a = long_two_perps();
        fill(&mut a, &sell(-2.0), 60_000.0, "USDC");
        assert!(a.positions.is_empty());
        assert_eq!(a.balances["USDC"], 21_000.0);
        // Reducing: the rest keeps its entry; 1 x 10,000 is realised.
        let mut a = long_two_perps();
        fill(&mut a, &sell(-1.0), 60_000.0, "USDC");
        assert_eq!(
            (a.positions[0].size, a.positions[0].entry_price),
            (1.0, Some(50_000.0))
        );
        assert_eq!(a.balances["USDC"], 11_000.0);
        // Flipping: the new short enters at the fill price.
        let mut a = long_two_perps();
        fill(&mut a, &sell(-3.0), 60_000.0, "USDC");
        assert_eq!(
            (a.positions[0].size, a.positions[0].entry_price),
            (-1.0, Some(60_000.0))
        );
        // Adding: the entry averages, (2 x 50,000 + 2 x 60,000) / 4.
        let mut a = long_two_perps();
        fill(&mut a, &sell(2.0), 60_000.0, "USDC");
        assert_eq!(
            (a.positions[0].size, a.positions[0].entry_price),
            (4.0, Some(55_000.0))
        );
        assert_eq!(a.balances["USDC"], 1000.0);
    }
}
