//! `pmargin route`: the router in front of K engine groups (issue 19, docs/DEPLOYMENT.md
//! "Sharded"). A thin proxy, stateless: every request is sent on as it came (the client's
//! key included) to the group [`target`] names, at whichever of its nodes answers
//! ([`upstream`]); market data and governance go to every group and a fill across two
//! groups to both as legs ([`fanout`]); reads that span accounts are answered from the
//! groups' answers ([`views`]).
//!
//! The order of the groups is their index in the account hash
//! ([`crate::replicated::shard::group_of`]): it must be the same in every router and never
//! change; a new group is added at the end (it takes about 1/(K+1) of the accounts, which must
//! be moved to it first).

pub mod fanout;
pub mod target;
pub mod upstream;
pub mod views;

use crate::http::error::ApiError;
use crate::http::BODY_LIMIT;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use target::{target, Target, View};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use upstream::{Call, Group, Upstream};

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub listen: String,
    /// The groups in hash order: each a name and its nodes' base URLs.
    pub groups: Vec<(String, Vec<String>)>,
    /// How long one node has to answer one attempt.
    pub attempt_timeout: Duration,
    /// How long a request that may be sent again (a read, or a write with an idempotency
    /// key) is retried while its group has no leader or does not answer.
    pub retry_for: Duration,
    /// Longest time a client may take to send a request head.
    pub header_read_timeout: Duration,
}

impl RouterConfig {
    pub fn new(listen: impl Into<String>, groups: Vec<(String, Vec<String>)>) -> RouterConfig {
        RouterConfig {
            listen: listen.into(),
            groups,
            attempt_timeout: Duration::from_secs(10),
            // The lease TTL (3 s) and a renewal round, with room: a failover fits.
            retry_for: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// A group named on the command line: `NAME=URL[,URL...]`; errors name `--group`.
pub fn parse_group(spec: &str) -> Result<(String, Vec<String>), String> {
    let (name, urls) = spec
        .split_once('=')
        .ok_or_else(|| format!("--group `{spec}`: expected NAME=URL[,URL...]"))?;
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if !name_ok {
        return Err(format!(
            "--group `{spec}`: the name must be 1 to 64 letters, digits, `_` or `-`"
        ));
    }
    let nodes: Vec<String> = urls
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .collect();
    for url in &nodes {
        let host = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "--group {name}: `{url}` is not an http:// URL (the router speaks plain HTTP \
                 to its groups, on a private network)"
            )
        })?;
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "--group {name}: `{url}` must be http://HOST:PORT with no path"
            ));
        }
    }
    Ok((name.to_string(), nodes))
}

/// Refuses a configuration the router must not start with.
fn check(config: &RouterConfig) -> Result<(), String> {
    if config.groups.is_empty() {
        return Err("--group: name at least one group (NAME=URL[,URL...])".into());
    }
    for (i, (name, nodes)) in config.groups.iter().enumerate() {
        if config.groups[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("--group {name}: named twice"));
        }
        if nodes.is_empty() {
            return Err(format!("--group {name}: no node URL"));
        }
    }
    Ok(())
}

