//! `feeds.toml` (docs/FORMATS.md): each feed's venue, URL, subscriptions, the mapping of its
//! symbols to underlyings with their weights, and the oracle source it posts as.

use crate::chainlink::{Aggregator, ANSWER_UPDATED_TOPIC};
use crate::uniswap::{Pool, SLOT0_SELECTOR, SWAP_TOPIC};
use crate::{binance, deribit, eth, okx, pyth};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The wire format a feed speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Venue {
    Deribit,
    Binance,
    Okx,
    Pyth,
    UniswapV3,
    Chainlink,
}

impl Venue {
    pub fn as_str(self) -> &'static str {
        match self {
            Venue::Deribit => "deribit",
            Venue::Binance => "binance",
            Venue::Okx => "okx",
            Venue::Pyth => "pyth",
            Venue::UniswapV3 => "uniswap_v3",
            Venue::Chainlink => "chainlink",
        }
    }
}

/// Where a venue symbol goes: an underlying, with its weight among the feed's symbols of that
/// underlying (`"BTC"` is weight 1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Target {
    Underlying(String),
    Weighted { underlying: String, weight: f64 },
}

impl Target {
    pub fn underlying(&self) -> &str {
        match self {
            Target::Underlying(u) | Target::Weighted { underlying: u, .. } => u,
        }
    }

    pub fn weight(&self) -> f64 {
        match self {
            Target::Underlying(_) => 1.0,
            Target::Weighted { weight, .. } => *weight,
        }
    }
}

/// One feed: one connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSpec {
    /// Unique; names the feed in health, metrics and recordings.
    pub name: String,
    pub venue: Venue,
    /// `ws://` (or `wss://` in a build with the `tls` feature).
    pub url: String,
    /// The oracle source the feed posts as (an oracle identity bound to it); default: `name`.
    #[serde(default)]
    pub source: Option<String>,
    /// The feed's weight in each index it quotes (the oracle's weighted median across
    /// sources); default 1.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Deribit channels, Binance streams, OKX `channel:instId` pairs, Pyth feed ids.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Venue symbol -> underlying (or `{ underlying, weight }`).
    #[serde(default)]
    pub map: BTreeMap<String, Target>,
    #[serde(default)]
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub aggregators: Vec<Aggregator>,
    /// Post forwards (futures' marks) and smile points too (Deribit).
    #[serde(default)]
    pub surface: bool,
    /// At most one post per symbol (instrument, expiry) per this many ms of venue time.
    #[serde(default)]
    pub min_interval_ms: i64,
    /// Health calls the feed stale after this long without a message.
    #[serde(default = "default_stale_after_ms")]
    pub stale_after_ms: i64,
    /// With no message for this long, the connection is dropped and made again.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

fn default_stale_after_ms() -> i64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    30_000
}
fn default_backoff_min_ms() -> u64 {
    250
}
fn default_backoff_max_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedsConfig {
    #[serde(default, rename = "feed")]
    pub feeds: Vec<FeedSpec>,
}

/// The JSON-RPC id of the `slot0()` call of pool `i` (ids below are subscriptions).
pub const SLOT0_ID_BASE: u64 = 100;

