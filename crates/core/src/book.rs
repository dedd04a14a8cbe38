//! The book: a portfolio bound to a market snapshot and a parameter set.
//!
//! Building a book is where names become indices and marks are fixed: every distinct
//! instrument is priced once (forward, vol, time to expiry, value) however many accounts hold
//! it, and every reference an account makes is checked, so that the margin computation that
//! follows cannot fail half way. Errors name the file that lacks something and the account
//! that needed it.

use crate::error::{InputError, Result};
use crate::input::key_path;
use crate::input::market::Market;
use crate::input::params::Params;
use crate::input::portfolio::{Account, ExternalPosition, Portfolio, Position};
use crate::instrument::{year_fraction, Instrument, Kind, OptionKind};
use chrono::{DateTime, Utc};
use pmargin_pricing::black76;
use std::collections::HashMap;

/// An underlying with its spot and scan parameters. `spot` is 0 for an underlying that the
/// parameter set knows but the book does not use (and the market need not price).
#[derive(Debug, Clone)]
pub struct Underlying {
    pub name: String,
    pub spot: f64,
    pub price_scan_range: f64,
    pub vol_scan_up: f64,
    pub vol_scan_down: f64,
    pub standard_im_rate: f64,
    pub standard_mm_rate: f64,
    /// How an option's vol shift scales with its tenor (docs/MODEL.md section 9).
    pub tenor: TenorScaling,
    /// The contingency add-on rates (docs/MODEL.md section 11).
    pub addons: AddonRates,
    /// The oracle's price uncertainty in USD (the market's `confidence`; 0 where absent).
    pub confidence: f64,
}

/// docs/MODEL.md section 9: `s = (tenor_days / d)^p`, `d = max(365 T, min_days)`, `p` the short
/// power under `tenor_days` and the long one from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenorScaling {
    pub tenor_days: f64,
    pub power_short: f64,
    pub power_long: f64,
    pub min_days: f64,
}

impl Default for TenorScaling {
    fn default() -> Self {
        TenorScaling {
            tenor_days: 30.0,
            power_short: 0.0,
            power_long: 0.0,
            min_days: 1.0,
        }
    }
}

impl TenorScaling {
    /// The factor on the vol shift of an option `t` years from expiry. At or past expiry the
    /// option is worth its intrinsic value and takes no vol: 1, which nothing reads. With both
    /// powers 0 it is exactly 1 (`powf(x, 0)` is 1 for every `x`), so version 1 shocks keep
    /// their bits.
    pub fn scale(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        let days = (365.0 * t).max(self.min_days);
        let power = if days < self.tenor_days {
            self.power_short
        } else {
            self.power_long
        };
        (self.tenor_days / days).powf(power)
    }
}

/// docs/MODEL.md section 11, per underlying: every rate 0 (off) by default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AddonRates {
    pub option: f64,
    pub basis: f64,
    pub oracle_multiple: f64,
    pub liquidity: f64,
    /// Average daily volume, in units of the underlying (positive where `liquidity` is).
    pub adv: f64,
}

impl AddonRates {
    /// Whether any add-on can be nonzero on this underlying.
    #[inline]
    pub fn any(&self) -> bool {
        self.option != 0.0
            || self.basis != 0.0
            || self.oracle_multiple != 0.0
            || self.liquidity != 0.0
    }
}

/// An instrument with its marks fixed for this snapshot.
#[derive(Debug, Clone)]
pub struct Priced {
    pub instrument: Instrument,
    pub underlying: usize,
    /// Perpetual or future mark, or an option's forward.
    pub forward: f64,
    /// Options only: strike, side, implied vol and year fraction to expiry.
    pub option: Option<OptionMark>,
}

#[derive(Debug, Clone, Copy)]
pub struct OptionMark {
    pub strike: f64,
    pub side: OptionKind,
    pub vol: f64,
    pub t: f64,
    /// The factor on every scenario's vol shift for this option ([`TenorScaling::scale`]).
    pub vol_scale: f64,
}

