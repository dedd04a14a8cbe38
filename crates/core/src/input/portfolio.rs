//! Portfolios: accounts with collateral balances, positions, and positions held in other
//! protocols (docs/MODEL.md section 12).

use super::{check_finite, check_number, from_value, key_path, parse_json};
use crate::error::{InputError, Result};
use crate::instrument::Instrument;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortfolio {
    accounts: Vec<RawAccount>,
}

/// [`RawAccount`]'s fields: an account's object opens with one of them (which is how a large
/// file is cut between two accounts, [`super::halves`]).
const ACCOUNT_FIELDS: [&str; 4] = ["id", "balances", "positions", "external"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    #[serde(default)]
    balances: BTreeMap<String, f64>,
    #[serde(default)]
    positions: Vec<RawPosition>,
    /// Read kind by kind in [`ExternalPosition::from_json`], so that an error names its field.
    #[serde(default)]
    external: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPosition {
    instrument: String,
    size: f64,
    #[serde(default)]
    entry_price: Option<f64>,
}

/// A signed holding of one instrument. `entry_price` is present exactly for perpetuals and
/// futures (an option's premium is already in the balances).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub instrument: Instrument,
    pub size: f64,
    pub entry_price: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    /// Asset -> amount; negative amounts are borrows.
    pub balances: BTreeMap<String, f64>,
    pub positions: Vec<Position>,
    /// Positions held in other protocols (docs/MODEL.md section 12), in file order.
    pub external: Vec<ExternalPosition>,
}

