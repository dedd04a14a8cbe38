//! The margin report (docs/FORMATS.md): one entry per account, in the portfolio's order.

use crate::account::{AddonBreakdown, Evaluator, Requirement, Status};
use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount};
use crate::error::{InputError, Result};
use crate::external_risk::ExternalReport;
use crate::fhs::FhsScenarios;
use crate::greeks::PortfolioGreeks;
use crate::input::history::History;
use crate::input::market::Market;
use crate::input::params::Params;
use crate::input::portfolio::Portfolio;
use crate::liquidation::{Ladder, LiquidationPrice, Searcher};
use crate::standard::{standard_margin, StandardMargin};
use chrono::SecondsFormat;
use pmargin_pricing::{black76_greeks, Greeks};
use rayon::prelude::*;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarginReport {
    pub as_of: String,
    pub params_version: u64,
    pub accounts: Vec<AccountReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountReport {
    pub id: String,
    pub equity: f64,
    pub margin_balance: f64,
    pub initial_margin: f64,
    pub maintenance_margin: f64,
    pub status: Status,
    pub grid_risk: f64,
    pub statistical_risk: f64,
    pub short_option_minimum: f64,
    pub addons: f64,
    /// `addons` by kind (docs/MODEL.md section 11).
    pub addon_breakdown: AddonBreakdown,
    pub scanning_risk: BTreeMap<String, f64>,
    pub worst_scenario: Option<String>,
    pub var: f64,
    pub es: f64,
    pub standard_initial_margin: f64,
    pub standard_maintenance_margin: f64,
    pub capital_efficiency: Option<f64>,
    pub liquidation_prices: BTreeMap<String, LiquidationPrice>,
    /// Not in docs/FORMATS.md version 1: portfolio greeks per underlying (see `greeks`).
    pub greeks: BTreeMap<String, PortfolioGreeks>,
    /// The account's positions in other protocols (docs/MODEL.md section 12), each with its
    /// token amounts and value today; left out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<ExternalReport>,
}

/// What to compute beyond the requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOptions {
    /// The liquidation-price search is by far the costliest part; a caller that only needs
    /// requirements can skip it.
    pub liquidation_prices: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            liquidation_prices: true,
        }
    }
}

/// The whole pipeline: bind the portfolio to the market, compute risk arrays once, then
/// evaluate every account (in parallel; the report keeps the portfolio's order).
pub fn margin_report(
    portfolio: &Portfolio,
    market: &Market,
    params: &Params,
    history: Option<&History>,
    options: ReportOptions,
) -> Result<MarginReport> {
    let run = BatchRun::new(portfolio, market, params, history)?;
    let evaluator = run.evaluator();
    let accounts = (0..run.book.accounts.len())
        .into_par_iter()
        .map_init(
            || run.searcher(&evaluator),
            |searcher, i| {
                let entry = run.entry(&evaluator, searcher, i, options)?;
                run.check_entry(&entry)?;
                Ok(entry.report())
            },
        )
        .collect::<Result<Vec<_>>>()?;
    Ok(MarginReport {
        as_of: run.as_of,
        params_version: run.params_version,
        accounts,
    })
}

/// A margin run over a whole book, for reports too large to hold: bound, with its risk arrays
/// and the liquidation-price ladder computed once, then checked and written account by
/// account ([`BatchRun::check`], [`BatchRun::write_json`]).
pub struct BatchRun {
    pub book: Book,
    pub arrays: RiskArrays,
    ladder: Option<Ladder>,
    /// Today's greeks of each option instrument (the same for every account holding it).
    greeks: Vec<Option<Greeks>>,
    /// Each underlying's rank by name: the reports' maps are ordered by name.
    rank: Vec<usize>,
    as_of: String,
    params_version: u64,
    source: String,
    history_source: Option<String>,
    /// Every account's figures (in the book's order) once [`BatchRun::check`] has computed
    /// them: the report writes them rather than computing each requirement a second time.
    checked: OnceLock<Vec<Figures>>,
}