impl OptionMark {
    /// The option's delta as the liquidity add-on counts it (docs/MODEL.md section 11):
    /// Black-76 at its own vol and the forward `forward`, `D N(d1)` for a call and `-D N(-d1)`
    /// for a put; at or past expiry 1 or 0 for a call, -1 or 0 for a put, by whether it is in
    /// the money (at the strike it is not).
    pub fn delta(&self, forward: f64, rate: f64) -> f64 {
        if self.t <= 0.0 {
            return match self.side {
                OptionKind::Call if forward > self.strike => 1.0,
                OptionKind::Put if forward < self.strike => -1.0,
                _ => 0.0,
            };
        }
        pmargin_pricing::black76_greeks(self.side, forward, self.strike, self.t, self.vol, rate)
            .delta
    }
}

impl Priced {
    /// Value of one contract when the underlying is scaled by `scale`, vols held: the option's
    /// Black-76 value, or the mark of a perpetual or future.
    #[inline]
    pub fn value_at(&self, scale: f64, rate: f64) -> f64 {
        match &self.option {
            Some(o) => black76(o.side, self.forward * scale, o.strike, o.t, o.vol, rate),
            None => self.forward * scale,
        }
    }

    /// An option's delta per contract with the underlying scaled by `scale`, vol held
    /// ([`OptionMark::delta`]); 0 for a perpetual or future.
    #[inline]
    pub fn delta_at(&self, scale: f64, rate: f64) -> f64 {
        match &self.option {
            Some(o) => o.delta(self.forward * scale, rate),
            None => 0.0,
        }
    }
}

/// A collateral asset: its price, haircut, and the underlying it moves with (none: stable).
#[derive(Debug, Clone)]
pub struct Asset {
    pub name: String,
    pub price: f64,
    pub haircut: f64,
    pub underlying: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookPosition {
    pub instrument: usize,
    pub underlying: usize,
    pub size: f64,
    /// Entry price of a perpetual or future; 0 for options, whose premium sits in balances.
    pub entry_price: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookBalance {
    pub asset: usize,
    pub amount: f64,
}

#[derive(Debug, Clone, Default)]
pub struct BookAccount {
    pub id: String,
    pub positions: Vec<BookPosition>,
    pub balances: Vec<BookBalance>,
    /// Underlyings with a nonzero position, a nonzero non-stable balance or an external
    /// position on a non-stable token ([`BookExternal::exposures`]), ascending.
    pub exposures: Vec<usize>,
    /// Positions held in other protocols (docs/MODEL.md section 12), in input order.
    pub external: Vec<BookExternal>,
}

/// A position held in another protocol, its tokens bound to the book's assets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookExternal {
    pub holding: crate::external::Holding<usize>,
    /// Index of its protocol in the parameter set's `external_protocols` (in name order).
    pub protocol: usize,
    /// The protocol's haircut.
    pub protocol_haircut: f64,
}

impl BookExternal {
    /// The underlyings it is exposed to: those of its non-stable tokens, where it counts
    /// ([`crate::external::Holding::counts_for_exposure`]).
    pub fn exposures<'a>(&self, assets: &'a [Asset]) -> impl Iterator<Item = usize> + 'a {
        let counts = self.holding.counts_for_exposure();
        let tokens = self.holding.tokens();
        tokens.filter_map(move |a| assets[a].underlying.filter(|_| counts))
    }

    /// Its value at the assets' prices.
    pub fn value(&self, assets: &[Asset]) -> f64 {
        self.holding.value(|a| assets[a].price)
    }

    /// What a value `value` of it counts for in the margin balance.
    pub fn margin_value(&self, assets: &[Asset], value: f64) -> f64 {
        let asset_haircut = match self.holding {
            crate::external::Holding::Deposit { asset, .. } => assets[asset].haircut,
            _ => 0.0,
        };
        self.holding
            .margin_value(value, self.protocol_haircut, asset_haircut)
    }

    /// Binds an input position to `book`'s assets (adding, priced from `market`, those it
    /// lacks) and the parameter set's protocols; errors name the field under `path` (the
    /// position's JSON path) that refers to something unknown.
    pub fn bind(
        position: &ExternalPosition,
        path: &str,
        file: &str,
        params: &Params,
        mut asset: impl FnMut(&str, &str) -> Result<usize>,
    ) -> Result<BookExternal> {
        let name = position.protocol();
        let (protocol, settings) = params
            .external_protocols
            .iter()
            .enumerate()
            .find_map(|(i, (n, p))| (n == name).then_some((i, p)))
            .ok_or_else(|| {
                InputError::new(
                    file,
                    format!("{path}.protocol"),
                    format!(
                        "protocol `{name}` has no entry in the parameter set's `external_protocols`"
                    ),
                )
            })?;
        // (`tokens` lists them in the order `map` visits them.)
        let mut bound = Vec::with_capacity(2);
        for (field, token) in position.tokens() {
            bound.push(asset(token, &format!("{path}.{field}"))?);
        }
        let mut next = bound.into_iter();
        Ok(BookExternal {
            holding: position.holding().map(|_| next.next().unwrap_or_default()),
            protocol,
            protocol_haircut: settings.haircut,
        })
    }
}

