//! The backtest: for each row `t`, every portfolio's requirement from data up to `t` only,
//! against the loss it made from `t` to `t + h`.
//!
//! No look-ahead, by construction: row `t`'s requirement is computed from row `t`'s market
//! snapshot (its closes and the vol rule on returns up to `t`) and, for the statistical models,
//! from the history truncated to rows `0..=t`. The test `no_look_ahead` corrupts every later
//! row and checks that nothing changes.

pub use crate::config::{BacktestConfig, Model};
use crate::daymarket::DayMarkets;
use crate::portfolios::BacktestPortfolio;
use crate::report::{self, BacktestReport, Observation};
use crate::{err, Result};
use pmargin_core::book::{Book, BookAccount};
use pmargin_core::input::portfolio::Portfolio;
use pmargin_core::{margin_report, Evaluator, History, Params, ReportOptions, RiskArrays};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Everything fixed for a run: the parameter set of each model, marks of every row.
pub struct Setup<'a> {
    pub history: &'a History,
    pub params: Params,
    pub markets: DayMarkets,
    pub portfolios: &'a [BacktestPortfolio],
    pub horizon: usize,
}

impl<'a> Setup<'a> {
    pub fn new(
        history: &'a History,
        params: &Params,
        portfolios: &'a [BacktestPortfolio],
        config: &BacktestConfig,
    ) -> Result<Setup<'a>> {
        let mut params = params.clone();
        if let Some(h) = config.horizon_days {
            if h == 0 {
                return err("--horizon: must be at least 1 day");
            }
            params.statistical.horizon_days = h;
        }
        let horizon = params.statistical.horizon_days as usize;
        for p in portfolios {
            for u in p.underlyings() {
                if history.column(&u).is_none() {
                    return err(format!(
                        "{}: no column for {u}, needed by portfolio {}",
                        history.source, p.id
                    ));
                }
            }
        }
        Ok(Setup {
            history,
            markets: DayMarkets::new(
                history,
                &params,
                config.vol_floor,
                config.implied_vols.as_ref(),
            )?,
            params,
            portfolios,
            horizon,
        })
    }

    fn portfolio_on(&self, t: usize) -> Portfolio {
        let spots = self.markets.spots(t);
        let date = self.markets.dates[t];
        Portfolio {
            source: "backtest portfolios".to_string(),
            accounts: self
                .portfolios
                .iter()
                .map(|p| p.account_on(date, &spots))
                .collect(),
        }
    }
}

/// The parameter set of a model: `statistical.model` set through the public schema, so that a
/// core without that field reports "not available" instead of failing to build.
pub fn params_for(params: &Params, model: Model) -> Result<Params> {
    let name = match model {
        Model::Grid => return Ok(params.clone()),
        Model::Fhs => "fhs",
        Model::Mc => "mc",
    };
    let mut value = serde_json::to_value(params).map_err(|e| crate::Error(e.to_string()))?;
    let has_field = value["statistical"].get("model").is_some();
    if !has_field {
        return match model {
            Model::Fhs => Ok(params.clone()),
            _ => err(format!(
                "model {name} is not available: this build's parameter schema has no statistical.model"
            )),
        };
    }
    value["statistical"]["model"] = serde_json::Value::String(name.to_string());
    let mut out = Params::parse(&params.source, &value.to_string())
        .map_err(|e| crate::Error(format!("model {name} is not available: {e}")))?;
    out.source = params.source.clone();
    Ok(out)
}

/// Equity of an account in a book (docs/MODEL.md section 2): balances at price, perpetuals and
/// futures at `size * (mark - entry)`, options at their value (intrinsic at or past expiry).
pub fn account_value(book: &Book, account: &BookAccount) -> f64 {
    let positions: f64 = account
        .positions
        .iter()
        .map(|p| {
            let inst = &book.instruments[p.instrument];
            p.size * (inst.value_at(1.0, book.rate) - p.entry_price)
        })
        .sum();
    let balances: f64 = account
        .balances
        .iter()
        .map(|b| b.amount * book.assets[b.asset].price)
        .sum();
    positions + balances
}

/// Requirements of every portfolio on row `t` under `model`, from rows `0..=t` only.
/// `params` must be [`params_for`] the model.
fn requirements_on(setup: &Setup, params: &Params, model: Model, t: usize) -> Result<Vec<f64>> {
    let portfolio = setup.portfolio_on(t);
    let market = setup.markets.market(t);
    match model {
        Model::Grid => {
            let book = Book::build(&portfolio, &market, params)?;
            let arrays = RiskArrays::compute(&book, None)?;
            let evaluator = Evaluator::new(&book, &arrays);
            book.accounts
                .iter()
                .map(|a| Ok(evaluator.requirement(a)?.initial_margin))
                .collect()
        }
        Model::Fhs | Model::Mc => {
            let past = setup.history.truncated(t + 1);
            let report = margin_report(
                &portfolio,
                &market,
                params,
                Some(&past),
                ReportOptions {
                    liquidation_prices: false,
                },
            )?;
            Ok(report.accounts.iter().map(|a| a.initial_margin).collect())
        }
    }
}

/// Losses `equity_t - equity_{t+h}` of every portfolio held from row `t`.
fn losses_on(setup: &Setup, t: usize) -> Result<Vec<f64>> {
    let portfolio = setup.portfolio_on(t);
    let now = Book::build(&portfolio, &setup.markets.market(t), &setup.params)?;
    let later = Book::build(
        &portfolio,
        &setup.markets.market(t + setup.horizon),
        &setup.params,
    )?;
    Ok(now
        .accounts
        .iter()
        .zip(&later.accounts)
        .map(|(a, b)| account_value(&now, a) - account_value(&later, b))
        .collect())
}