/// Accounts computed together before they are written: enough to keep both cores busy,
/// few enough that the report never piles up in memory.
const CHUNK: usize = 2048;

impl BatchRun {
    pub fn new(
        portfolio: &Portfolio,
        market: &Market,
        params: &Params,
        history: Option<&History>,
    ) -> Result<BatchRun> {
        let book = Book::build(portfolio, market, params)?;
        let scenarios = history
            .map(|h| match params.statistical.model {
                crate::input::params::StatisticalModel::Fhs => {
                    FhsScenarios::build(h, &params.statistical)
                }
                // Monte Carlo paths are joint moves like historical days: same arrays, same tail.
                crate::input::params::StatisticalModel::Mc => {
                    crate::montecarlo::mc_scenarios(h, &params.statistical).map(|(s, _)| s)
                }
            })
            .transpose()?;
        let arrays = RiskArrays::compute(&book, scenarios.as_ref())?;
        let greeks = book
            .instruments
            .iter()
            .map(|inst| {
                inst.option
                    .as_ref()
                    .map(|o| black76_greeks(o.side, inst.forward, o.strike, o.t, o.vol, book.rate))
            })
            .collect();
        let mut by_name: Vec<usize> = (0..book.underlyings.len()).collect();
        by_name.sort_by(|&a, &b| book.underlyings[a].name.cmp(&book.underlyings[b].name));
        let mut rank = vec![0; by_name.len()];
        for (r, &u) in by_name.iter().enumerate() {
            rank[u] = r;
        }
        Ok(BatchRun {
            ladder: Ladder::worth_it(&book, &arrays),
            book,
            arrays,
            greeks,
            rank,
            as_of: market.as_of.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            params_version: params.version,
            source: portfolio.source.clone(),
            history_source: history.map(|h| h.source.clone()),
            checked: OnceLock::new(),
        })
    }

    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator::new(&self.book, &self.arrays)
    }

    fn searcher<'e>(&'e self, evaluator: &'e Evaluator<'e>) -> Searcher<'e, 'e> {
        Searcher::new(evaluator, self.ladder.as_ref(), true)
    }

    /// Everything that can refuse the run, checked before a byte is written (so a refused run
    /// prints nothing): every account's requirement, standard margin and greeks are computed
    /// and must be finite. The liquidation prices are not searched here: they cannot fail, and
    /// a price that is not found is `null` by design.
    /// The figures are kept for [`BatchRun::write_json`].
    pub fn check(&self) -> Result<()> {
        if self.checked.get().is_some() {
            return Ok(());
        }
        let evaluator = self.evaluator();
        let figures = (0..self.book.accounts.len())
            .into_par_iter()
            .with_min_len(256)
            .map(|i| {
                let account = &self.book.accounts[i];
                let figures = self.figures(&evaluator, account)?;
                self.check_entry(&AccountEntry {
                    run: self,
                    account,
                    figures: Cow::Borrowed(&figures),
                    liquidation: Vec::new(),
                })?;
                Ok(figures)
            })
            .collect::<Result<Vec<_>>>()?;
        // (Only a concurrent check can have set them since: the same figures.)
        let _ = self.checked.set(figures);
        Ok(())
    }

    /// Account `i`'s entry: its figures as checked when they were, and its liquidation prices
    /// when asked for.
    fn entry<'r>(
        &'r self,
        evaluator: &Evaluator<'_>,
        searcher: &mut Searcher<'_, '_>,
        i: usize,
        options: ReportOptions,
    ) -> Result<AccountEntry<'r>> {
        let account = &self.book.accounts[i];
        let figures = match self.checked.get() {
            Some(checked) => Cow::Borrowed(&checked[i]),
            None => Cow::Owned(self.figures(evaluator, account)?),
        };
        let mut liquidation = Vec::new();
        if options.liquidation_prices {
            searcher.prices(account, figures.req.below_maintenance(), &mut liquidation);
        }
        Ok(AccountEntry {
            run: self,
            account,
            figures,
            liquidation,
        })
    }

    /// An account's figures but its liquidation prices.
    fn figures(&self, evaluator: &Evaluator<'_>, account: &BookAccount) -> Result<Figures> {
        let book = &self.book;
        let req = evaluator.requirement(account).map_err(|mut e| {
            if let Some(h) = &self.history_source {
                e.file = h.clone();
            }
            e
        })?;
        let names: Vec<&str> = book.underlyings.iter().map(|u| u.name.as_str()).collect();
        let worst = req.grid.worst.map(|s| s.label(&self.arrays.shape, &names));
        Ok(Figures {
            standard: standard_margin(book, account),
            greeks: self.greeks_of(account),
            worst,
            req,
        })
    }

    /// [`crate::greeks::portfolio_greeks`] from the options' greeks computed once: the same
    /// sums in the same order, so the same figures, bit for bit. In exposure order.
    fn greeks_of(&self, account: &BookAccount) -> Vec<PortfolioGreeks> {
        let book = &self.book;
        let mut out = vec![PortfolioGreeks::default(); account.exposures.len()];
        let at = |u: usize| account.exposures.iter().position(|&v| v == u);
        for p in &account.positions {
            let Some(e) = at(p.underlying) else {
                continue;
            };
            let g = &mut out[e];
            let inst = &book.instruments[p.instrument];
            let spot = book.underlyings[p.underlying].spot;
            g.add_position(
                p.size,
                inst.forward / spot,
                self.greeks[p.instrument].as_ref(),
            );
        }
        for b in &account.balances {
            let asset = &book.assets[b.asset];
            if let Some((u, e)) = asset.underlying.and_then(|u| Some((u, at(u)?))) {
                out[e].delta += b.amount * asset.price / book.underlyings[u].spot;
            }
        }
        out
    }

    /// No NaN or infinity may reach a report: refuse the run instead, naming the account and
    /// the first such figure (by field name, as the report's keys sort). Only the fields that
    /// may be `null` by design (`capital_efficiency`, `worst_scenario`, the liquidation
    /// prices) may be missing.
    fn check_entry(&self, entry: &AccountEntry<'_>) -> Result<()> {
        let r = &entry.figures.req;
        let names = |u: usize| self.book.underlyings[u].name.as_str();
        let b = &r.addon_breakdown;
        let mut bad: Option<String> = None;
        let mut field = |path: &dyn Fn() -> String, value: f64| {
            if bad.is_none() && !value.is_finite() {
                bad = Some(path());
            }
        };
        for (name, v) in [
            ("basis", b.basis),
            ("liquidity", b.liquidity),
            ("option", b.option),
            ("oracle", b.oracle),
        ] {
            field(&|| format!(".addon_breakdown.{name}"), v);
        }
        field(&|| ".addons".into(), r.addons);
        field(&|| ".equity".into(), r.equity);
        field(&|| ".es".into(), r.es);
        for (u, g) in entry.by_name(&entry.figures.greeks) {
            for (name, v) in [
                ("delta", g.delta),
                ("gamma", g.gamma),
                ("theta", g.theta),
                ("vega", g.vega),
            ] {
                field(&|| format!(".greeks.{}.{name}", names(u)), v);
            }
        }
        field(&|| ".grid_risk".into(), r.grid.grid_risk);
        field(&|| ".initial_margin".into(), r.initial_margin);
        field(&|| ".maintenance_margin".into(), r.maintenance_margin);
        field(&|| ".margin_balance".into(), r.margin_balance);
        for (u, v) in entry.by_name(&r.grid.scanning_risk) {
            field(&|| format!(".scanning_risk.{}", names(u)), *v);
        }
        field(&|| ".short_option_minimum".into(), r.short_option_minimum);
        field(
            &|| ".standard_initial_margin".into(),
            entry.figures.standard.initial,
        );
        field(
            &|| ".standard_maintenance_margin".into(),
            entry.figures.standard.maintenance,
        );
        field(&|| ".statistical_risk".into(), r.statistical_risk);
        field(&|| ".var".into(), r.var);
        match bad {
            Some(path) => Err(InputError::new(
                &self.source,
                path,
                "the computation produced a non-finite number; check the inputs",
            )
            .with_account(&entry.account.id)),
            None => Ok(()),
        }
    }

    /// Writes the JSON report (docs/FORMATS.md; byte for byte `serde_json::to_string_pretty`
    /// of [`margin_report`]'s, and a newline) to `out`, computing the accounts a chunk at a
    /// time on rayon's pool while the chunk before is written. Call [`BatchRun::check`] first:
    /// what it refuses is written here as `null`.
    pub fn write_json(&self, out: impl Write, options: ReportOptions) -> std::io::Result<()> {
        let mut serializer = serde_json::Serializer::pretty(out);
        let report = StreamedReport { run: self, options };
        report.serialize(&mut serializer)?;
        let mut out = serializer.into_inner();
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// The report's outer object, its accounts computed as they are written.
struct StreamedReport<'r> {
    run: &'r BatchRun,
    options: ReportOptions,
}