impl BookAccount {
    /// Where each underlying sits in this account's exposures.
    pub fn exposure_index(&self) -> ExposureIndex<'_> {
        ExposureIndex::new(&self.exposures)
    }
}

/// Where each underlying sits in a list of exposures: a table for the common case of few
/// underlyings (a lookup per position in the hot paths), a search beyond it.
pub struct ExposureIndex<'a> {
    table: [usize; EXPOSURE_TABLE],
    exposures: &'a [usize],
}

const EXPOSURE_TABLE: usize = 32;

impl<'a> ExposureIndex<'a> {
    pub fn new(exposures: &'a [usize]) -> Self {
        let mut table = [usize::MAX; EXPOSURE_TABLE];
        // (Backwards, so a repeated underlying maps to its first place, as the search does.)
        for (e, &u) in exposures.iter().enumerate().rev() {
            if u < EXPOSURE_TABLE {
                table[u] = e;
            }
        }
        ExposureIndex { table, exposures }
    }

    /// The place of underlying `u`, if it is one of the exposures.
    #[inline]
    pub fn of(&self, u: usize) -> Option<usize> {
        if u < EXPOSURE_TABLE {
            Some(self.table[u]).filter(|&e| e != usize::MAX)
        } else {
            self.exposures.iter().position(|&x| x == u)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Book {
    pub as_of: DateTime<Utc>,
    pub rate: f64,
    pub params: Params,
    pub underlyings: Vec<Underlying>,
    pub instruments: Vec<Priced>,
    pub assets: Vec<Asset>,
    pub accounts: Vec<BookAccount>,
    instrument_index: HashMap<String, usize>,
}

impl Book {
    pub fn build(portfolio: &Portfolio, market: &Market, params: &Params) -> Result<Book> {
        let mut builder = Builder {
            portfolio,
            market,
            params,
            underlyings: params
                .underlyings
                .iter()
                .map(|(name, u)| Underlying {
                    name: name.clone(),
                    spot: 0.0,
                    price_scan_range: u.price_scan_range,
                    vol_scan_up: u.vol_scan_up,
                    vol_scan_down: u.vol_scan_down,
                    standard_im_rate: u.standard_im_rate,
                    standard_mm_rate: u.standard_mm_rate,
                    tenor: TenorScaling {
                        tenor_days: u.vol_tenor_days,
                        power_short: u.vol_power_short,
                        power_long: u.vol_power_long,
                        min_days: u.vol_min_days,
                    },
                    addons: AddonRates {
                        option: u.option_contingency,
                        basis: u.basis_contingency,
                        oracle_multiple: u.oracle_confidence_multiple,
                        liquidity: u.liquidity_coefficient,
                        adv: u.adv,
                    },
                    confidence: market.confidence.get(name).copied().unwrap_or(0.0),
                })
                .collect(),
            instruments: Vec::new(),
            instrument_index: HashMap::new(),
            assets: Vec::new(),
            asset_index: HashMap::new(),
        };
        let accounts = portfolio
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| builder.account(i, a))
            .collect::<Result<Vec<_>>>()?;
        Ok(Book {
            as_of: market.as_of,
            rate: market.rate,
            params: params.clone(),
            underlyings: builder.underlyings,
            instruments: builder.instruments,
            assets: builder.assets,
            accounts,
            instrument_index: builder.instrument_index,
        })
    }

    /// A held position as portfolio input (an option's entry price lives in the balances).
    pub fn position_input(&self, p: &BookPosition) -> Position {
        let inst = &self.instruments[p.instrument].instrument;
        Position {
            instrument: inst.clone(),
            size: p.size,
            entry_price: (!inst.is_option()).then_some(p.entry_price),
        }
    }

    /// A held external position as portfolio input.
    pub fn external_input(&self, x: &BookExternal) -> ExternalPosition {
        use crate::external::Holding;
        use crate::input::portfolio::{LendingPosition, LiquidityPosition};
        let protocol = self.protocol_name(x.protocol).to_string();
        let name = |a: usize| self.assets[a].name.clone();
        match x.holding {
            Holding::Lp {
                token0,
                token1,
                liquidity,
                price_lower,
                price_upper,
            } => ExternalPosition::UniswapV3Lp(LiquidityPosition {
                protocol,
                token0: name(token0),
                token1: name(token1),
                liquidity,
                price_lower,
                price_upper,
            }),
            Holding::Deposit { asset, amount } => {
                ExternalPosition::LendingDeposit(LendingPosition {
                    protocol,
                    asset: name(asset),
                    amount,
                })
            }
            Holding::Borrow { asset, amount } => ExternalPosition::LendingBorrow(LendingPosition {
                protocol,
                asset: name(asset),
                amount,
            }),
        }
    }

    /// The name of protocol `p` ([`BookExternal::protocol`]).
    pub fn protocol_name(&self, p: usize) -> &str {
        self.params
            .external_protocols
            .keys()
            .nth(p)
            .map_or("", String::as_str)
    }

    pub fn instrument_index(&self, name: &str) -> Option<usize> {
        self.instrument_index.get(name).copied()
    }

    /// Drops the instruments from index `listed` on (a live engine's fill that added one and
    /// was then refused leaves none behind).
    pub fn forget_instruments_from(&mut self, listed: usize) {
        for p in self.instruments.drain(listed.min(self.instruments.len())..) {
            self.instrument_index.remove(&p.instrument.name);
        }
    }

    /// The index of `inst`, pricing and adding it first if the book does not hold it yet (a live
    /// engine meets new instruments as trades arrive). Its underlying must already be priced.
    pub fn ensure_instrument(&mut self, inst: &Instrument, market: &Market) -> Result<usize> {
        if let Some(i) = self.instrument_index(&inst.name) {
            return Ok(i);
        }
        let u = self.underlying_index(&inst.underlying).ok_or_else(|| {
            InputError::new(
                &self.params.source,
                key_path("underlyings", &inst.underlying),
                format!(
                    "no scan parameters for underlying {}, needed by {}",
                    inst.underlying, inst.name
                ),
            )
        })?;
        let spot = market
            .prices
            .get(&inst.underlying)
            .copied()
            .ok_or_else(|| {
                InputError::new(
                    &market.source,
                    key_path("prices", &inst.underlying),
                    format!(
                        "no price for underlying {}, needed by {}",
                        inst.underlying, inst.name
                    ),
                )
            })?;
        self.underlyings[u].spot = spot;
        let priced = price_instrument(market, inst, u, spot, &self.underlyings[u].tenor)?;
        let index = self.instruments.len();
        self.instruments.push(priced);
        self.instrument_index.insert(inst.name.clone(), index);
        Ok(index)
    }

    /// The index of collateral asset `name`, adding it (priced from `market`) if new.
    pub fn ensure_asset(&mut self, name: &str, market: &Market) -> Result<usize> {
        if let Some(a) = self.assets.iter().position(|a| a.name == name) {
            return Ok(a);
        }
        let collateral = self.params.collateral.get(name).ok_or_else(|| {
            InputError::new(
                &self.params.source,
                key_path("collateral", name),
                format!("asset {name} has no entry in the parameter set's `collateral`"),
            )
        })?;
        let underlying = collateral
            .underlying
            .as_ref()
            .and_then(|u| self.underlying_index(u));
        let price = market.prices.get(name).copied().ok_or_else(|| {
            InputError::new(
                &market.source,
                key_path("prices", name),
                format!("no price for asset {name}"),
            )
        })?;
        self.assets.push(Asset {
            name: name.to_string(),
            price,
            haircut: collateral.haircut,
            underlying,
        });
        Ok(self.assets.len() - 1)
    }

    /// Re-marks underlying `u` (spot, every instrument's forward and vol, coin collateral prices)
    /// from `market`, and moves every option's clock to `market.as_of`.
    pub fn remark_underlying(&mut self, market: &Market, u: usize) -> Result<()> {
        let name = &self.underlyings[u].name;
        let spot = market.prices.get(name).copied().ok_or_else(|| {
            InputError::new(
                &market.source,
                key_path("prices", name),
                format!("no price for underlying {name}"),
            )
        })?;
        self.underlyings[u].spot = spot;
        self.underlyings[u].confidence = market
            .confidence
            .get(&self.underlyings[u].name)
            .copied()
            .unwrap_or(0.0);
        self.as_of = market.as_of;
        self.rate = market.rate;
        let tenor = self.underlyings[u].tenor;
        // (In place: a tick re-marks every instrument of its underlying.)
        for priced in self.instruments.iter_mut().filter(|p| p.underlying == u) {
            (priced.forward, priced.option) = marks(market, &priced.instrument, spot, &tenor)?;
        }
        for asset in self.assets.iter_mut().filter(|a| a.underlying == Some(u)) {
            if let Some(p) = market.prices.get(&asset.name) {
                asset.price = *p;
            }
        }
        Ok(())
    }

    pub fn underlying_index(&self, name: &str) -> Option<usize> {
        self.underlyings.iter().position(|u| u.name == name)
    }
}

struct Builder<'a> {
    portfolio: &'a Portfolio,
    market: &'a Market,
    params: &'a Params,
    underlyings: Vec<Underlying>,
    instruments: Vec<Priced>,
    instrument_index: HashMap<String, usize>,
    assets: Vec<Asset>,
    asset_index: HashMap<String, usize>,
}

impl Builder<'_> {
    fn account(&mut self, index: usize, account: &Account) -> Result<BookAccount> {
        let mut positions = Vec::with_capacity(account.positions.len());
        let mut exposures = Vec::new();
        for p in &account.positions {
            let (instrument, underlying) = self
                .instrument(&p.instrument)
                .map_err(|e| e.with_account(&account.id))?;
            if p.size != 0.0 {
                exposures.push(underlying);
            }
            positions.push(BookPosition {
                instrument,
                underlying,
                size: p.size,
                entry_price: p.entry_price.unwrap_or(0.0),
            });
        }
        let mut balances = Vec::with_capacity(account.balances.len());
        for (name, amount) in &account.balances {
            let path = || key_path(&format!("accounts[{index}].balances"), name);
            let asset = self
                .asset(name, path)
                .map_err(|e| e.with_account(&account.id))?;
            if let Some(u) = self.assets[asset].underlying {
                if *amount != 0.0 {
                    exposures.push(u);
                }
            }
            balances.push(BookBalance {
                asset,
                amount: *amount,
            });
        }
        let mut external = Vec::with_capacity(account.external.len());
        for (j, position) in account.external.iter().enumerate() {
            let path = format!("accounts[{index}].external[{j}]");
            let file = self.portfolio.source.clone();
            let bound = BookExternal::bind(position, &path, &file, self.params, |name, path| {
                self.asset(name, || path.to_string())
            })
            .map_err(|e| e.with_account(&account.id))?;
            exposures.extend(bound.exposures(&self.assets));
            external.push(bound);
        }
        exposures.sort_unstable();
        exposures.dedup();
        Ok(BookAccount {
            id: account.id.clone(),
            positions,
            balances,
            exposures,
            external,
        })
    }

