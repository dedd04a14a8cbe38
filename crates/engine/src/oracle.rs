//! Index prices from several venues, and when not to trust them.
//!
//! Prices for each underlying come from several named sources (venues). Each quote has a
//! timestamp. The oracle turns them into one index price per underlying. It also tells the
//! engine when that index cannot be trusted, because the margin engine acts on it: it
//! liquidates accounts and lends against collateral.
//!
//! Two failures drive the design:
//!
//! * **Liquidating on a bad print.** One venue prints a wick, freezes or loses its feed, and
//!   the engine closes accounts that were healthy at every other venue. Hence: quotes older
//!   than `max_age_ms` are dropped; the index is a median, so one source cannot move it; quotes
//!   far from the median of the others are dropped as outliers; an index needs a quorum of
//!   `min_sources`. A jump larger than `circuit_breaker` is not believed until a second update,
//!   built on newer quotes, confirms it. While any of these checks fails, the oracle keeps
//!   the last good price and reports a health other than [`Health::Fresh`]. The engine must then
//!   suspend liquidations ([`Oracle::liquidations_suspended`]): waiting costs less than an
//!   unfair liquidation.
//! * **Borrowing against a manipulated spike.** At Mango Markets (October 2022) an attacker
//!   pushed up a thin market's price, which raised their collateral value, and borrowed out the
//!   treasury against it. Every venue showed the pumped price, so a median of venues does not
//!   help. The defence is a slow *stable price*. On each accepted index it moves toward the
//!   index, but by at most `max_move_per_second × elapsed seconds` (relative). It never
//!   overshoots. [`Oracle::conservative_price`] values long exposure (collateral) at the lower
//!   of index and stable price, and short exposure at the higher, so a sudden spike does not
//!   raise borrowing power right away.
//!
//! Everything is deterministic. Time is an explicit `ts_ms`/`now_ms` (milliseconds since the
//! epoch), never the wall clock. All maps are `BTreeMap`, so outputs list sources and
//! underlyings in name order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod aggregate;
mod config;
mod replay;

use aggregate::{assess, rel_diff, Assessment, Held};
pub use aggregate::{SourceHealth, SourceStatus};
pub use config::{OracleConfig, OracleError, Quote, StablePriceConfig};
pub use replay::{replay_csv, replay_jsonl};

/// How far to trust an underlying's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The index was just computed from a quorum of fresh quotes and accepted.
    Fresh,
    /// No fresh quote at all. The last good price is kept.
    Stale,
    /// Fresh quotes exist, but fewer than `min_sources` survive the outlier filter.
    NoQuorum,
    /// The index jumped past the circuit breaker and waits for a confirming update.
    AwaitingConfirmation,
}

impl Health {
    /// Its name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Fresh => "fresh",
            Health::Stale => "stale",
            Health::NoQuorum => "no_quorum",
            Health::AwaitingConfirmation => "awaiting_confirmation",
        }
    }
}

/// An underlying's state after its last [`Oracle::update`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexState {
    pub underlying: String,
    /// Last good (accepted) index; kept while health is not `Fresh`.
    pub price: Option<f64>,
    pub stable_price: Option<f64>,
    pub health: Health,
    /// `now_ms` of the last update.
    pub updated_ms: i64,
    /// Every stored quote for this underlying, in source-name order.
    pub sources: Vec<SourceStatus>,
    /// The confidence (USD) of the last good index: the largest of its sources' (docs/
    /// METHODOLOGY.md); none when none of them gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// The result of one [`Oracle::update`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexUpdate {
    pub underlying: String,
    /// The good index after this update. If health is not `Fresh`, this is the last good
    /// price, unchanged.
    pub price: Option<f64>,
    pub price_changed: bool,
    pub stable_price: Option<f64>,
    pub health: Health,
    /// True on the first update of an underlying, and whenever health differs from the
    /// previous update.
    pub health_changed: bool,
    /// The confidence of the good index (kept with its price while health is not `Fresh`).
    pub confidence: Option<f64>,
    pub confidence_changed: bool,
}

/// A jump past the circuit breaker, waiting for confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Candidate {
    price: f64,
    /// `now_ms` of the update that proposed it; the confirmation window starts here.
    since_ms: i64,
    /// Newest timestamp among the quotes behind it. A confirmation needs a newer quote. If it
    /// did not, calling `update` twice on the same quotes would "confirm" a spike.
    newest_quote_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Book {
    /// source -> (price, ts_ms) of its latest quote.
    quotes: BTreeMap<String, (f64, i64)>,
    /// source -> the confidence of its latest quote, for the sources whose quote has one (kept
    /// apart from `quotes`, and left out when empty, so snapshots without them keep their
    /// bytes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    confidence: BTreeMap<String, f64>,
    /// source -> the weight of its latest quote, for the sources whose quote has one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    weights: BTreeMap<String, f64>,
    state: Option<IndexState>,
    candidate: Option<Candidate>,
    /// When the stable price last moved. Elapsed time is measured from here.
    stable_ms: i64,
}

