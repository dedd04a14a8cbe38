//! The heavy reads of one account: its margin report (with the liquidation-price search),
//! kept serialized in the report cache until an event affecting the account is applied; its
//! scenario table; and what-ifs, kept until the account changes. Computed on the heavy pool,
//! from durable figures only.

use crate::error::ServiceError;
use crate::service::cache::{CachedReport, Lookup, ReportEntry, WhatIfKey};
use crate::service::state::AppState;
use bytes::Bytes;
use pmargin_core::report::{margin_report, ReportOptions};
use pmargin_core::whatif::{what_if as core_what_if, Trade};
use pmargin_core::{Book, Evaluator, Market, Params, Portfolio, RiskArrays};
use pmargin_engine::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::OnceCell;

type Shared = Arc<AppState>;

fn no_account(id: &str) -> ServiceError {
    ServiceError::not_found(format!("no account `{id}`"))
}

/// One account of the engine as a portfolio of its own, with the market and parameters.
pub fn account_inputs(engine: &Engine, id: &str) -> Option<(Portfolio, Market, Params)> {
    let account = engine.account(id)?;
    let portfolio = Portfolio {
        source: "engine state".into(),
        accounts: vec![account],
    };
    Some((portfolio, engine.market().clone(), engine.params().clone()))
}

/// The body of `GET /v1/accounts/{id}`: the engine's own figures, read fresh, and the full
/// report, kept serialized until an event affecting this account is applied (see
/// [`crate::service::cache::ReportCache`]); the whole body is kept until any event is.
pub async fn account_body(state: &Shared, id: &str) -> Result<Bytes, ServiceError> {
    if let Some(body) = state.reports.durable_body(id, state.committed()) {
        return Ok(body);
    }
    let (sequence, risk, version, found) = state
        .read_durable(Some(id), |engine| {
            let risk = engine.risk(id).ok_or_else(|| no_account(id))?;
            let version = state.reports.version(id);
            Ok((
                engine.sequence(),
                risk,
                version,
                state.reports.lookup(id, version),
            ))
        })
        .await?;
    let (entry, stale) = match found {
        Lookup::Fresh(e) => (e, false),
        Lookup::Stale(e) => {
            // Only oracle quotes moved since: serve it, and refresh it in the background
            // (one refresh at a time per account).
            if let Some(cell) = state.reports.flights.start(id, version.exact) {
                let (state, id) = (state.clone(), id.to_string());
                tokio::spawn(async move {
                    let _ = report_flight(&state, &id, &cell).await;
                });
            }
            (e, true)
        }
        Lookup::Miss => {
            let cell = state.reports.flights.join(id, version.exact);
            (report_flight(state, id, &cell).await?, false)
        }
    };
    if let Some(body) = entry.body_at(sequence, stale) {
        return Ok(body);
    }
    let mut body = Vec::with_capacity(entry.tail.len() + 256);
    let _ = write!(
        body,
        "{{\"sequence\":{sequence},\"report_sequence\":{},\"report_stale\":{stale},\"engine\":",
        entry.version.exact
    );
    serde_json::to_writer(&mut body, &risk).map_err(|e| ServiceError::internal(e.to_string()))?;
    body.push(b',');
    body.extend_from_slice(&entry.tail);
    let body = Bytes::from(body);
    entry.keep_body(sequence, stale, body.clone());
    if !stale && entry.version == version {
        state.reports.keep_durable(id, version, body.clone());
    }
    Ok(body)
}

/// Computes (or waits for) the report of a flight, caches it and lands the flight.
async fn report_flight(
    state: &Shared,
    id: &str,
    cell: &Arc<OnceCell<Arc<ReportEntry>>>,
) -> Result<Arc<ReportEntry>, ServiceError> {
    let entry = cell
        .get_or_try_init(|| compute_report(state, id))
        .await?
        .clone();
    state.reports.put(id, entry.clone());
    state.reports.flights.land(id, cell);
    Ok(entry)
}