impl Serialize for StreamedReport<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut report = serializer.serialize_struct("MarginReport", 3)?;
        report.serialize_field("as_of", &self.run.as_of)?;
        report.serialize_field("params_version", &self.run.params_version)?;
        report.serialize_field("accounts", &StreamedAccounts(self))?;
        report.end()
    }
}

struct StreamedAccounts<'s, 'r>(&'s StreamedReport<'r>);

impl Serialize for StreamedAccounts<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let (run, options) = (self.0.run, self.0.options);
        let n = run.book.accounts.len();
        let mut seq = serializer.serialize_seq(Some(n))?;
        let evaluator = run.evaluator();
        std::thread::scope(|scope| {
            // One chunk computed ahead while this thread writes the one before.
            let (send, receive) = std::sync::mpsc::sync_channel::<Result<Vec<AccountEntry>>>(1);
            let evaluator = &evaluator;
            scope.spawn(move || {
                if let (true, Some(ladder)) = (options.liquidation_prices, &run.ladder) {
                    ladder.fill(evaluator);
                }
                for from in (0..n).step_by(CHUNK) {
                    let chunk = (from..(from + CHUNK).min(n))
                        .into_par_iter()
                        .map_init(
                            || run.searcher(evaluator),
                            |searcher, i| run.entry(evaluator, searcher, i, options),
                        )
                        .collect::<Result<Vec<_>>>();
                    if send.send(chunk).is_err() {
                        // The writer stopped (a write failed): stop computing.
                        return;
                    }
                }
            });
            for chunk in receive {
                for entry in chunk.map_err(S::Error::custom)? {
                    seq.serialize_element(&entry)?;
                }
            }
            Ok(())
        })?;
        seq.end()
    }
}

