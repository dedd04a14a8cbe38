//! Why the engine refuses an event: [`RejectReason`], with the figures of a margin refusal in
//! [`Rejection`].
//!
//! An [`Output::Rejected`] carries the reason as text (its `Display`), the text the service
//! answers with and the event log's readers have always seen; [`RejectReason::label`] names the
//! kind of refusal in a short, stable word (a metrics label).

use crate::event::Output;
use crate::oracle::{Health, OracleError};
use pmargin_core::InputError;
use std::fmt;

/// The start of the reason of a withdrawal refused because an index it depends on is not
/// trusted (stale, no quorum, an unconfirmed jump).
pub const STALE_INDEX_REJECTION: &str = "withdrawal: stale index";

/// How a refused attestation's reason starts: then why (`forged`, `replayed`, `expired`,
/// `stale`, `unknown_protocol`), a colon and the detail.
pub const ATTESTATION_REJECTION: &str = "attestation refused:";

/// How a fill outside its price band is refused (the reason starts with it).
pub const PRICE_BAND_REJECTION: &str = "trade: price outside the band";

/// Why an event was refused (it changed nothing).
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// An amount, price or vol that must be positive and finite is not; `what` names it as
    /// the event does (`deposit: amount`, `price: BTC price`).
    NotPositive { what: String, value: f64 },
    /// A number past the engine's bound for it ([`crate::engine::MAX_SIZE`] and its
    /// siblings); `what` names it (`trade: size`).
    TooLarge {
        what: &'static str,
        value: f64,
        max: f64,
    },
    /// A fill's size is zero or not finite, or its price or fee negative or not finite.
    InvalidTrade,
    /// A fill would list one instrument more on an underlying that lists the most allowed.
    TooManyInstruments { underlying: String, listed: usize },
    /// A fill's price is further from the instrument's mark than `max_fill_deviation`.
    PriceBand {
        instrument: String,
        price: f64,
        mark: f64,
        deviation: f64,
        underlying: String,
    },
    /// Both sides of a fill are the same account.
    SelfTrade,
    /// The event names an account the engine does not hold; `event` is its type.
    UnknownAccount {
        event: &'static str,
        account: String,
    },
    /// A new account's id is not 1 to 64 characters of the allowed set.
    InvalidAccountId { id: String },
    /// A withdrawal of an asset the account holds no balance of.
    NoBalance { account: String, asset: String },
    /// A withdrawal priced on an index the oracle does not trust (`health`: none if the
    /// oracle has no state of it).
    StaleIndex {
        underlying: String,
        health: Option<Health>,
    },
    /// The account would be below initial margin (its figures are in the [`Rejection`]).
    BelowInitialMargin { account: String },
    /// An underlying without parameters.
    UnknownUnderlying { underlying: String },
    /// An oracle event (`quote`, `oracle_tick`) to an engine without an oracle.
    NoOracle { event: &'static str },
    /// The oracle refused the quote.
    InvalidQuote(OracleError),
    /// A mark sent for an option (its vol moves it).
    MarkOfOption { instrument: String },
    /// A vol sent for an instrument that is not an option on the underlying named.
    NotAnOption {
        instrument: String,
        underlying: String,
    },
    /// A settlement price that is negative or not finite.
    SettlementPrice { price: f64 },
    /// A settlement or funding of an instrument nobody holds.
    NoPosition {
        event: &'static str,
        instrument: String,
    },
    /// A settlement of a perpetual.
    PerpetualSettlement,
    /// A funding rate of 1 or more in size, or not finite.
    FundingRate { rate: f64 },
    /// A funding of an instrument that is not a perpetual.
    NotPerpetual { instrument: String },
    /// The settlement asset is not in the book.
    NoSettlementAsset { asset: String },
    /// An instrument name that does not parse.
    InvalidInstrument(String),
    /// The book refused the event's input (an instrument or asset it cannot price, an account
    /// it cannot evaluate).
    Input(Box<InputError>),
    /// The parameter set of an `activate_params` event cannot be read or margined with.
    InvalidParams(Box<InputError>),
    /// An attestation refused (`engine::attested`): `label` is `attestation_` and why
    /// (`forged`, `replayed`, `expired`, `stale`, `unknown_protocol`); [`RejectReason::label`]
    /// prefixes it with `attestation_`.
    Attestation { label: &'static str, detail: String },
}

impl RejectReason {
    /// A short, stable name of the kind of refusal (a metrics label).
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::NotPositive { .. } => "not_positive",
            RejectReason::TooLarge { .. } => "too_large",
            RejectReason::InvalidTrade => "invalid_trade",
            RejectReason::TooManyInstruments { .. } => "too_many_instruments",
            RejectReason::PriceBand { .. } => "price_band",
            RejectReason::SelfTrade => "self_trade",
            RejectReason::UnknownAccount { .. } => "unknown_account",
            RejectReason::InvalidAccountId { .. } => "invalid_account_id",
            RejectReason::NoBalance { .. } => "no_balance",
            RejectReason::StaleIndex { .. } => "stale_index",
            RejectReason::BelowInitialMargin { .. } => "initial_margin",
            RejectReason::UnknownUnderlying { .. } => "unknown_underlying",
            RejectReason::NoOracle { .. } => "no_oracle",
            RejectReason::InvalidQuote(_) => "invalid_quote",
            RejectReason::MarkOfOption { .. } => "mark_of_option",
            RejectReason::NotAnOption { .. } => "not_an_option",
            RejectReason::SettlementPrice { .. } => "settlement_price",
            RejectReason::NoPosition { .. } => "no_position",
            RejectReason::PerpetualSettlement => "perpetual_settlement",
            RejectReason::FundingRate { .. } => "funding_rate",
            RejectReason::NotPerpetual { .. } => "not_perpetual",
            RejectReason::NoSettlementAsset { .. } => "no_settlement_asset",
            RejectReason::InvalidInstrument(_) => "invalid_instrument",
            RejectReason::Input(_) => "invalid_input",
            RejectReason::InvalidParams(_) => "invalid_params",
            RejectReason::Attestation { label, .. } => match *label {
                "forged" => "attestation_forged",
                "replayed" => "attestation_replayed",
                "expired" => "attestation_expired",
                "stale" => "attestation_stale",
                _ => "attestation_unknown_protocol",
            },
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::NotPositive { what, value } => {
                write!(f, "{what} must be positive and finite, got {value}")
            }
            RejectReason::TooLarge { what, value, max } => {
                write!(f, "{what} {value} exceeds the largest allowed, {max:e}")
            }
            RejectReason::InvalidTrade => f.write_str(
                "trade: size must be finite and nonzero, price and fee finite and non-negative",
            ),
            RejectReason::TooManyInstruments { underlying, listed } => write!(
                f,
                "trade: {underlying} already lists {listed} instruments, the most allowed"
            ),
            RejectReason::PriceBand {
                instrument,
                price,
                mark,
                deviation,
                underlying,
            } => {
                // The band as the check computed it (the same expressions, the same bits).
                let (low, high) = (mark * (1.0 - deviation), mark * (1.0 + deviation));
                write!(
                f,
                "{PRICE_BAND_REJECTION}: {price} for {instrument}, whose mark is {mark}; a fill \
                 may be at most {deviation} (max_fill_deviation of {underlying}) from it, \
                 within [{low}, {high}]"
            )
            }
            RejectReason::SelfTrade => f.write_str("trade: an account cannot trade with itself"),
            RejectReason::UnknownAccount { event, account } => {
                write!(f, "{event}: no account `{account}`")
            }
            RejectReason::InvalidAccountId { id } => write!(
                f,
                "account id `{id}` must be 1 to 64 characters of A-Z a-z 0-9 _ . : -"
            ),
            RejectReason::NoBalance { account, asset } => {
                write!(f, "withdrawal: account `{account}` holds no {asset}")
            }
            RejectReason::StaleIndex { underlying, health } => write!(
                f,
                "{STALE_INDEX_REJECTION}: the {underlying} index is not trusted ({}); withdrawals \
                 priced on it are refused until it is fresh",
                health.map_or("unknown", Health::as_str)
            ),
            RejectReason::BelowInitialMargin { account } => {
                write!(f, "account {account} would be below initial margin")
            }
            RejectReason::UnknownUnderlying { underlying } => {
                write!(f, "unknown underlying {underlying}: it has no parameters")
            }
            RejectReason::NoOracle { event } => {
                write!(f, "{event}: the engine has no oracle configured")
            }
            RejectReason::InvalidQuote(e) => write!(f, "quote: {e}"),
            RejectReason::MarkOfOption { instrument } => {
                write!(f, "mark: {instrument} is an option; send its vol instead")
            }
            RejectReason::NotAnOption {
                instrument,
                underlying,
            } => write!(f, "vol: {instrument} is not an option on {underlying}"),
            RejectReason::SettlementPrice { price } => write!(
                f,
                "settlement: price must be finite and non-negative, got {price}"
            ),
            RejectReason::NoPosition { event, instrument } => {
                write!(f, "{event}: no position in {instrument}")
            }
            RejectReason::PerpetualSettlement => {
                f.write_str("settlement: a perpetual never expires")
            }
            RejectReason::FundingRate { rate } => write!(
                f,
                "funding: rate must be finite and below 1 in size, got {rate}"
            ),
            RejectReason::NotPerpetual { instrument } => {
                write!(f, "funding: {instrument} is not a perpetual")
            }
            RejectReason::NoSettlementAsset { asset } => {
                write!(f, "settlement asset {asset} is not in the book")
            }
            RejectReason::InvalidInstrument(message) => f.write_str(message),
            RejectReason::Input(e) | RejectReason::InvalidParams(e) => write!(f, "{e}"),
            RejectReason::Attestation { label, detail } => {
                write!(f, "{ATTESTATION_REJECTION} {label}: {detail}")
            }
        }
    }
}

/// A refused event: why, and for a margin refusal the requirement and what covered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub required: Option<f64>,
    pub available: Option<f64>,
}

impl From<RejectReason> for Rejection {
    fn from(reason: RejectReason) -> Self {
        Rejection {
            reason,
            required: None,
            available: None,
        }
    }
}

impl From<Rejection> for Output {
    fn from(r: Rejection) -> Self {
        Output::Rejected {
            reason: r.reason.to_string(),
            required: r.required,
            available: r.available,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reason.fmt(f)
    }
}
