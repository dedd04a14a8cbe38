//! From a feed's messages to what is posted: each message is read by its venue's adapter, its
//! symbols are mapped to underlyings (unmapped ones are ignored), a symbol's update older than
//! the last one seen is dropped (feeds deliver out of order), updates closer than the feed's
//! `min_interval_ms` to the last post of their key are held back, and the symbols of one
//! underlying are combined by their weights into the feed's one quote of it.
//!
//! Pure and deterministic: the same messages in the same order give the same posts, which is
//! what makes a recording replay exactly.

use crate::config::{FeedSpec, FeedsConfig, Venue, SLOT0_ID_BASE};
use crate::connection::Received;
use crate::eth::{self, Message};
use crate::health::{FeedHealth, Health};
use crate::uniswap::Twap;
use crate::{binance, chainlink, deribit, okx, pyth, uniswap, ParseError, Update};
use alloy_primitives::Bytes;
use std::collections::{BTreeMap, HashMap};

/// What one message makes the service do.
#[derive(Debug, Clone, PartialEq)]
pub enum Post {
    /// An oracle quote from the feed's source, with the feed's weight in the index.
    Quote {
        source: String,
        underlying: String,
        price: f64,
        confidence: Option<f64>,
        weight: Option<f64>,
        ts_ms: i64,
    },
    /// A future's mark (an expiry's forward): `instrument` is `BTC-26JUN20`.
    Mark {
        instrument: String,
        price: f64,
        ts_ms: i64,
    },
    /// An option's implied vol.
    Vol {
        underlying: String,
        instrument: String,
        iv: f64,
        ts_ms: i64,
    },
}

/// The posts of one message and what was dropped on the way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub posts: Vec<Post>,
    /// Updates older than the last one of their symbol.
    pub out_of_order: u64,
}

#[derive(Default)]
struct FeedState {
    /// symbol -> (price, confidence, ts) of its newest update.
    latest: HashMap<String, (f64, Option<f64>, i64)>,
    /// post key -> ts of its last post.
    posted: HashMap<String, i64>,
    twaps: BTreeMap<String, Twap>,
}

pub struct Pipeline {
    feeds: Vec<(FeedSpec, FeedState)>,
}

impl Pipeline {
    pub fn new(config: &FeedsConfig) -> Pipeline {
        Pipeline {
            feeds: config
                .feeds
                .iter()
                .map(|f| (f.clone(), FeedState::default()))
                .collect(),
        }
    }

    /// The index of the feed named `name`.
    pub fn feed_index(&self, name: &str) -> Option<usize> {
        self.feeds.iter().position(|(f, _)| f.name == name)
    }