    /// Index of an underlying, pricing its spot on first use.
    fn underlying(&mut self, name: &str, needed_by: &str) -> Result<usize> {
        let params_file = if self.params.source.is_empty() {
            "parameter set"
        } else {
            self.params.source.as_str()
        };
        let u = self
            .underlyings
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| {
                InputError::new(
                    params_file,
                    key_path("underlyings", name),
                    format!("no scan parameters for underlying {name}, needed by {needed_by}"),
                )
            })?;
        if self.underlyings[u].spot == 0.0 {
            let spot = self.market.prices.get(name).copied().ok_or_else(|| {
                InputError::new(
                    &self.market.source,
                    key_path("prices", name),
                    format!("no price for underlying {name}, needed by {needed_by}"),
                )
            })?;
            self.underlyings[u].spot = spot;
        }
        Ok(u)
    }

    fn instrument(&mut self, inst: &Instrument) -> Result<(usize, usize)> {
        if let Some(&i) = self.instrument_index.get(&inst.name) {
            return Ok((i, self.instruments[i].underlying));
        }
        let u = self.underlying(&inst.underlying, &inst.name)?;
        let underlying = &self.underlyings[u];
        let priced = price_instrument(self.market, inst, u, underlying.spot, &underlying.tenor)?;
        let index = self.instruments.len();
        self.instruments.push(priced);
        self.instrument_index.insert(inst.name.clone(), index);
        Ok((index, u))
    }

    /// Index of a balance's asset, priced on first use; `path` names the field that refers to
    /// it, spelled out only for a refusal (a large book has millions of balances).
    fn asset(&mut self, name: &str, path: impl FnOnce() -> String) -> Result<usize> {
        if let Some(&a) = self.asset_index.get(name) {
            return Ok(a);
        }
        let collateral = self.params.collateral.get(name).ok_or_else(|| {
            InputError::new(
                &self.portfolio.source,
                path(),
                format!("asset {name} has no entry in the parameter set's `collateral`"),
            )
        })?;
        let underlying = match &collateral.underlying {
            Some(u) => Some(self.underlying(u, &format!("balance {name}"))?),
            None => None,
        };
        let price = self.market.prices.get(name).copied().ok_or_else(|| {
            InputError::new(
                &self.market.source,
                key_path("prices", name),
                format!("no price for balance asset {name}"),
            )
        })?;
        let index = self.assets.len();
        self.assets.push(Asset {
            name: name.to_string(),
            price,
            haircut: collateral.haircut,
            underlying,
        });
        self.asset_index.insert(name.to_string(), index);
        Ok(index)
    }
}