async fn compute_report(state: &Shared, id: &str) -> Result<Arc<ReportEntry>, ServiceError> {
    let (version, (portfolio, market, params)) = state
        .read_durable(Some(id), |engine| {
            let inputs = account_inputs(engine, id).ok_or_else(|| no_account(id))?;
            Ok((state.reports.version(id), inputs))
        })
        .await?;
    state
        .heavy_job(move || {
            let report =
                margin_report(&portfolio, &market, &params, None, ReportOptions::default())
                    .map_err(|e| ServiceError::unprocessable(e.to_string()))?;
            let cached = CachedReport {
                as_of: report.as_of,
                params_version: report.params_version,
                account: report.accounts.into_iter().next(),
            };
            ReportEntry::new(version, &cached)
                .map(Arc::new)
                .map_err(ServiceError::internal)
        })
        .await
}

/// The account's scenario table (the grid's losses, scenario by scenario), with the engine
/// sequence it was read at.
pub async fn scenario_table(state: &Shared, id: &str) -> Result<Value, ServiceError> {
    let (sequence, portfolio, market, params) = state
        .read_durable(Some(id), |engine| {
            let (portfolio, market, params) =
                account_inputs(engine, id).ok_or_else(|| no_account(id))?;
            Ok((engine.sequence(), portfolio, market, params))
        })
        .await?;
    let table = state
        .heavy_job(move || {
            let fail = |e: pmargin_core::InputError| ServiceError::unprocessable(e.to_string());
            let book = Book::build(&portfolio, &market, &params).map_err(fail)?;
            let arrays = RiskArrays::compute(&book, None).map_err(fail)?;
            Evaluator::new(&book, &arrays)
                .scenario_table(&book.accounts[0])
                .map_err(fail)
        })
        .await?;
    Ok(json!({ "sequence": sequence, "table": table }))
}

/// The body of a what-if on `key.0` (`trades`, settled in `settlement_asset` or the engine's):
/// the same request (`key.1`, the hash of its body) gets the same answer until an event
/// affecting the account is applied, and concurrent identical requests share one computation.
pub async fn what_if(
    state: &Shared,
    key: WhatIfKey,
    trades: Vec<Trade>,
    settlement_asset: Option<String>,
) -> Result<Vec<u8>, ServiceError> {
    let (sequence, version, hit) = {
        let engine = state.engine();
        if engine.risk(&key.0).is_none() {
            return Err(no_account(&key.0));
        }
        let version = state.reports.version(&key.0).exact;
        (
            engine.sequence(),
            version,
            state.reports.get_what_if(&key, version),
        )
    };
    let result = match hit {
        Some(hit) => hit,
        None => {
            let cell = state.reports.what_if_flights.join(&key, version);
            let result = cell
                .get_or_try_init(|| async {
                    let (version, inputs, settle) = {
                        let engine = state.engine();
                        let settle = settlement_asset
                            .unwrap_or_else(|| engine.config().settlement_asset.clone());
                        (
                            state.reports.version(&key.0).exact,
                            account_inputs(&engine, &key.0),
                            settle,
                        )
                    };
                    let (portfolio, market, params) = inputs.ok_or_else(|| no_account(&key.0))?;
                    let account = key.0.clone();
                    let bytes = state
                        .heavy_job(move || {
                            let result = core_what_if(
                                &portfolio, &account, &trades, &market, &params, None, &settle,
                            )
                            .map_err(|e| ServiceError::unprocessable(e.to_string()))?;
                            serde_json::to_vec(&result)
                                .map(Bytes::from)
                                .map_err(|e| ServiceError::internal(e.to_string()))
                        })
                        .await?;
                    state
                        .reports
                        .put_what_if(key.clone(), version, bytes.clone());
                    Ok::<_, ServiceError>(bytes)
                })
                .await?
                .clone();
            state.reports.what_if_flights.land(&key, &cell);
            result
        }
    };
    let mut body = Vec::with_capacity(result.len() + 48);
    let _ = write!(body, "{{\"sequence\":{sequence},\"what_if\":");
    body.extend_from_slice(&result);
    body.push(b'}');
    Ok(body)
}
