//! Where a request to the router goes: pure (no I/O), from the method, the path and the body.
//!
//! An account's requests go to its group ([`group_of`]); an event goes where
//! [`route`] sends it (its account's group, every group for market data, two legs for a fill
//! across groups); quotes and governance writes go to every group; the reads that span
//! accounts are the router's own; what only one group can answer (its stream, its keys and
//! audit trail) is refused with the reason.

use crate::replicated::shard::{group_of, route, Route};
use axum::http::Method;
use pmargin_engine::Event;
use serde_json::Value;

/// Where one request goes.
#[derive(Debug, PartialEq)]
pub enum Target {
    /// The group of the account the request names.
    Group(u32),
    /// Every group, once each: market data, parameters and governance.
    All,
    /// A fill across two groups: one leg each, under one idempotency key.
    Legs(Box<[(u32, Event); 2]>),
    /// Any one group: what every group holds alike (parameters, the oracle, the API
    /// description), or a request only a group can judge (a body that does not parse).
    Any,
    /// Answered by the router from the groups' answers.
    Own(View),
    /// Not served through the router, and why.
    Refused(&'static str),
}

/// The router's own answers.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum View {
    Health,
    Metrics,
    Insurance,
    Accounts,
    Liquidations,
}

const STREAM: &str =
    "the event stream and the dashboard are per group: subscribe at each group's nodes";
const PER_GROUP: &str = "API keys, the audit trail and the dashboard summary are kept per \
     group: call a group's nodes (a key must exist in every group to be used through the router)";

/// The target of `method path` with `body` among `k` groups.
pub fn target(method: &Method, path: &str, body: &[u8], k: u32) -> Target {
    let read = matches!(*method, Method::GET | Method::HEAD);
    match path {
        "/healthz" => return Target::Own(View::Health),
        "/metrics" => return Target::Own(View::Metrics),
        "/v1/insurance" => return Target::Own(View::Insurance),
        "/v1/accounts" if read => return Target::Own(View::Accounts),
        "/v1/liquidations" => return Target::Own(View::Liquidations),
        "/v1/quotes" => return Target::All,
        "/v1/what-if" => return by_account(body, &["account"], k),
        "/v1/external" => return by_account(body, &["attestation", "account"], k),
        "/v1/events" => return event_target(body, k),
        "/" | "/v1/stream" | "/v1/dashboard/stream" => return Target::Refused(STREAM),
        "/v1/dashboard/summary" => return Target::Refused(PER_GROUP),
        _ => {}
    }
    let account = path
        .strip_prefix("/v1/accounts/")
        .or_else(|| path.strip_prefix("/v1/dashboard/accounts/"))
        .and_then(|rest| rest.split('/').next())
        .filter(|id| !id.is_empty());
    if let Some(id) = account {
        return Target::Group(group_of(&percent_decoded(id), k));
    }
    if path.starts_with("/assets/") {
        return Target::Refused(STREAM);
    }
    if path.starts_with("/v1/keys") || path.starts_with("/v1/audit") {
        return Target::Refused(PER_GROUP);
    }
    let governed = path.starts_with("/v1/proposals") || path.starts_with("/v1/params/emergency");
    if governed && !read {
        // A parameter change takes effect in every group, each with the same committee.
        return Target::All;
    }
    Target::Any
}

/// The group of the account at `field` (a path into the JSON body); [`Target::Any`] when the
/// body has none, so a group answers with its error naming the field.
fn by_account(body: &[u8], field: &[&str], k: u32) -> Target {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Target::Any;
    };
    let found = field
        .iter()
        .try_fold(&value, |v, name| v.get(name))
        .and_then(Value::as_str);
    match found {
        Some(account) => Target::Group(group_of(account, k)),
        None => Target::Any,
    }
}

fn event_target(body: &[u8], k: u32) -> Target {
    let Ok(event) = serde_json::from_slice::<Event>(body) else {
        return Target::Any;
    };
    match route(&event, k) {
        Route::One(g) => Target::Group(g),
        Route::All => Target::All,
        Route::Legs(legs) => Target::Legs(legs),
    }
}

/// A path segment with its `%XX` escapes decoded (an account id as the service reads it);
/// the segment as it is when an escape is malformed or the result is not UTF-8.
pub fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return segment.to_string(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| segment.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u32 = 4;

    #[test]
    fn an_accounts_requests_go_to_its_group() {
        let g = group_of("alice", K);
        for path in [
            "/v1/accounts/alice",
            "/v1/accounts/alice/scenarios",
            "/v1/accounts/alice/settlement",
            "/v1/dashboard/accounts/alice/positions",
        ] {
            assert_eq!(
                target(&Method::GET, path, b"", K),
                Target::Group(g),
                "{path}"
            );
        }
        // An escaped id is hashed as the service reads it.
        assert_eq!(
            target(&Method::GET, "/v1/accounts/a%20b", b"", K),
            Target::Group(group_of("a b", K))
        );
        let what_if = br#"{"account":"alice","trades":[]}"#;
        assert_eq!(
            target(&Method::POST, "/v1/what-if", what_if, K),
            Target::Group(g)
        );
        let deposit = br#"{"type":"deposit","account":"alice","asset":"USDC","amount":5}"#;
        assert_eq!(
            target(&Method::POST, "/v1/events", deposit, K),
            Target::Group(g)
        );
        let external = br#"{"attestation":{"account":"alice"},"signature":"0x"}"#;
        assert_eq!(
            target(&Method::POST, "/v1/external", external, K),
            Target::Group(g)
        );
    }

    #[test]
    fn market_data_and_governance_go_everywhere_reads_of_all_are_the_routers() {
        let price = br#"{"type":"price","underlying":"BTC","price":60000}"#;
        assert_eq!(target(&Method::POST, "/v1/events", price, K), Target::All);
        assert_eq!(target(&Method::POST, "/v1/quotes", b"{}", K), Target::All);
        assert_eq!(
            target(&Method::POST, "/v1/proposals/p1/activate", b"", K),
            Target::All
        );
        assert_eq!(
            target(&Method::GET, "/v1/proposals/p1", b"", K),
            Target::Any
        );
        assert_eq!(target(&Method::GET, "/v1/params", b"", K), Target::Any);
        assert_eq!(
            target(&Method::GET, "/v1/accounts", b"", K),
            Target::Own(View::Accounts)
        );
        assert_eq!(
            target(&Method::GET, "/healthz", b"", K),
            Target::Own(View::Health)
        );
        assert!(matches!(
            target(&Method::GET, "/v1/stream", b"", K),
            Target::Refused(_)
        ));
        assert!(matches!(
            target(&Method::POST, "/v1/keys", b"{}", K),
            Target::Refused(_)
        ));
        // A body that is no event is for a group to refuse, with its error naming the field.
        assert_eq!(
            target(&Method::POST, "/v1/events", br#"{"type":"teleport"}"#, K),
            Target::Any
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decoded("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decoded("plain"), "plain");
        assert_eq!(percent_decoded("bad%zz"), "bad%zz");
        assert_eq!(percent_decoded("cut%2"), "cut%2");
    }
}
