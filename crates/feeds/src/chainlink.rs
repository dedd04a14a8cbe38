//! Chainlink aggregators' `AnswerUpdated(int256 indexed current, uint256 indexed roundId,
//! uint256 updatedAt)` logs: the new answer, a fixed-point number with the aggregator's
//! `decimals` (8 for the USD feeds), and its time in seconds.

use crate::eth::Log;
use crate::num::scaled;
use crate::ParseError;
use alloy_primitives::Address;
use alloy_sol_types::{sol, SolEvent};
use serde::Deserialize;

const VENUE: &str = "chainlink";

sol! {
    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
}

/// The `AnswerUpdated` event's topic 0.
pub const ANSWER_UPDATED_TOPIC: alloy_primitives::B256 = AnswerUpdated::SIGNATURE_HASH;

/// An aggregator and the scale of its answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregator {
    pub address: Address,
    pub decimals: u8,
    pub symbol: String,
}

/// (price, time in ms) of an `AnswerUpdated` log.
pub fn answer(log: &Log, aggregator: &Aggregator) -> Result<(f64, i64), ParseError> {
    let event =
        AnswerUpdated::decode_raw_log(log.topics.iter().copied(), &log.data).map_err(|e| {
            ParseError::new(VENUE, "log", format!("is not an AnswerUpdated event ({e})"))
        })?;
    let (sign, abs) = event.current.into_sign_and_abs();
    let price = scaled(f64::from(abs), -i32::from(aggregator.decimals));
    if sign.is_negative() || !(price > 0.0 && price.is_finite()) {
        return Err(ParseError::new(
            VENUE,
            "current",
            format!("{} is not a price", event.current),
        ));
    }
    let seconds = i64::try_from(event.updatedAt).map_err(|_| {
        ParseError::new(
            VENUE,
            "updatedAt",
            format!("{} is not a time", event.updatedAt),
        )
    })?;
    Ok((price, seconds.saturating_mul(1000)))
}