/// Multi-source index prices with staleness, outlier, quorum and circuit-breaker checks.
///
/// Serializes to everything it holds (config, every source's latest quote, each index's state,
/// stable price and pending circuit-breaker candidate), for engine snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oracle {
    config: OracleConfig,
    books: BTreeMap<String, Book>,
}

impl Oracle {
    /// Validates the config. The error names the bad field.
    pub fn new(config: OracleConfig) -> Result<Oracle, OracleError> {
        config.validate()?;
        Ok(Oracle {
            config,
            books: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &OracleConfig {
        &self.config
    }

    /// Records a quote. Rejects non-finite or non-positive prices and empty names, with an
    /// `OracleError` that names the field. A later quote from the same source replaces the
    /// earlier one. A quote older than the stored one is ignored, because feeds can deliver
    /// out of order. Equal timestamps replace.
    pub fn submit(&mut self, quote: Quote) -> Result<(), OracleError> {
        quote.validate()?;
        let book = self.books.entry(quote.underlying).or_default();
        if book
            .quotes
            .get(&quote.source)
            .is_some_and(|stored| quote.ts_ms < stored.1)
        {
            return Ok(());
        }
        // A newer quote without a confidence or a weight drops the older one's.
        for (map, value) in [
            (&mut book.confidence, quote.confidence),
            (&mut book.weights, quote.weight),
        ] {
            match value {
                Some(v) => map.insert(quote.source.clone(), v),
                None => map.remove(&quote.source),
            };
        }
        book.quotes.insert(quote.source, (quote.price, quote.ts_ms));
        Ok(())
    }

    /// Recomputes the index of `underlying` at time `now_ms` and returns what changed.
    ///
    /// An underlying with no quotes yet is recorded as `Stale`.
    pub fn update(&mut self, underlying: &str, now_ms: i64) -> IndexUpdate {
        let config = &self.config;
        let book = self.books.entry(underlying.to_string()).or_default();
        let (confidences, weights) = (&book.confidence, &book.weights);
        let held = book.quotes.iter().map(|(s, &(price, ts_ms))| {
            (
                s,
                Held {
                    price,
                    ts_ms,
                    confidence: confidences.get(s).copied(),
                    weight: weights.get(s).copied(),
                },
            )
        });
        let (assessment, sources) = assess(config, held, now_ms);

        let prev_price = book.state.as_ref().and_then(|s| s.price);
        let prev_health = book.state.as_ref().map(|s| s.health);
        let mut price = prev_price;
        let mut stable = book.state.as_ref().and_then(|s| s.stable_price);
        let prev_confidence = book.state.as_ref().and_then(|s| s.confidence);
        let mut confidence = prev_confidence;

        let health = match assessment {
            Assessment::NoneFresh => Health::Stale,
            Assessment::NoQuorum => Health::NoQuorum,
            Assessment::Index {
                price: index,
                newest_quote_ms,
                confidence: index_confidence,
            } => {
                let accept = match prev_price {
                    // Nothing to compare against: the first index has to be believed.
                    None => true,
                    // A normal move. This also clears any pending candidate: the market came
                    // back near the last good price, so the jump was a one-off.
                    Some(last) if rel_diff(index, last) <= config.circuit_breaker => true,
                    Some(_) => match book.candidate {
                        Some(c)
                            if now_ms.saturating_sub(c.since_ms) <= config.confirm_within_ms
                                && newest_quote_ms > c.newest_quote_ms
                                && rel_diff(index, c.price) <= config.outlier_fraction =>
                        {
                            true
                        }
                        // No candidate, an expired one, or one this index disagrees with:
                        // this index becomes the new candidate, with a new window.
                        _ => {
                            book.candidate = Some(Candidate {
                                price: index,
                                since_ms: now_ms,
                                newest_quote_ms,
                            });
                            false
                        }
                    },
                };
                if accept {
                    book.candidate = None;
                    price = Some(index);
                    confidence = index_confidence;
                    stable = config.stable_price.as_ref().map(|sp| match stable {
                        None => index,
                        Some(s) => move_stable(
                            s,
                            index,
                            sp.max_move_per_second,
                            now_ms.saturating_sub(book.stable_ms),
                        ),
                    });
                    book.stable_ms = now_ms;
                    Health::Fresh
                } else {
                    Health::AwaitingConfirmation
                }
            }
        };

        book.state = Some(IndexState {
            underlying: underlying.to_string(),
            price,
            stable_price: stable,
            health,
            updated_ms: now_ms,
            sources,
            confidence,
        });
        IndexUpdate {
            underlying: underlying.to_string(),
            price,
            price_changed: price != prev_price,
            stable_price: stable,
            health,
            health_changed: prev_health != Some(health),
            confidence,
            confidence_changed: confidence != prev_confidence,
        }
    }

    /// State after the last update, or `None` if `underlying` was never updated.
    pub fn state(&self, underlying: &str) -> Option<&IndexState> {
        self.books.get(underlying).and_then(|b| b.state.as_ref())
    }

    /// True when liquidations on this underlying must be suspended: health is not `Fresh`, or
    /// the underlying has never been updated.
    pub fn liquidations_suspended(&self, underlying: &str) -> bool {
        self.state(underlying)
            .is_none_or(|s| s.health != Health::Fresh)
    }

    /// Every underlying seen by `submit` or `update`, in name order.
    pub fn underlyings(&self) -> impl Iterator<Item = &str> {
        self.books.keys().map(String::as_str)
    }

    /// The price that favours the house. A long exposure (collateral value) uses min(index,
    /// stable) and a short exposure uses max(index, stable). A spike therefore neither raises
    /// borrowing power nor lowers a short's liability until the stable price has caught up.
    /// Equals the index when the stable price is off. `None` before the first good index. This
    /// does not look at health; check [`Oracle::liquidations_suspended`] for that.
    pub fn conservative_price(&self, underlying: &str, long_exposure: bool) -> Option<f64> {
        let state = self.state(underlying)?;
        let index = state.price?;
        Some(match state.stable_price {
            None => index,
            Some(stable) if long_exposure => index.min(stable),
            Some(stable) => index.max(stable),
        })
    }
}

/// Moves `stable` toward `target` by at most `rate × elapsed seconds × stable`, without
/// overshooting. A negative elapsed time (updates called out of order) moves nothing.
fn move_stable(stable: f64, target: f64, rate: f64, elapsed_ms: i64) -> f64 {
    let elapsed_s = elapsed_ms.max(0) as f64 / 1000.0;
    let max_step = stable * rate * elapsed_s;
    let gap = target - stable;
    if gap.abs() <= max_step {
        target
    } else {
        stable + max_step.copysign(gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(source: &str, price: f64, ts_ms: i64) -> Quote {
        Quote {
            source: source.to_string(),
            underlying: "BTC".to_string(),
            price,
            ts_ms,
            confidence: None,
            weight: None,
        }
    }

    fn oracle(config: OracleConfig) -> Oracle {
        Oracle::new(config).expect("valid config")
    }

    fn feed(o: &mut Oracle, quotes: &[(&str, f64, i64)]) {
        for &(s, p, ts) in quotes {
            o.submit(q(s, p, ts)).expect("valid quote");
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn config_field(err: OracleError) -> &'static str {
        match err {
            OracleError::Config { field, .. } => field,
            other => panic!("expected config error, got {other:?}"),
        }
    }

    fn quote_field(err: OracleError) -> &'static str {
        match err {
            OracleError::Quote { field, .. } => field,
            other => panic!("expected quote error, got {other:?}"),
        }
    }

    #[test]
    fn median_of_three_sources() {
        let mut o = oracle(OracleConfig::default());
        feed(&mut o, &[("a", 100.0, 0), ("b", 102.0, 0), ("c", 101.0, 0)]);
        let u = o.update("BTC", 1_000);
        assert_eq!(u.price, Some(101.0));
        assert_eq!(u.health, Health::Fresh);
        assert!(u.price_changed && u.health_changed);
        assert!(!o.liquidations_suspended("BTC"));
    }

    #[test]
    fn median_of_four_sources_is_mean_of_middle_two() {
        let mut o = oracle(OracleConfig::default());
        feed(
            &mut o,
            &[
                ("a", 100.0, 0),
                ("b", 103.0, 0),
                ("c", 101.0, 0),
                ("d", 102.0, 0),
            ],
        );
        // sorted 100, 101, 102, 103 -> (101 + 102) / 2
        assert_eq!(o.update("BTC", 0).price, Some(101.5));
    }

    #[test]
    fn stale_source_excluded() {
        let mut o = oracle(OracleConfig::default()); // max_age 10 000
        feed(
            &mut o,
            &[("a", 100.0, 0), ("b", 102.0, 15_000), ("c", 104.0, 15_000)],
        );
        // At 15 000, a is 15 000 ms old. With it the median would be 102; without it, 103.
        let u = o.update("BTC", 15_000);
        assert_eq!(u.price, Some(103.0));
        let s = o.state("BTC").unwrap();
        let statuses: Vec<_> = s
            .sources
            .iter()
            .map(|s| (s.source.as_str(), s.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("a", SourceHealth::Stale),
                ("b", SourceHealth::Used),
                ("c", SourceHealth::Used)
            ]
        );
    }

    #[test]
    fn age_exactly_max_age_is_fresh() {
        let mut o = oracle(OracleConfig::default());
        feed(&mut o, &[("a", 100.0, 0), ("b", 101.0, 0)]);
        assert_eq!(o.update("BTC", 10_000).health, Health::Fresh);
        assert_eq!(o.update("BTC", 10_001).health, Health::Stale);
    }

    #[test]
    fn outlier_excluded() {
        let mut o = oracle(OracleConfig::default()); // outlier_fraction 0.02
        feed(
            &mut o,
            &[
                ("a", 100.0, 0),
                ("b", 101.0, 0),
                ("c", 100.5, 0),
                ("d", 150.0, 0),
            ],
        );
        // median of fresh = (100.5 + 101) / 2 = 100.75; 150 / 100.75 - 1 = 0.489 > 0.02.
        // Remaining 100, 100.5, 101 -> 100.5.
        let u = o.update("BTC", 0);
        assert_eq!(u.price, Some(100.5));
        let d = &o.state("BTC").unwrap().sources[3];
        assert_eq!((d.source.as_str(), d.status), ("d", SourceHealth::Outlier));
    }

    #[test]
    fn mad_rule_drops_what_fraction_rule_keeps() {
        let prices = [
            ("a", 100.0, 0),
            ("b", 100.2, 0),
            ("c", 100.4, 0),
            ("d", 101.5, 0),
        ];
        // Without MAD: all within 2 % of the median 100.3, index = (100.2 + 100.4) / 2 = 100.3.
        let mut plain = oracle(OracleConfig::default());
        feed(&mut plain, &prices);
        assert!(close(plain.update("BTC", 0).price.unwrap(), 100.3));
        // Deviations 0.3, 0.1, 0.1, 1.2 -> MAD = (0.1 + 0.3) / 2 = 0.2.
        // Limit 3 * 1.4826 * 0.2 = 0.88956; 1.2 > limit so d is an outlier.
        // Remaining 100, 100.2, 100.4 -> 100.2.
        let mut robust = oracle(OracleConfig {
            mad_multiple: Some(3.0),
            ..OracleConfig::default()
        });
        feed(&mut robust, &prices);
        assert!(close(robust.update("BTC", 0).price.unwrap(), 100.2));
        assert_eq!(
            robust.state("BTC").unwrap().sources[3].status,
            SourceHealth::Outlier
        );
    }

    #[test]
    fn mad_rule_skipped_when_mad_is_zero() {
        // Deviations 0, 0, 0.01 -> MAD 0. The rule would flag 100.01 and break a quorum of 3.
        let mut o = oracle(OracleConfig {
            mad_multiple: Some(3.0),
            min_sources: 3,
            ..OracleConfig::default()
        });
        feed(
            &mut o,
            &[("a", 100.0, 0), ("b", 100.0, 0), ("c", 100.01, 0)],
        );
        let u = o.update("BTC", 0);
        assert_eq!((u.health, u.price), (Health::Fresh, Some(100.0)));
    }

    #[test]
    fn quorum_lost_keeps_last_good_then_restored() {
        let mut o = oracle(OracleConfig::default()); // min_sources 2
        feed(&mut o, &[("a", 100.0, 0), ("b", 100.4, 0)]);
        let u = o.update("BTC", 0);
        assert!(close(u.price.unwrap(), 100.2));
        assert!(!o.liquidations_suspended("BTC"));

        // At 20 000 only a is fresh: one source < quorum of two.
        feed(&mut o, &[("a", 101.0, 20_000)]);
        let u = o.update("BTC", 20_000);
        assert_eq!(u.health, Health::NoQuorum);
        assert!(u.health_changed);
        assert!(!u.price_changed);
        assert!(close(u.price.unwrap(), 100.2));
        assert!(o.liquidations_suspended("BTC"));

        feed(&mut o, &[("b", 101.4, 21_000)]);
        let u = o.update("BTC", 21_000);
        assert_eq!(u.health, Health::Fresh);
        assert!(u.health_changed && u.price_changed);
        assert!(close(u.price.unwrap(), 101.2));
        assert!(!o.liquidations_suspended("BTC"));
    }

    #[test]
    fn all_outliers_is_no_quorum() {
        // Two sources 100 and 150: median 125, each 20 % away; nobody can tell which is right.
        let mut o = oracle(OracleConfig::default());
        feed(&mut o, &[("a", 100.0, 0), ("b", 150.0, 0)]);
        let u = o.update("BTC", 0);
        assert_eq!((u.health, u.price), (Health::NoQuorum, None));
        assert!(o.liquidations_suspended("BTC"));
    }

    #[test]
    fn all_stale_is_stale_and_keeps_price() {
        let mut o = oracle(OracleConfig::default());
        feed(&mut o, &[("a", 100.0, 0), ("b", 102.0, 0)]);
        assert_eq!(o.update("BTC", 0).price, Some(101.0));
        let u = o.update("BTC", 60_000);
        assert_eq!(u.health, Health::Stale);
        assert_eq!(u.price, Some(101.0));
        assert!(!u.price_changed);
        assert!(o.liquidations_suspended("BTC"));
        assert!(o
            .state("BTC")
            .unwrap()
            .sources
            .iter()
            .all(|s| s.status == SourceHealth::Stale));
    }

    #[test]
    fn far_future_quote_is_not_fresh() {
        let mut o = oracle(OracleConfig::default());
        feed(&mut o, &[("a", 100.0, 5_000), ("b", 100.0, 1_000_000)]);
        // a is 5 000 ms ahead of now (fresh); b is 1 000 000 ms ahead (not).
        let u = o.update("BTC", 0);
        assert_eq!(u.health, Health::NoQuorum);
        assert_eq!(
            o.state("BTC").unwrap().sources[1].status,
            SourceHealth::Stale
        );
    }

    #[test]
    fn older_quote_from_same_source_ignored() {
        let mut o = oracle(OracleConfig::default());
        feed(
            &mut o,
            &[
                ("a", 100.0, 5_000),
                ("a", 999.0, 4_000),
                ("b", 100.0, 5_000),
            ],
        );
        assert_eq!(o.update("BTC", 5_000).price, Some(100.0));
        let a = &o.state("BTC").unwrap().sources[0];
        assert_eq!((a.price, a.ts_ms), (100.0, 5_000));
    }

    fn at_100() -> Oracle {
        let mut o = oracle(OracleConfig::default()); // circuit_breaker 0.10, confirm 30 000
        feed(&mut o, &[("a", 100.0, 0), ("b", 100.0, 0)]);
        assert_eq!(o.update("BTC", 0).price, Some(100.0));
        o
    }

    #[test]
    fn first_index_accepted_without_confirmation() {
        let mut o = oracle(OracleConfig::default());
        feed(&mut o, &[("a", 50_000.0, 0), ("b", 50_000.0, 0)]);
        let u = o.update("BTC", 0);
        assert_eq!((u.health, u.price), (Health::Fresh, Some(50_000.0)));
    }

    #[test]
    fn circuit_breaker_holds_a_20_percent_jump() {
        let mut o = at_100();
        feed(&mut o, &[("a", 120.0, 1_000), ("b", 120.0, 1_000)]);
        let u = o.update("BTC", 1_000);
        assert_eq!(u.health, Health::AwaitingConfirmation);
        assert_eq!(u.price, Some(100.0));
        assert!(!u.price_changed);
        assert!(u.health_changed);
        assert!(o.liquidations_suspended("BTC"));
    }

    #[test]
    fn circuit_breaker_lets_a_9_percent_move_through() {
        let mut o = at_100();
        feed(&mut o, &[("a", 109.0, 1_000), ("b", 109.0, 1_000)]);
        let u = o.update("BTC", 1_000);
        assert_eq!((u.health, u.price), (Health::Fresh, Some(109.0)));
    }

    #[test]
    fn circuit_breaker_confirmed_by_second_update() {
        let mut o = at_100();
        feed(&mut o, &[("a", 120.0, 1_000), ("b", 120.0, 1_000)]);
        assert_eq!(o.update("BTC", 1_000).health, Health::AwaitingConfirmation);
        // 121 / 120 - 1 = 0.83 % <= 2 %, 1 000 ms later, from newer quotes.
        feed(&mut o, &[("a", 121.0, 2_000), ("b", 121.0, 2_000)]);
        let u = o.update("BTC", 2_000);
        assert_eq!((u.health, u.price), (Health::Fresh, Some(121.0)));
        assert!(u.price_changed && u.health_changed);
        assert!(!o.liquidations_suspended("BTC"));
    }

    #[test]
    fn same_quotes_do_not_confirm_themselves() {
        let mut o = at_100();
        feed(&mut o, &[("a", 120.0, 1_000), ("b", 120.0, 1_000)]);
        assert_eq!(o.update("BTC", 1_000).health, Health::AwaitingConfirmation);
        // No new quote: re-running the update is not a second opinion.
        let u = o.update("BTC", 1_500);
        assert_eq!(
            (u.health, u.price),
            (Health::AwaitingConfirmation, Some(100.0))
        );
        assert!(!u.health_changed);
    }

    #[test]
    fn one_off_spike_that_reverts_is_never_accepted() {
        let mut o = at_100();
        feed(&mut o, &[("a", 120.0, 1_000), ("b", 120.0, 1_000)]);
        assert_eq!(o.update("BTC", 1_000).health, Health::AwaitingConfirmation);
        // Back near 100: accepted, candidate cleared.
        feed(&mut o, &[("a", 100.5, 2_000), ("b", 100.5, 2_000)]);
        let u = o.update("BTC", 2_000);
        assert_eq!((u.health, u.price), (Health::Fresh, Some(100.5)));
        // A second spike to 120 is a new candidate, not a confirmation of the first.
        feed(&mut o, &[("a", 120.0, 3_000), ("b", 120.0, 3_000)]);
        let u = o.update("BTC", 3_000);
        assert_eq!(
            (u.health, u.price),
            (Health::AwaitingConfirmation, Some(100.5))
        );
    }

    #[test]
    fn disagreeing_second_jump_is_not_a_confirmation() {
        let mut o = at_100();
        feed(&mut o, &[("a", 120.0, 1_000), ("b", 120.0, 1_000)]);
        o.update("BTC", 1_000);
        // 140 / 120 - 1 = 16.7 % > 2 %: replaces the candidate.
        feed(&mut o, &[("a", 140.0, 2_000), ("b", 140.0, 2_000)]);
        let u = o.update("BTC", 2_000);
        assert_eq!(
            (u.health, u.price),
            (Health::AwaitingConfirmation, Some(100.0))
        );
        // 140 again from newer quotes confirms the new candidate.
        feed(&mut o, &[("a", 140.0, 3_000), ("b", 140.0, 3_000)]);
        assert_eq!(o.update("BTC", 3_000).price, Some(140.0));
    }

    #[test]
    fn confirmation_after_window_restarts_it() {
        let mut o = at_100();
        feed(&mut o, &[("a", 120.0, 1_000), ("b", 120.0, 1_000)]);
        o.update("BTC", 1_000);
        // 40 000 - 1 000 = 39 000 > 30 000: too late, becomes a fresh candidate.
        feed(&mut o, &[("a", 120.0, 40_000), ("b", 120.0, 40_000)]);
        assert_eq!(o.update("BTC", 40_000).health, Health::AwaitingConfirmation);
        feed(&mut o, &[("a", 120.0, 41_000), ("b", 120.0, 41_000)]);
        let u = o.update("BTC", 41_000);
        assert_eq!((u.health, u.price), (Health::Fresh, Some(120.0)));
    }

    fn stable_config(rate: f64, circuit_breaker: f64) -> OracleConfig {
        OracleConfig {
            circuit_breaker,
            stable_price: Some(StablePriceConfig {
                max_move_per_second: rate,
            }),
            ..OracleConfig::default()
        }
    }

    #[test]
    fn stable_price_bounded_rate_by_hand() {
        // Circuit breaker at 100 % so the 50 % jump is accepted at once.
        let mut o = oracle(stable_config(0.001, 1.0));
        feed(&mut o, &[("a", 100.0, 0), ("b", 100.0, 0)]);
        let u = o.update("BTC", 0);
        assert_eq!(u.stable_price, Some(100.0));

        // 10 s later index 150: stable moves by at most 0.001 * 10 * 100 = 1 -> 101.
        feed(&mut o, &[("a", 150.0, 10_000), ("b", 150.0, 10_000)]);
        let u = o.update("BTC", 10_000);
        assert_eq!(u.price, Some(150.0));
        assert!(close(u.stable_price.unwrap(), 101.0));

        // Another 10 s: 101 + 0.001 * 10 * 101 = 102.01.
        feed(&mut o, &[("a", 150.0, 20_000), ("b", 150.0, 20_000)]);
        let u = o.update("BTC", 20_000);
        assert!(close(u.stable_price.unwrap(), 102.01));

        // Conservative prices: collateral at the lower, liability at the higher.
        assert!(close(o.conservative_price("BTC", true).unwrap(), 102.01));
        assert_eq!(o.conservative_price("BTC", false), Some(150.0));
    }

    #[test]
    fn stable_price_never_overshoots() {
        let mut o = oracle(stable_config(0.001, 1.0));
        feed(&mut o, &[("a", 100.0, 0), ("b", 100.0, 0)]);
        o.update("BTC", 0);
        // Allowed step 1.0 after 10 s, gap only 0.5: lands exactly on 100.5.
        feed(&mut o, &[("a", 100.5, 10_000), ("b", 100.5, 10_000)]);
        assert_eq!(o.update("BTC", 10_000).stable_price, Some(100.5));
        // Downward: 10 s, step 0.001 * 10 * 100.5 = 1.005 -> 99.495 (index 90).
        feed(&mut o, &[("a", 90.0, 20_000), ("b", 90.0, 20_000)]);
        let u = o.update("BTC", 20_000);
        assert!(close(u.stable_price.unwrap(), 99.495));
        assert_eq!(o.conservative_price("BTC", true), Some(90.0));
        assert!(close(o.conservative_price("BTC", false).unwrap(), 99.495));
    }

    #[test]
    fn stable_price_moves_only_on_accepted_index() {
        // Default circuit breaker 10 %: the 20 % jump waits, and the stable price with it.
        let mut o = oracle(stable_config(0.001, 0.10));
        feed(&mut o, &[("a", 100.0, 0), ("b", 100.0, 0)]);
        o.update("BTC", 0);
        feed(&mut o, &[("a", 120.0, 10_000), ("b", 120.0, 10_000)]);
        let u = o.update("BTC", 10_000);
        assert_eq!(u.stable_price, Some(100.0));
        // Confirmed at 20 s: 20 s since the last accepted index -> 100 + 0.001 * 20 * 100 = 102.
        feed(&mut o, &[("a", 120.0, 20_000), ("b", 120.0, 20_000)]);
        let u = o.update("BTC", 20_000);
        assert_eq!(u.price, Some(120.0));
        assert!(close(u.stable_price.unwrap(), 102.0));
    }

    #[test]
    fn conservative_price_equals_index_when_stable_off() {
        let mut o = oracle(OracleConfig::default());
        assert_eq!(o.conservative_price("BTC", true), None);
        feed(&mut o, &[("a", 100.0, 0), ("b", 102.0, 0)]);
        let u = o.update("BTC", 0);
        assert_eq!(u.stable_price, None);
        assert_eq!(o.conservative_price("BTC", true), Some(101.0));
        assert_eq!(o.conservative_price("BTC", false), Some(101.0));
    }

    #[test]
    fn bad_quotes_rejected_with_field_named() {
        let mut o = oracle(OracleConfig::default());
        for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
            let err = o.submit(q("a", bad, 0)).unwrap_err();
            assert!(err.to_string().contains("`price`"), "{err}");
            assert_eq!(quote_field(err), "price");
        }
        let mut no_source = q("a", 100.0, 0);
        no_source.source = String::new();
        assert_eq!(quote_field(o.submit(no_source).unwrap_err()), "source");
        let mut blank = q("a", 100.0, 0);
        blank.underlying = "  ".to_string();
        assert_eq!(quote_field(o.submit(blank).unwrap_err()), "underlying");
        let mut padded = q("a", 100.0, 0);
        padded.underlying = "BTC ".to_string();
        assert_eq!(quote_field(o.submit(padded).unwrap_err()), "underlying");
        // Nothing was recorded.
        assert_eq!(o.underlyings().count(), 0);
    }

    #[test]
    fn bad_config_rejected_with_field_named() {
        let base = OracleConfig::default;
        let cases: [(OracleConfig, &str); 8] = [
            (
                OracleConfig {
                    max_age_ms: 0,
                    ..base()
                },
                "max_age_ms",
            ),
            (
                OracleConfig {
                    min_sources: 0,
                    ..base()
                },
                "min_sources",
            ),
            (
                OracleConfig {
                    outlier_fraction: f64::NAN,
                    ..base()
                },
                "outlier_fraction",
            ),
            (
                OracleConfig {
                    outlier_fraction: -0.1,
                    ..base()
                },
                "outlier_fraction",
            ),
            (
                OracleConfig {
                    mad_multiple: Some(0.0),
                    ..base()
                },
                "mad_multiple",
            ),
            (
                OracleConfig {
                    circuit_breaker: f64::INFINITY,
                    ..base()
                },
                "circuit_breaker",
            ),
            (
                OracleConfig {
                    confirm_within_ms: -1,
                    ..base()
                },
                "confirm_within_ms",
            ),
            (stable_config(0.0, 0.1), "stable_price.max_move_per_second"),
        ];
        for (config, field) in cases {
            let err = Oracle::new(config).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
            assert_eq!(config_field(err), field);
        }
    }

    #[test]
    fn health_names_are_its_serialized_names() {
        for health in [
            Health::Fresh,
            Health::Stale,
            Health::NoQuorum,
            Health::AwaitingConfirmation,
        ] {
            assert_eq!(
                serde_json::to_value(health).unwrap(),
                serde_json::Value::from(health.as_str())
            );
        }
    }

    #[test]
    fn health_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&Health::NoQuorum).unwrap(),
            "\"no_quorum\""
        );
        assert_eq!(
            serde_json::to_string(&Health::AwaitingConfirmation).unwrap(),
            "\"awaiting_confirmation\""
        );
        assert_eq!(
            serde_json::to_string(&SourceHealth::Outlier).unwrap(),
            "\"outlier\""
        );
    }

    #[test]
    fn underlyings_sorted_and_unknown_suspended() {
        let mut o = oracle(OracleConfig::default());
        for u in ["SOL", "BTC", "ETH"] {
            o.submit(Quote {
                source: "a".into(),
                underlying: u.into(),
                price: 1.0,
                ts_ms: 0,
                confidence: None,
                weight: None,
            })
            .unwrap();
        }
        assert_eq!(o.underlyings().collect::<Vec<_>>(), ["BTC", "ETH", "SOL"]);
        assert!(o.liquidations_suspended("BTC")); // never updated
        assert!(o.liquidations_suspended("DOGE")); // never seen
        assert!(o.state("BTC").is_none());
        let u = o.update("DOGE", 0);
        assert_eq!((u.health, u.price), (Health::Stale, None));
    }

    #[test]
    fn weighted_median_by_hand() {
        use aggregate::weighted_median;
        // Equal weights: the plain median, the middle two's mean for an even count.
        assert_eq!(
            weighted_median(&mut [(3.0, 1.0), (1.0, 1.0), (2.0, 1.0)]),
            2.0
        );
        assert_eq!(
            weighted_median(&mut [(4.0, 1.0), (1.0, 1.0), (3.0, 1.0), (2.0, 1.0)]),
            2.5
        );
        // 1 (w 1), 2 (w 1), 10 (w 3): total 5, half 2.5, passed at 10.
        assert_eq!(
            weighted_median(&mut [(10.0, 3.0), (1.0, 1.0), (2.0, 1.0)]),
            10.0
        );
        // 1 (w 0.5), 2 (w 0.25), 3 (w 0.25): half 0.5 reached exactly at 1 -> (1 + 2) / 2.
        assert_eq!(
            weighted_median(&mut [(3.0, 0.25), (2.0, 0.25), (1.0, 0.5)]),
            1.5
        );
        assert_eq!(weighted_median(&mut [(7.0, 0.1)]), 7.0);
    }

    #[test]
    fn confidence_is_the_largest_of_the_sources_in_the_index() {
        let mut o = oracle(OracleConfig::default());
        let with = |source: &str, price: f64, confidence: f64| Quote {
            confidence: Some(confidence),
            ..q(source, price, 0)
        };
        o.submit(with("a", 100.0, 0.5)).unwrap();
        o.submit(with("b", 100.2, 0.8)).unwrap();
        // An outlier's band does not count: 120 is 20 % from the median.
        o.submit(with("c", 120.0, 9.0)).unwrap();
        o.submit(q("d", 100.1, 0)).unwrap();
        let u = o.update("BTC", 0);
        assert_eq!((u.confidence, u.confidence_changed), (Some(0.8), true));
        assert_eq!(o.state("BTC").unwrap().confidence, Some(0.8));
        // Unchanged on a second look; a newer quote of b without one drops b's.
        assert!(!o.update("BTC", 0).confidence_changed);
        o.submit(q("b", 100.2, 1)).unwrap();
        let u = o.update("BTC", 1);
        assert_eq!((u.confidence, u.confidence_changed), (Some(0.5), true));
        // A bad confidence is refused, naming the field.
        let err = o.submit(with("a", 100.0, -1.0)).unwrap_err();
        assert_eq!(quote_field(err), "confidence");
        let err = o
            .submit(Quote {
                weight: Some(f64::NAN),
                ..q("a", 100.0, 2)
            })
            .unwrap_err();
        assert_eq!(quote_field(err), "weight");
    }

    #[test]
    fn confidence_is_kept_with_the_last_good_price() {
        let mut o = at_100();
        o.submit(Quote {
            confidence: Some(0.3),
            ..q("a", 100.0, 1)
        })
        .unwrap();
        assert_eq!(o.update("BTC", 1).confidence, Some(0.3));
        // A jump waiting for confirmation keeps the last good price and its confidence.
        o.submit(Quote {
            confidence: Some(5.0),
            ..q("a", 120.0, 2)
        })
        .unwrap();
        o.submit(q("b", 120.0, 2)).unwrap();
        let u = o.update("BTC", 2);
        assert_eq!(u.health, Health::AwaitingConfirmation);
        assert_eq!((u.confidence, u.confidence_changed), (Some(0.3), false));
    }

    #[test]
    fn replayed_quotes_drive_the_oracle() {
        let text = "0,a,BTC,100\n0,b,BTC,101\n0,c,BTC,102\n";
        let mut o = oracle(OracleConfig::default());
        for quote in replay_csv(text).unwrap() {
            o.submit(quote).unwrap();
        }
        assert_eq!(o.update("BTC", 0).price, Some(101.0));
    }
}