    /// Reads one message of feed `feed`, received at `recv_ms` (the time of logs, which carry
    /// none).
    pub fn on_message(
        &mut self,
        feed: usize,
        recv_ms: i64,
        text: &str,
    ) -> Result<Outcome, ParseError> {
        let Some((spec, state)) = self.feeds.get_mut(feed) else {
            return Ok(Outcome::default());
        };
        let updates = read(spec, state, recv_ms, text)?;
        let mut out = Outcome::default();
        let source = spec.source().to_string();
        for update in updates {
            match update {
                Update::Quote {
                    symbol,
                    price,
                    confidence,
                    ts_ms,
                } => {
                    let Some(target) = spec.map.get(&symbol) else {
                        continue;
                    };
                    if let Some((_, _, last)) = state.latest.get(&symbol) {
                        if ts_ms < *last {
                            out.out_of_order += 1;
                            continue;
                        }
                    }
                    state
                        .latest
                        .insert(symbol.clone(), (price, confidence, ts_ms));
                    let underlying = target.underlying().to_string();
                    let key = format!("q:{underlying}");
                    if !due(&mut state.posted, key, ts_ms, spec.min_interval_ms) {
                        continue;
                    }
                    let (price, confidence) = combine(spec, &state.latest, &underlying);
                    out.posts.push(Post::Quote {
                        source: source.clone(),
                        underlying,
                        price,
                        confidence,
                        weight: spec.weight,
                        ts_ms,
                    });
                }
                Update::Forward { .. } | Update::Vol { .. } if !spec.surface => {}
                Update::Forward {
                    currency,
                    expiry,
                    price,
                    ts_ms,
                } => {
                    let underlying = surface_underlying(spec, &currency);
                    let instrument = format!("{underlying}-{expiry}");
                    if ordered(state, &mut out, &format!("f:{instrument}"), ts_ms)
                        && due(
                            &mut state.posted,
                            format!("f:{instrument}"),
                            ts_ms,
                            spec.min_interval_ms,
                        )
                    {
                        out.posts.push(Post::Mark {
                            instrument,
                            price,
                            ts_ms,
                        });
                    }
                }
                Update::Vol {
                    instrument,
                    currency,
                    iv,
                    ts_ms,
                    ..
                } => {
                    let underlying = surface_underlying(spec, &currency);
                    let instrument = match instrument.split_once('-') {
                        Some((_, rest)) => format!("{underlying}-{rest}"),
                        None => instrument,
                    };
                    if ordered(state, &mut out, &format!("v:{instrument}"), ts_ms)
                        && due(
                            &mut state.posted,
                            format!("v:{instrument}"),
                            ts_ms,
                            spec.min_interval_ms,
                        )
                    {
                        out.posts.push(Post::Vol {
                            underlying,
                            instrument,
                            iv,
                            ts_ms,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Pipeline {
    /// [`Pipeline::on_message`] on a received message, counted in the feed's health: a
    /// message no adapter reads is logged and counted as malformed (and gives nothing), never
    /// a panic or a stop.
    pub fn ingest(&mut self, health: &Health, msg: &Received) -> Vec<Post> {
        let Some(h) = health.feeds.get(msg.feed) else {
            return Vec::new();
        };
        match self.on_message(msg.feed, msg.recv_ms, &msg.text) {
            Ok(outcome) => {
                FeedHealth::add(&h.out_of_order, outcome.out_of_order);
                outcome.posts
            }
            Err(e) => {
                FeedHealth::add(&h.malformed, 1);
                eprintln!("pmargin: feed {}: malformed message: {e}", h.name);
                Vec::new()
            }
        }
    }
}

impl Post {
    /// What a newer post of the same feed replaces: its quote of an underlying, its mark or
    /// vol of an instrument.
    fn key(&self) -> (u8, &str) {
        match self {
            Post::Quote { underlying, .. } => (0, underlying),
            Post::Mark { instrument, .. } => (1, instrument),
            Post::Vol { instrument, .. } => (2, instrument),
        }
    }
}

/// Posts waiting while the engine is busy with the last ones: of each feed's key only the
/// newest is kept, in the order of the keys' last posts, so a burst the engine cannot take one
/// by one reaches it as one post per key instead of queueing (the oracle keeps only a source's
/// newest quote, and a mark or a vol replaces the last anyway). Also the receipt time of each
/// message whose posts it holds, for the lag.
#[derive(Debug)]
pub struct Coalescer<T> {
    /// Posts with their feed; `None` where a newer post of the key replaced one.
    slots: Vec<Option<(usize, Post)>>,
    /// (feed, key kind, key) -> its slot.
    index: HashMap<(usize, u8, String), usize>,
    received: Vec<(usize, T)>,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            slots: Vec::new(),
            index: HashMap::new(),
            received: Vec::new(),
        }
    }
}

impl<T> Coalescer<T> {
    /// Adds the posts of one message of `feed` received at `at`; returns how many posts
    /// waiting were replaced.
    pub fn push(&mut self, feed: usize, at: T, posts: Vec<Post>) -> u64 {
        if posts.is_empty() {
            return 0;
        }
        self.received.push((feed, at));
        let mut replaced = 0;
        for post in posts {
            let (kind, name) = post.key();
            let key = (feed, kind, name.to_string());
            if let Some(old) = self.index.insert(key, self.slots.len()) {
                self.slots[old] = None;
                replaced += 1;
            }
            self.slots.push(Some((feed, post)));
        }
        replaced
    }

    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// The posts waiting, in order, and the messages they carry; leaves it empty.
    pub fn take(&mut self) -> Batch<T> {
        self.index.clear();
        Batch {
            posts: std::mem::take(&mut self.slots)
                .into_iter()
                .flatten()
                .collect(),
            received: std::mem::take(&mut self.received),
        }
    }
}

/// What a [`Coalescer`] held: posts with their feed, and the (feed, receipt) of each message.
#[derive(Debug, PartialEq)]
pub struct Batch<T> {
    pub posts: Vec<(usize, Post)>,
    pub received: Vec<(usize, T)>,
}

/// The venue's adapter, with the state logs need (which pool or aggregator, the TWAP).
fn read(
    spec: &FeedSpec,
    state: &mut FeedState,
    recv_ms: i64,
    text: &str,
) -> Result<Vec<Update>, ParseError> {
    match spec.venue {
        Venue::Deribit => deribit::parse(text),
        Venue::Binance => binance::parse(text),
        Venue::Okx => okx::parse(text),
        Venue::Pyth => pyth::parse(text),
        Venue::UniswapV3 => {
            let mut prices = Vec::new();
            match eth::parse("uniswap_v3", text)? {
                Message::Logs(logs) => {
                    for log in logs.iter().filter(|l| !l.removed) {
                        if let Some(pool) = spec.pools.iter().find(|p| p.address == log.address) {
                            prices.push((pool, uniswap::swap_price(log, pool)?));
                        }
                    }
                }
                Message::Answer { id, result } => {
                    let pool = id
                        .checked_sub(SLOT0_ID_BASE)
                        .and_then(|i| spec.pools.get(i as usize));
                    if let (Some(pool), Some(hex)) = (pool, result.as_str()) {
                        let bytes: Bytes = hex.parse().map_err(|e| {
                            ParseError::new("uniswap_v3", "result", format!("is not hex ({e})"))
                        })?;
                        prices.push((pool, uniswap::slot0_price(&bytes, pool)?));
                    }
                }
            }
            Ok(prices
                .into_iter()
                .map(|(pool, price)| {
                    let price = if pool.twap_s > 0 {
                        let twap = state
                            .twaps
                            .entry(pool.symbol.clone())
                            .or_insert_with(|| Twap::new(pool.twap_s));
                        twap.push(recv_ms, price);
                        twap.value(recv_ms).unwrap_or(price)
                    } else {
                        price
                    };
                    Update::Quote {
                        symbol: pool.symbol.clone(),
                        price,
                        confidence: None,
                        ts_ms: recv_ms,
                    }
                })
                .collect())
        }
        Venue::Chainlink => match eth::parse("chainlink", text)? {
            Message::Logs(logs) => logs
                .iter()
                .filter(|l| !l.removed)
                .filter_map(|log| {
                    let agg = spec.aggregators.iter().find(|a| a.address == log.address)?;
                    Some(
                        chainlink::answer(log, agg).map(|(price, ts_ms)| Update::Quote {
                            symbol: agg.symbol.clone(),
                            price,
                            confidence: None,
                            ts_ms,
                        }),
                    )
                })
                .collect(),
            Message::Answer { .. } => Ok(Vec::new()),
        },
    }
}

/// Is `ts_ms` at least the last time seen for `key`? (Records it if so, counts it if not.)
fn ordered(state: &mut FeedState, out: &mut Outcome, key: &str, ts_ms: i64) -> bool {
    match state.latest.get(key) {
        Some((_, _, last)) if ts_ms < *last => {
            out.out_of_order += 1;
            false
        }
        _ => {
            state.latest.insert(key.to_string(), (0.0, None, ts_ms));
            true
        }
    }
}

/// Whether `key` may post at `ts_ms` (records the post if so).
fn due(posted: &mut HashMap<String, i64>, key: String, ts_ms: i64, min_interval_ms: i64) -> bool {
    match posted.get(&key) {
        Some(last) if ts_ms.saturating_sub(*last) < min_interval_ms => false,
        _ => {
            posted.insert(key, ts_ms);
            true
        }
    }
}

/// The weighted mean of the newest prices (and confidences) of the feed's symbols of
/// `underlying`.
fn combine(
    spec: &FeedSpec,
    latest: &HashMap<String, (f64, Option<f64>, i64)>,
    underlying: &str,
) -> (f64, Option<f64>) {
    let (mut sum, mut weights, mut conf, mut conf_weights) = (0.0, 0.0, 0.0, 0.0);
    for (symbol, target) in spec
        .map
        .iter()
        .filter(|(_, t)| t.underlying() == underlying)
    {
        if let Some((price, confidence, _)) = latest.get(symbol) {
            let w = target.weight();
            sum += w * price;
            weights += w;
            if let Some(c) = confidence {
                conf += w * c;
                conf_weights += w;
            }
        }
    }
    // `weights` > 0: the caller has just stored a price of one of these symbols.
    (
        sum / weights,
        (conf_weights > 0.0).then(|| conf / conf_weights),
    )
}

/// The underlying of a Deribit currency's surface: what its index symbol maps to, else the
/// currency itself.
fn surface_underlying(spec: &FeedSpec, currency: &str) -> String {
    spec.map
        .get(&deribit::index_name(currency))
        .map_or_else(|| currency.to_string(), |t| t.underlying().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(underlying: &str, price: f64) -> Post {
        Post::Quote {
            source: "s".into(),
            underlying: underlying.into(),
            price,
            confidence: None,
            weight: None,
            ts_ms: 0,
        }
    }

    fn mark(instrument: &str, price: f64) -> Post {
        Post::Mark {
            instrument: instrument.into(),
            price,
            ts_ms: 0,
        }
    }

    #[test]
    fn a_burst_coalesces_to_the_newest_post_of_each_key_in_the_order_of_their_last() {
        let mut c = Coalescer::default();
        assert!(c.is_empty());
        assert_eq!(
            c.push(0, 'a', vec![quote("BTC", 1.0), mark("BTC-25DEC26", 2.0)]),
            0
        );
        assert_eq!(c.push(0, 'b', vec![quote("ETH", 3.0)]), 0);
        // Replaces BTC's quote; the same key of another feed is its own.
        assert_eq!(c.push(0, 'c', vec![quote("BTC", 4.0)]), 1);
        assert_eq!(c.push(1, 'd', vec![quote("BTC", 5.0)]), 0);
        assert_eq!(c.push(1, 'e', Vec::new()), 0);
        let Batch { posts, received } = c.take();
        assert_eq!(
            posts,
            vec![
                (0, mark("BTC-25DEC26", 2.0)),
                (0, quote("ETH", 3.0)),
                (0, quote("BTC", 4.0)),
                (1, quote("BTC", 5.0)),
            ]
        );
        // A message without posts has no lag to record.
        assert_eq!(received, vec![(0, 'a'), (0, 'b'), (0, 'c'), (1, 'd')]);
        assert!(c.is_empty());
        assert_eq!(c.push(0, 'f', vec![quote("BTC", 6.0)]), 0);
        assert_eq!(c.take().posts, vec![(0, quote("BTC", 6.0))]);
    }
}