/// A started router.
pub struct RunningRouter {
    pub addr: SocketAddr,
    pub upstream: Arc<Upstream>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl RunningRouter {
    /// Stops accepting, lets the requests in flight finish, and waits.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// Binds the listener and routes in the background.
pub async fn start(config: RouterConfig) -> Result<RunningRouter, String> {
    check(&config)?;
    let groups = config
        .groups
        .iter()
        .map(|(name, nodes)| Group::new(name.clone(), nodes.clone()))
        .collect();
    let upstream = Arc::new(Upstream::new(
        groups,
        config.attempt_timeout,
        config.retry_for,
    ));
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("--listen {}: cannot listen: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new()
        .fallback(dispatch)
        .with_state(upstream.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::http::serve::serve(
        listener,
        app,
        config.header_read_timeout,
        async move {
            let _ = rx.await;
        },
    ));
    Ok(RunningRouter {
        addr,
        upstream,
        shutdown: Some(tx),
        task,
    })
}

async fn dispatch(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than {BODY_LIMIT} bytes, or was cut off"),
            )
            .into_response()
        }
    };
    let path = parts.uri.path();
    let path_query = parts.uri.path_and_query().map_or(path, |p| p.as_str());
    let query = parts.uri.query().unwrap_or("");
    let call = Call {
        method: &parts.method,
        path: path_query,
        headers: &parts.headers,
        body: body.clone(),
    };
    match target(&parts.method, path, &body, up.k()) {
        Target::Group(g) => up.forward(g, &call).await,
        Target::Any => any_group(&up, &call).await,
        Target::All if path == "/v1/quotes" => {
            let body = dated_quote(body);
            fanout::broadcast(&up, &parts.method, path_query, parts.headers, body).await
        }
        Target::All => fanout::broadcast(&up, &parts.method, path_query, parts.headers, body).await,
        Target::Legs(legs) => fanout::legs(&up, *legs, parts.headers).await,
        Target::Own(View::Health) => views::health(&up).await,
        Target::Own(View::Metrics) => views::metrics(&up),
        Target::Own(View::Insurance) => views::insurance(&up, &parts.headers).await,
        Target::Own(View::Accounts) => {
            views::accounts(&up, path_query, query, &parts.headers).await
        }
        Target::Own(View::Liquidations) => views::liquidations(&up, query, &parts.headers).await,
        Target::Refused(why) => {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_routed", why).into_response()
        }
    }
}

/// The first group that answers (each holds the same market, parameters and governance).
async fn any_group(up: &Upstream, call: &Call<'_>) -> Response {
    let mut last = None;
    for g in 0..up.k() {
        let resp = up.forward(g, call).await;
        let lost = resp.status() == StatusCode::SERVICE_UNAVAILABLE
            && resp.headers().get(upstream::GROUP).is_none();
        if !lost {
            return resp;
        }
        last = Some(resp);
    }
    last.unwrap_or_else(|| ApiError::unavailable("no group is configured").into_response())
}

/// A quote without `ts_ms` dated by the router's clock, so every group's oracle takes it at
/// the same time (each would otherwise date it by its own clock when it arrives).
fn dated_quote(body: axum::body::Bytes) -> axum::body::Bytes {
    let Ok(serde_json::Value::Object(mut quote)) = serde_json::from_slice(&body) else {
        return body;
    };
    if quote.contains_key("ts_ms") {
        return body;
    }
    quote.insert("ts_ms".into(), crate::service::state::now_ms().into());
    serde_json::to_vec(&quote).map_or(body, Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_flags_are_checked_and_errors_name_the_flag() {
        assert_eq!(
            parse_group("A=http://h1:8080,http://h2:8080/").unwrap(),
            (
                "A".to_string(),
                vec!["http://h1:8080".to_string(), "http://h2:8080".to_string()]
            )
        );
        for bad in [
            "A",
            "=http://h:1",
            "A=h1:8080",
            "A=https://h:1",
            "A=http://h:1/x",
            "A B=http://h:1",
        ] {
            let e = parse_group(bad).unwrap_err();
            assert!(e.starts_with("--group"), "{bad}: {e}");
        }
        let twice = RouterConfig::new(
            "127.0.0.1:0",
            vec![
                ("A".into(), vec!["http://h:1".into()]),
                ("A".into(), vec!["http://h:2".into()]),
            ],
        );
        assert!(check(&twice).unwrap_err().contains("named twice"));
        assert!(check(&RouterConfig::new("127.0.0.1:0", vec![])).is_err());
    }

    #[test]
    fn a_quote_without_a_time_is_dated_once_for_every_group() {
        let dated = dated_quote(r#"{"source":"a","underlying":"BTC","price":1}"#.into());
        let v: serde_json::Value = serde_json::from_slice(&dated).unwrap();
        assert!(v["ts_ms"].as_i64().is_some_and(|t| t > 1_700_000_000_000));
        let kept = r#"{"source":"a","underlying":"BTC","price":1,"ts_ms":5}"#;
        assert_eq!(&dated_quote(kept.into())[..], kept.as_bytes());
    }
}