/// One account's figures, as the report gives them.
struct AccountEntry<'r> {
    run: &'r BatchRun,
    account: &'r BookAccount,
    figures: Cow<'r, Figures>,
    /// In exposure order (empty when not searched).
    liquidation: Vec<LiquidationPrice>,
}

/// An account's figures but its liquidation prices.
#[derive(Clone)]
struct Figures {
    req: Requirement,
    standard: StandardMargin,
    worst: Option<String>,
    /// In exposure order.
    greeks: Vec<PortfolioGreeks>,
}

impl AccountEntry<'_> {
    /// `(underlying, value)` of a list in exposure order, in name order.
    fn by_name<'v, V>(&self, values: &'v [V]) -> Vec<(usize, &'v V)> {
        let mut pairs: Vec<(usize, &V)> =
            self.account.exposures.iter().copied().zip(values).collect();
        pairs.sort_by_key(|&(u, _)| self.run.rank[u]);
        pairs
    }

    /// A list in exposure order as the report's map by underlying name.
    fn named<V: Copy>(&self, values: &[V]) -> BTreeMap<String, V> {
        let name = |u: usize| self.run.book.underlyings[u].name.clone();
        self.by_name(values)
            .into_iter()
            .map(|(u, v)| (name(u), *v))
            .collect()
    }

    fn external(&self) -> Vec<ExternalReport> {
        let book = &self.run.book;
        self.account
            .external
            .iter()
            .map(|x| ExternalReport::of(book, x))
            .collect()
    }

    fn capital_efficiency(&self) -> Option<f64> {
        let Figures { req, standard, .. } = &*self.figures;
        (req.initial_margin > 0.0).then(|| standard.initial / req.initial_margin)
    }

    fn report(&self) -> AccountReport {
        let Figures {
            req,
            standard,
            worst,
            greeks,
        } = &*self.figures;
        AccountReport {
            id: self.account.id.clone(),
            equity: req.equity,
            margin_balance: req.margin_balance,
            initial_margin: req.initial_margin,
            maintenance_margin: req.maintenance_margin,
            status: req.status,
            grid_risk: req.grid.grid_risk,
            statistical_risk: req.statistical_risk,
            short_option_minimum: req.short_option_minimum,
            addons: req.addons,
            addon_breakdown: req.addon_breakdown,
            scanning_risk: self.named(&req.grid.scanning_risk),
            worst_scenario: worst.clone(),
            var: req.var,
            es: req.es,
            standard_initial_margin: standard.initial,
            standard_maintenance_margin: standard.maintenance,
            capital_efficiency: self.capital_efficiency(),
            liquidation_prices: self.named(&self.liquidation),
            greeks: self.named(greeks),
            external: self.external(),
        }
    }
}