/// Requirements of every portfolio on row `t` (0-based) of `history` under `model`: the public
/// face of the no-look-ahead guarantee.
pub fn requirements_at(
    history: &History,
    params: &Params,
    portfolios: &[BacktestPortfolio],
    config: &BacktestConfig,
    model: Model,
    t: usize,
) -> Result<Vec<f64>> {
    if t >= history.dates.len() {
        return err(format!("{}: no row {t}", history.source));
    }
    let setup = Setup::new(history, params, portfolios, config)?;
    let params = params_for(&setup.params, model)?;
    requirements_on(&setup, &params, model, t)
}

/// The rows whose requirement is tested.
pub fn observation_rows(
    history: &History,
    config: &BacktestConfig,
    horizon: usize,
) -> Result<Vec<usize>> {
    let n = history.dates.len();
    let rows: Vec<usize> = (config.warmup_returns..n.saturating_sub(horizon))
        .filter(|&t| config.from.is_none_or(|d| history.dates[t] >= d))
        .filter(|&t| config.to.is_none_or(|d| history.dates[t] <= d))
        .collect();
    if rows.is_empty() {
        return err(format!(
            "{}: no day to backtest: {} rows, {} returns of warm-up, horizon {} day(s){}",
            history.source,
            n,
            config.warmup_returns,
            horizon,
            match (config.from, config.to) {
                (None, None) => String::new(),
                (f, t) => format!(
                    ", dates {} .. {}",
                    f.map_or("start".into(), |d| d.to_string()),
                    t.map_or("end".into(), |d| d.to_string())
                ),
            }
        ));
    }
    Ok(rows)
}

/// Runs the backtest. `progress(done, total)` is called after each (row, model) is done, from
/// any thread.
pub fn run_backtest(
    history: &History,
    params: &Params,
    portfolios: &[BacktestPortfolio],
    config: &BacktestConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BacktestReport> {
    if portfolios.is_empty() {
        return err("no portfolio to backtest");
    }
    if config.models.is_empty() {
        return err("no model to backtest");
    }
    let setup = Setup::new(history, params, portfolios, config)?;
    let rows = observation_rows(history, config, setup.horizon)?;
    let model_params = config
        .models
        .iter()
        .map(|&m| params_for(&setup.params, m))
        .collect::<Result<Vec<_>>>()?;
    let total = rows.len() * (config.models.len() + 1);
    let done = AtomicUsize::new(0);
    let tick = || progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);

    let losses: Vec<Vec<f64>> = rows
        .par_iter()
        .map(|&t| {
            let l = losses_on(&setup, t);
            tick();
            l
        })
        .collect::<Result<_>>()?;
    let mut per_model = Vec::with_capacity(config.models.len());
    for (&model, mp) in config.models.iter().zip(&model_params) {
        let reqs: Vec<Vec<f64>> = rows
            .par_iter()
            .map(|&t| {
                let r = requirements_on(&setup, mp, model, t);
                tick();
                r
            })
            .collect::<Result<_>>()?;
        per_model.push((model, reqs));
    }

    // Series per portfolio and model.
    let mut series = Vec::with_capacity(portfolios.len());
    for (i, p) in portfolios.iter().enumerate() {
        let models = per_model
            .iter()
            .map(|(model, reqs)| {
                let obs = rows
                    .iter()
                    .enumerate()
                    .map(|(k, &t)| Observation {
                        date: history.dates[t],
                        requirement: reqs[k][i],
                        loss: losses[k][i],
                    })
                    .collect::<Vec<_>>();
                (*model, obs)
            })
            .collect::<Vec<_>>();
        series.push((p, models));
    }
    report::build(
        history,
        &setup.params,
        setup.horizon,
        config,
        &setup.markets.implied_rows,
        series,
    )
}

/// Runs the backtest of each portfolio on the first of `histories` that has all its
/// underlyings (so BTC alone runs on a longer history than a BTC/ETH pair), and merges the
/// reports: portfolios in the given order, each with its own history and dates.
pub fn run_backtest_on(
    histories: &[History],
    params: &Params,
    portfolios: &[BacktestPortfolio],
    config: &BacktestConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BacktestReport> {
    if histories.is_empty() {
        return err("no history to backtest on");
    }
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); histories.len()];
    for (i, p) in portfolios.iter().enumerate() {
        let needs = p.underlyings();
        match histories
            .iter()
            .position(|h| needs.iter().all(|u| h.column(u).is_some()))
        {
            Some(g) => groups[g].push(i),
            None => {
                return err(format!(
                    "no history has every underlying of portfolio {} ({}): {}",
                    p.id,
                    needs.join(", "),
                    histories
                        .iter()
                        .map(|h| h.source.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    let horizon = config
        .horizon_days
        .unwrap_or(params.statistical.horizon_days) as usize;
    // Totals of every group up front, so that progress counts over the whole run.
    let mut offsets = Vec::with_capacity(histories.len());
    let mut total = 0;
    for (h, g) in histories.iter().zip(&groups) {
        offsets.push(total);
        if !g.is_empty() {
            total += observation_rows(h, config, horizon)?.len() * (config.models.len() + 1);
        }
    }
    let mut reports = Vec::new();
    for ((h, g), offset) in histories.iter().zip(&groups).zip(offsets) {
        if g.is_empty() {
            continue;
        }
        let list: Vec<BacktestPortfolio> = g.iter().map(|&i| portfolios[i].clone()).collect();
        let r = run_backtest(h, params, &list, config, &|done, _| {
            progress(offset + done, total)
        })?;
        reports.push((g.clone(), r));
    }
    Ok(report::merge(reports, portfolios.len()))
}