impl FeedsConfig {
    /// Reads and checks a `feeds.toml`; the error names the file and the field.
    pub fn parse(file: &str, text: &str) -> Result<FeedsConfig, String> {
        let config: FeedsConfig = toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        config.validate().map_err(|e| format!("{file}: {e}"))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.feeds.is_empty() {
            return Err("`feed`: no feed is configured".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, f) in self.feeds.iter().enumerate() {
            let at = |field: &str| format!("feed[{i}] ({}).{field}", f.name);
            let name_ok = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
            if f.name.is_empty() || f.name.len() > 64 || !f.name.chars().all(name_ok) {
                return Err(format!(
                    "{}: must be 1 to 64 characters of [A-Za-z0-9_.:-]",
                    at("name")
                ));
            }
            if !names.insert(&f.name) {
                return Err(format!("{}: `{}` names two feeds", at("name"), f.name));
            }
            if !(f.url.starts_with("ws://") || f.url.starts_with("wss://")) {
                return Err(format!(
                    "{}: must start with ws:// or wss://, got `{}`",
                    at("url"),
                    f.url
                ));
            }
            if f.url.starts_with("wss://") && !cfg!(feature = "tls") {
                return Err(format!(
                    "{}: wss:// needs a build with TLS (cargo build --features pmargin-feeds/tls)",
                    at("url")
                ));
            }
            if let Some(s) = &f.source {
                if s.trim().is_empty() || s.trim() != s {
                    return Err(format!(
                        "{}: must be a non-empty name without surrounding spaces",
                        at("source")
                    ));
                }
            }
            if let Some(w) = f.weight {
                if !(w.is_finite() && w > 0.0) {
                    return Err(format!(
                        "{}: must be finite and positive, got {w}",
                        at("weight")
                    ));
                }
            }
            for (symbol, target) in &f.map {
                let w = target.weight();
                if !(w.is_finite() && w > 0.0) {
                    return Err(format!(
                        "{}: weight must be finite and positive, got {w}",
                        at(&format!("map.{symbol}"))
                    ));
                }
                if target.underlying().trim().is_empty() {
                    return Err(format!(
                        "{}: the underlying must not be empty",
                        at(&format!("map.{symbol}"))
                    ));
                }
            }
            if f.min_interval_ms < 0 {
                return Err(format!("{}: must not be negative", at("min_interval_ms")));
            }
            if f.stale_after_ms <= 0 {
                return Err(format!("{}: must be positive", at("stale_after_ms")));
            }
            if f.backoff_min_ms == 0 || f.backoff_max_ms < f.backoff_min_ms {
                return Err(format!(
                    "{}: must be positive and at most backoff_max_ms",
                    at("backoff_min_ms")
                ));
            }
            match f.venue {
                Venue::UniswapV3 if f.pools.is_empty() => {
                    return Err(format!(
                        "{}: a uniswap_v3 feed lists its pools",
                        at("pools")
                    ))
                }
                Venue::Chainlink if f.aggregators.is_empty() => {
                    return Err(format!(
                        "{}: a chainlink feed lists its aggregators",
                        at("aggregators")
                    ))
                }
                Venue::Deribit | Venue::Binance | Venue::Okx | Venue::Pyth
                    if f.subscribe.is_empty() =>
                {
                    return Err(format!(
                        "{}: lists nothing to subscribe to",
                        at("subscribe")
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl FeedSpec {
    /// The oracle source the feed posts as.
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }

    /// What to send once connected: the subscriptions (and, for a pool, a `slot0()` call so the
    /// price is known before the first swap).
    pub fn hello(&self) -> Vec<String> {
        match self.venue {
            Venue::Deribit => vec![deribit::subscribe(&self.subscribe)],
            Venue::Binance => vec![binance::subscribe(&self.subscribe)],
            Venue::Okx => vec![okx::subscribe(&self.subscribe)],
            Venue::Pyth => vec![pyth::subscribe(&self.subscribe)],
            Venue::UniswapV3 => {
                let addresses: Vec<_> = self.pools.iter().map(|p| p.address).collect();
                let mut out = vec![eth::subscribe_logs(1, &addresses, &[SWAP_TOPIC])];
                out.extend(
                    self.pools.iter().enumerate().map(|(i, p)| {
                        eth::call(SLOT0_ID_BASE + i as u64, p.address, &SLOT0_SELECTOR)
                    }),
                );
                out
            }
            Venue::Chainlink => {
                let addresses: Vec<_> = self.aggregators.iter().map(|a| a.address).collect();
                vec![eth::subscribe_logs(1, &addresses, &[ANSWER_UPDATED_TOPIC])]
            }
        }
    }
}