/// A map ordered by underlying name, written as a `BTreeMap<String, V>` is.
struct ByName<'a, V>(&'a BatchRun, Vec<(usize, &'a V)>);

impl<V: Serialize> Serialize for ByName<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.1.len()))?;
        for (u, v) in &self.1 {
            map.serialize_entry(&self.0.book.underlyings[*u].name, v)?;
        }
        map.end()
    }
}

/// Field for field what [`AccountReport`]'s derived `Serialize` writes.
impl Serialize for AccountEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let Figures {
            req,
            standard,
            worst,
            greeks,
        } = &*self.figures;
        let mut s = serializer.serialize_struct("AccountReport", 20)?;
        s.serialize_field("id", &self.account.id)?;
        s.serialize_field("equity", &req.equity)?;
        s.serialize_field("margin_balance", &req.margin_balance)?;
        s.serialize_field("initial_margin", &req.initial_margin)?;
        s.serialize_field("maintenance_margin", &req.maintenance_margin)?;
        s.serialize_field("status", &req.status)?;
        s.serialize_field("grid_risk", &req.grid.grid_risk)?;
        s.serialize_field("statistical_risk", &req.statistical_risk)?;
        s.serialize_field("short_option_minimum", &req.short_option_minimum)?;
        s.serialize_field("addons", &req.addons)?;
        s.serialize_field("addon_breakdown", &req.addon_breakdown)?;
        s.serialize_field(
            "scanning_risk",
            &ByName(self.run, self.by_name(&req.grid.scanning_risk)),
        )?;
        s.serialize_field("worst_scenario", worst)?;
        s.serialize_field("var", &req.var)?;
        s.serialize_field("es", &req.es)?;
        s.serialize_field("standard_initial_margin", &standard.initial)?;
        s.serialize_field("standard_maintenance_margin", &standard.maintenance)?;
        s.serialize_field("capital_efficiency", &self.capital_efficiency())?;
        s.serialize_field(
            "liquidation_prices",
            &ByName(self.run, self.by_name(&self.liquidation)),
        )?;
        s.serialize_field("greeks", &ByName(self.run, self.by_name(greeks)))?;
        if self.account.external.is_empty() {
            s.skip_field("external")?;
        } else {
            s.serialize_field("external", &self.external())?;
        }
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    /// The synthetic book (version 1 or 2) as inputs, with a coin balance on some accounts.
    fn inputs(v2: bool, accounts: usize) -> (Portfolio, Market, Params) {
        let (market, params) = if v2 {
            synthetic::market_and_params_v2().unwrap()
        } else {
            synthetic::market_and_params().unwrap()
        };
        let book = if v2 {
            synthetic::book_v2(accounts, 5).unwrap()
        } else {
            synthetic::book(accounts, 5).unwrap()
        };
        let mut portfolio = synthetic::portfolio(&book, |_, _| 1.0, |_, _| true, 1e5);
        for (i, a) in portfolio.accounts.iter_mut().enumerate().step_by(3) {
            a.balances.insert("ETH".into(), 0.5 + i as f64 * 0.01);
        }
        (portfolio, market, params)
    }

    #[test]
    fn the_streamed_report_is_the_whole_report_byte_for_byte() {
        // Written account by account in chunks (more than one), the report is exactly
        // `to_string_pretty` of the report held whole, with and without liquidation prices.
        for v2 in [false, true] {
            let (portfolio, market, params) = inputs(v2, CHUNK + 300);
            for options in [
                ReportOptions::default(),
                ReportOptions {
                    liquidation_prices: false,
                },
            ] {
                let whole = margin_report(&portfolio, &market, &params, None, options).unwrap();
                let expected = serde_json::to_string_pretty(&whole).unwrap() + "\n";
                let run = BatchRun::new(&portfolio, &market, &params, None).unwrap();
                run.check().unwrap();
                let mut streamed = Vec::new();
                run.write_json(&mut streamed, options).unwrap();
                assert_eq!(String::from_utf8(streamed).unwrap(), expected);
                let found = whole
                    .accounts
                    .iter()
                    .flat_map(|a| a.liquidation_prices.values())
                    .filter(|p| p.down.is_some())
                    .count();
                assert_eq!(found > 100, options.liquidation_prices, "{found}");
            }
        }
    }

    #[test]
    fn greeks_from_the_shared_table_are_the_portfolio_greeks_bit_for_bit() {
        let (portfolio, market, params) = inputs(true, 200);
        let run = BatchRun::new(&portfolio, &market, &params, None).unwrap();
        let mut compared = 0;
        for account in &run.book.accounts {
            let expected = crate::greeks::portfolio_greeks(&run.book, account);
            let entry = AccountEntry {
                run: &run,
                account,
                figures: Cow::Owned(Figures {
                    req: run.evaluator().requirement(account).unwrap(),
                    standard: standard_margin(&run.book, account),
                    worst: None,
                    greeks: run.greeks_of(account),
                }),
                liquidation: Vec::new(),
            };
            let got: BTreeMap<String, [u64; 4]> = entry
                .by_name(&entry.figures.greeks)
                .into_iter()
                .map(|(u, g)| {
                    let bits = [g.delta, g.gamma, g.vega, g.theta].map(f64::to_bits);
                    (run.book.underlyings[u].name.clone(), bits)
                })
                .collect();
            let want: BTreeMap<String, [u64; 4]> = expected
                .into_iter()
                .map(|(n, g)| (n, [g.delta, g.gamma, g.vega, g.theta].map(f64::to_bits)))
                .collect();
            assert_eq!(got, want, "account {}", account.id);
            compared += got.len();
        }
        assert!(compared > 500, "{compared}");
    }

    #[test]
    fn a_non_finite_figure_refuses_the_run_naming_account_and_field() {
        // An absurd position size overflows the equity: the check refuses the run, before
        // anything is written, naming the account and the first bad field by name order.
        let (mut portfolio, market, params) = inputs(false, 20);
        for p in &mut portfolio.accounts[7].positions {
            p.size = 1e308;
        }
        let run = BatchRun::new(&portfolio, &market, &params, None).unwrap();
        let err = run.check().unwrap_err();
        assert_eq!(
            err.account.as_deref(),
            Some(portfolio.accounts[7].id.as_str())
        );
        assert!(err.path.starts_with('.'), "{err}");
        assert!(err.to_string().contains("non-finite"), "{err}");
        assert!(
            margin_report(&portfolio, &market, &params, None, ReportOptions::default()).is_err()
        );
    }
}