/// A position held in another protocol (docs/MODEL.md section 12), as the portfolio's
/// `external` list gives it. `protocol` names an entry of the parameters'
/// `external_protocols`; every token or asset names an entry of their `collateral` (both
/// checked when the portfolio is bound to parameters, [`crate::Book::build`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExternalPosition {
    /// Concentrated liquidity `liquidity` between `price_lower` and `price_upper`, prices of
    /// `token0` in units of `token1`.
    UniswapV3Lp(LiquidityPosition),
    /// A deposit on a lending market: collateral, with the protocol's and the asset's haircut.
    LendingDeposit(LendingPosition),
    /// A borrow on a lending market: a liability, counted in full.
    LendingBorrow(LendingPosition),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiquidityPosition {
    pub protocol: String,
    pub token0: String,
    pub token1: String,
    pub liquidity: f64,
    pub price_lower: f64,
    pub price_upper: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LendingPosition {
    pub protocol: String,
    pub asset: String,
    pub amount: f64,
}

/// The `kind`s of [`ExternalPosition`], as the format spells them.
pub const EXTERNAL_KINDS: [&str; 3] = ["uniswap_v3_lp", "lending_deposit", "lending_borrow"];

impl ExternalPosition {
    pub fn kind(&self) -> &'static str {
        match self {
            ExternalPosition::UniswapV3Lp(_) => EXTERNAL_KINDS[0],
            ExternalPosition::LendingDeposit(_) => EXTERNAL_KINDS[1],
            ExternalPosition::LendingBorrow(_) => EXTERNAL_KINDS[2],
        }
    }

    pub fn protocol(&self) -> &str {
        match self {
            ExternalPosition::UniswapV3Lp(lp) => &lp.protocol,
            ExternalPosition::LendingDeposit(l) | ExternalPosition::LendingBorrow(l) => &l.protocol,
        }
    }

    /// The assets it holds or owes, each with the name of its field: `token0` and `token1`,
    /// or `asset`.
    pub fn tokens(&self) -> Vec<(&'static str, &str)> {
        match self {
            ExternalPosition::UniswapV3Lp(lp) => {
                vec![
                    ("token0", lp.token0.as_str()),
                    ("token1", lp.token1.as_str()),
                ]
            }
            ExternalPosition::LendingDeposit(l) | ExternalPosition::LendingBorrow(l) => {
                vec![("asset", l.asset.as_str())]
            }
        }
    }

    /// Reads one entry of an `external` list; `path` is its JSON path (errors name the field
    /// below it: `kind`, `liquidity`, `price_lower`, an unknown field...).
    pub fn from_json(file: &str, path: &str, value: serde_json::Value) -> Result<Self> {
        let mut fields = match value {
            serde_json::Value::Object(fields) => fields,
            other => {
                return Err(InputError::new(
                    file,
                    path,
                    format!("an external position is an object with a `kind`, got {other}"),
                ))
            }
        };
        let kind_path = format!("{path}.kind");
        let kind = match fields.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            Some(other) => {
                return Err(InputError::new(
                    file,
                    kind_path,
                    format!("must be a string, got {other}"),
                ))
            }
            None => {
                return Err(InputError::new(
                    file,
                    kind_path,
                    format!("missing: one of {}", EXTERNAL_KINDS.join(", ")),
                ))
            }
        };
        let rest = serde_json::Value::Object(fields);
        let below = |err: InputError| {
            let field = if err.path.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{}", err.path)
            };
            InputError::new(file, field, err.message)
        };
        let position = match kind.as_str() {
            "uniswap_v3_lp" => {
                ExternalPosition::UniswapV3Lp(from_value(file, rest).map_err(below)?)
            }
            "lending_deposit" => {
                ExternalPosition::LendingDeposit(from_value(file, rest).map_err(below)?)
            }
            "lending_borrow" => {
                ExternalPosition::LendingBorrow(from_value(file, rest).map_err(below)?)
            }
            other => {
                return Err(InputError::new(
                    file,
                    kind_path,
                    format!(
                        "unknown kind `{other}`: one of {}",
                        EXTERNAL_KINDS.join(", ")
                    ),
                ))
            }
        };
        position.validate(file, path)?;
        Ok(position)
    }

    /// The rules that need no parameter set: finite numbers, a range with `0 < price_lower <
    /// price_upper`, a positive liquidity, an amount not negative, two distinct tokens.
    pub fn validate(&self, file: &str, path: &str) -> Result<()> {
        let field = |name: &str| format!("{path}.{name}");
        let named = |name: &str, what: &str| {
            if what.is_empty() {
                Err(InputError::new(file, field(name), "must not be empty"))
            } else {
                Ok(())
            }
        };
        named("protocol", self.protocol())?;
        for (name, token) in self.tokens() {
            named(name, token)?;
        }
        match self {
            ExternalPosition::UniswapV3Lp(lp) => {
                check_number(file, &field("liquidity"), lp.liquidity, 0.0, true)?;
                check_number(file, &field("price_lower"), lp.price_lower, 0.0, true)?;
                check_finite(file, &field("price_upper"), lp.price_upper)?;
                if lp.price_upper <= lp.price_lower {
                    return Err(InputError::new(
                        file,
                        field("price_upper"),
                        format!(
                            "must be above price_lower ({}), got {}",
                            lp.price_lower, lp.price_upper
                        ),
                    ));
                }
                if lp.token0 == lp.token1 {
                    return Err(InputError::new(
                        file,
                        field("token1"),
                        format!("must differ from token0 (`{}`)", lp.token0),
                    ));
                }
            }
            ExternalPosition::LendingDeposit(l) | ExternalPosition::LendingBorrow(l) => {
                check_number(file, &field("amount"), l.amount, 0.0, false)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Portfolio {
    pub source: String,
    pub accounts: Vec<Account>,
}

/// Largest account id, in characters (docs/FORMATS.md).
pub const ACCOUNT_ID_MAX_LEN: usize = 64;

pub fn valid_account_id(id: &str) -> bool {
    (1..=ACCOUNT_ID_MAX_LEN).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

impl Portfolio {
    pub fn parse(file: &str, text: &str) -> Result<Portfolio> {
        // A valid file is read straight from the text (a large one in two halves at once);
        // only a refused one is read again as a JSON tree, for its error's path and account.
        // (The tree of a large book costs many times the file in memory and time.)
        let raw = match super::halves::read_in_halves(text, "accounts", &ACCOUNT_FIELDS) {
            Some(accounts) => RawPortfolio { accounts },
            None => match serde_json::from_str::<RawPortfolio>(text) {
                Ok(raw) => raw,
                Err(_) => Self::refused(file, text)?,
            },
        };
        Self::validate(file, raw)
    }

    /// The raw portfolio, read through a JSON tree so that an error names its path and
    /// account.
    fn refused(file: &str, text: &str) -> Result<RawPortfolio> {
        let value = parse_json(file, text)?;
        // Serde errors know the path but not the account; look the id up in the raw document.
        let account_of = |path: &str| -> Option<String> {
            let index: usize = path
                .strip_prefix("accounts[")?
                .split(']')
                .next()?
                .parse()
                .ok()?;
            value
                .get("accounts")?
                .get(index)?
                .get("id")?
                .as_str()
                .map(str::to_string)
        };
        match from_value(file, value.clone()) {
            Ok(raw) => Ok(raw),
            Err(mut err) => {
                err.account = account_of(&err.path);
                Err(err)
            }
        }
    }

    fn validate(file: &str, raw: RawPortfolio) -> Result<Portfolio> {
        // The ids first (each valid, none twice), in file order; then every account on its
        // own, in parallel. The error reported is the first in file order either way.
        let mut seen = HashSet::with_capacity(raw.accounts.len());
        let mut refused_id = None;
        for (i, acc) in raw.accounts.iter().enumerate() {
            let message = if !valid_account_id(&acc.id) {
                "an account id is 1 to 64 characters of A-Z a-z 0-9 _ . : -".to_string()
            } else if !seen.insert(acc.id.as_str()) {
                format!("duplicate account id `{}`", acc.id)
            } else {
                continue;
            };
            let path = format!("accounts[{i}].id");
            refused_id = Some((
                i,
                InputError::new(file, path, message).with_account(&acc.id),
            ));
            break;
        }
        drop(seen);
        let mut raw_accounts = raw.accounts;
        if let Some((i, _)) = &refused_id {
            // Only the accounts before the refused id can hold an earlier error.
            raw_accounts.truncate(*i);
        }
        // A large book names the same few hundred instruments millions of times: each worker
        // parses (and checks canonical) each name once, then clones it.
        let checked: Vec<Result<Account>> = raw_accounts
            .into_par_iter()
            .enumerate()
            .with_min_len(1024)
            .map_init(HashMap::new, |instruments, (i, acc)| {
                Self::account(file, i, acc, instruments)
            })
            .collect();
        let mut accounts = Vec::with_capacity(checked.len());
        for account in checked {
            accounts.push(account?);
        }
        if let Some((_, err)) = refused_id {
            return Err(err);
        }
        Ok(Portfolio {
            source: file.to_string(),
            accounts,
        })
    }

    /// Account `i` of the file, checked (its id already is), `instruments` caching the
    /// instruments parsed so far.
    fn account(
        file: &str,
        i: usize,
        acc: RawAccount,
        instruments: &mut HashMap<String, Instrument>,
    ) -> Result<Account> {
        // (Paths are only spelled out for an error: a large book has millions of fields.)
        let base = || format!("accounts[{i}]");
        let err = |path: String, msg: String| {
            InputError::new(file, path, msg).with_account(acc.id.clone())
        };
        for (asset, amount) in &acc.balances {
            if !amount.is_finite() {
                check_finite(
                    file,
                    &key_path(&format!("{}.balances", base()), asset),
                    *amount,
                )
                .map_err(|e| e.with_account(&acc.id))?;
            }
        }
        let mut positions = Vec::with_capacity(acc.positions.len());
        for (j, p) in acc.positions.into_iter().enumerate() {
            let path = || format!("{}.positions[{j}]", base());
            let instrument = match instruments.get(&p.instrument) {
                Some(known) => known.clone(),
                None => {
                    let parsed = Instrument::parse(&p.instrument)
                        .map_err(|e| err(format!("{}.instrument", path()), e))?;
                    instruments.insert(p.instrument.clone(), parsed.clone());
                    parsed
                }
            };
            if !p.size.is_finite() {
                check_finite(file, &format!("{}.size", path()), p.size)
                    .map_err(|e| e.with_account(&acc.id))?;
            }
            match (instrument.is_option(), p.entry_price) {
                (true, Some(_)) => {
                    return Err(err(
                        format!("{}.entry_price", path()),
                        "not allowed for options: the premium is already in the balances".into(),
                    ))
                }
                (false, None) => {
                    return Err(err(
                        format!("{}.entry_price", path()),
                        format!("required for {}", instrument.name),
                    ))
                }
                (false, Some(e)) if !(e.is_finite() && e >= 0.0) => {
                    check_number(file, &format!("{}.entry_price", path()), e, 0.0, false)
                        .map_err(|e| e.with_account(&acc.id))?
                }
                (false, Some(_)) => {}
                (true, None) => {}
            }
            positions.push(Position {
                instrument,
                size: p.size,
                entry_price: p.entry_price,
            });
        }
        let mut external = Vec::with_capacity(acc.external.len());
        for (j, value) in acc.external.into_iter().enumerate() {
            let path = format!("{}.external[{j}]", base());
            external.push(
                ExternalPosition::from_json(file, &path, value)
                    .map_err(|e| e.with_account(&acc.id))?,
            );
        }
        Ok(Account {
            id: acc.id,
            balances: acc.balances,
            positions,
            external,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{ "accounts": [
      { "id": "alice", "balances": { "USDC": 250000, "BTC": 2.0 },
        "positions": [ { "instrument": "BTC-PERPETUAL", "size": -2.0, "entry_price": 61000 },
                       { "instrument": "BTC-27DEC26-60000-P", "size": 5 } ] },
      { "id": "bob", "balances": { "USDC": 40000 },
        "positions": [ { "instrument": "ETH-PERPETUAL", "size": -30, "entry_price": 3050 } ] } ] }"#;

    #[test]
    fn reads_the_example() {
        let p = Portfolio::parse("portfolio.json", EXAMPLE).unwrap();
        assert_eq!(p.accounts.len(), 2);
        assert_eq!(p.accounts[0].positions[0].entry_price, Some(61000.0));
        assert_eq!(p.accounts[1].balances["USDC"], 40000.0);
    }

    #[test]
    fn errors_name_file_path_and_account() {
        let cases = [
            (
                EXAMPLE.replace("\"size\": 5", "\"sise\": 5"),
                "accounts[0].positions[1].sise",
                Some("alice"),
            ),
            (
                EXAMPLE.replace("\"size\": 5", "\"size\": 5, \"entry_price\": 1"),
                "accounts[0].positions[1].entry_price",
                Some("alice"),
            ),
            (
                EXAMPLE.replace("\"size\": -30, \"entry_price\": 3050", "\"size\": -30"),
                "accounts[1].positions[0].entry_price",
                Some("bob"),
            ),
            (
                EXAMPLE.replace("\"id\": \"bob\"", "\"id\": \"alice\""),
                "accounts[1].id",
                Some("alice"),
            ),
            (
                EXAMPLE.replace("\"id\": \"bob\"", "\"id\": \"b o b\""),
                "accounts[1].id",
                Some("b o b"),
            ),
            (
                EXAMPLE.replace("ETH-PERPETUAL", "ETH-32DEC26"),
                "accounts[1].positions[0].instrument",
                Some("bob"),
            ),
            (
                EXAMPLE.replace("\"size\": -30", "\"size\": \"-30\""),
                "accounts[1].positions[0].size",
                Some("bob"),
            ),
            (
                EXAMPLE.replace("\"entry_price\": 61000", "\"entry_price\": -1"),
                "accounts[0].positions[0].entry_price",
                Some("alice"),
            ),
        ];
        for (text, path, account) in cases {
            let err = Portfolio::parse("portfolio.json", &text).unwrap_err();
            assert_eq!(
                (err.path.as_str(), err.account.as_deref()),
                (path, account),
                "{err}"
            );
            assert_eq!(err.file, "portfolio.json");
        }
    }

    #[test]
    fn the_first_error_in_file_order_is_reported() {
        // Ids are checked in a pass of their own and accounts in parallel: whichever comes
        // first in the file is the error, as reading account by account would find it.
        // Thousands of accounts, so that the parallel check splits them.
        let account = |id: &str, entry: &str| {
            format!(
                r#"{{ "id": "{id}", "positions": [ {{ "instrument": "BTC-PERPETUAL", "size": 1, "entry_price": {entry} }} ] }}"#
            )
        };
        let book = |bad: &[(usize, &str, &str)]| {
            let accounts: Vec<String> = (0..5000)
                .map(|i| {
                    let id = format!("a{i}");
                    match bad.iter().find(|(at, _, _)| *at == i) {
                        Some((_, id, entry)) => account(id, entry),
                        None => account(&id, "1"),
                    }
                })
                .collect();
            format!(r#"{{ "accounts": [ {} ] }}"#, accounts.join(","))
        };
        let cases = [
            // A position's error before a duplicate id.
            (
                book(&[(3000, "a3000", "-1"), (4000, "a1", "1")]),
                "accounts[3000].positions[0].entry_price",
            ),
            // A duplicate id before a position's error.
            (
                book(&[(3000, "a1", "1"), (4000, "a4000", "-1")]),
                "accounts[3000].id",
            ),
            // An invalid id before a position's error, and two position errors.
            (
                book(&[(10, "a b", "1"), (20, "a20", "-1")]),
                "accounts[10].id",
            ),
            (
                book(&[(2500, "a2500", "-1"), (4999, "a4999", "-1")]),
                "accounts[2500].positions[0].entry_price",
            ),
        ];
        for (text, path) in cases {
            let err = Portfolio::parse("portfolio.json", &text).unwrap_err();
            assert_eq!(err.path, path, "{err}");
        }
    }
}