/// Marks one instrument: its forward (or perpetual mark) and, for an option, vol and time.
fn price_instrument(
    market: &Market,
    inst: &Instrument,
    u: usize,
    spot: f64,
    tenor: &TenorScaling,
) -> Result<Priced> {
    let (forward, option) = marks(market, inst, spot, tenor)?;
    Ok(Priced {
        instrument: inst.clone(),
        underlying: u,
        forward,
        option,
    })
}

/// An instrument's mark (perpetual or future) or forward (option), and an option's terms,
/// with its underlying at `spot` (`tenor`: its underlying's vol shift scaling).
fn marks(
    market: &Market,
    inst: &Instrument,
    spot: f64,
    tenor: &TenorScaling,
) -> Result<(f64, Option<OptionMark>)> {
    Ok(match (inst.kind, inst.expiry) {
        (Kind::Option { strike, side }, Some(expiry)) => {
            let forward = market.forward(&inst.underlying, expiry, spot);
            let vol = market.option_vol(inst, strike, forward).ok_or_else(|| {
                InputError::new(
                    &market.source,
                    key_path("vols", &inst.underlying),
                    format!(
                        "no implied vol for option {} (give vols.{}.default, a smile for its expiry, or ivs)",
                        inst.name, inst.underlying
                    ),
                )
            })?;
            let t = year_fraction(market.as_of, crate::instrument::expiry_instant(expiry));
            (
                forward,
                Some(OptionMark {
                    strike,
                    side,
                    vol,
                    t,
                    vol_scale: tenor.scale(t),
                }),
            )
        }
        (Kind::Future, Some(expiry)) => (market.forward(&inst.underlying, expiry, spot), None),
        _ => (
            market
                .perpetual_marks
                .get(&inst.underlying)
                .copied()
                .unwrap_or(spot),
            None,
        ),
    })
}
