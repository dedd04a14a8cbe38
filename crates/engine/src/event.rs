//! Events: the only way the engine's state changes.
//!
//! The engine is a deterministic state machine: the same sequence of input events always
//! yields the same state and the same outputs, byte for byte. Inputs are what the outside
//! world tells the engine (money moved, a fill, a new price); outputs are what the engine
//! concluded (a status changed, a position was liquidated, the insurance fund paid a deficit).

use pmargin_core::input::portfolio::ExternalPosition;
use pmargin_core::{Params, Status};
use serde::{Deserialize, Serialize};

/// Something that happened outside the engine, in the order it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// Collateral arrives (creates the account if it does not exist).
    Deposit {
        account: String,
        asset: String,
        amount: f64,
    },
    /// Collateral leaves; refused if it would leave the account below initial margin.
    Withdrawal {
        account: String,
        asset: String,
        amount: f64,
    },
    /// A fill of `size` (negative sells) at `price`; with a `counterparty` both sides are
    /// applied together. `fee` is paid by each side to the insurance fund.
    Trade {
        account: String,
        instrument: String,
        size: f64,
        price: f64,
        #[serde(default)]
        fee: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        counterparty: Option<String>,
    },
    /// A new index price of an underlying (from the oracle). Marks of its perpetual and
    /// futures move with it in proportion (their basis to spot is held).
    Price { underlying: String, price: f64 },
    /// A quote from one venue, aggregated by the oracle into the index price. `confidence` is
    /// the venue's own uncertainty of the price in USD (Pyth's `conf`), which becomes the
    /// market's `confidence` (docs/MODEL.md section 11) through the index; `weight` is the
    /// source's weight in the index's weighted median (its feed's, from `feeds.toml`; none: 1).
    /// Both are left out when absent, so the logs written before them read and replay as they
    /// did.
    Quote {
        source: String,
        underlying: String,
        price: f64,
        ts_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confidence: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<f64>,
    },
    /// The oracle's clock: every underlying the oracle tracks is re-assessed at `now_ms`, so a
    /// feed that went quiet makes its index stale (and suspends liquidations on it) even when no
    /// quote arrives. The service logs one when the re-assessment would change something.
    OracleTick { now_ms: i64 },
    /// A new mark of a perpetual or future.
    Mark { instrument: String, price: f64 },
    /// A new default implied vol of an underlying, or (with `instrument`) one option's vol.
    Vol {
        underlying: String,
        vol: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instrument: Option<String>,
    },
    /// A new parameter set takes effect. Read as [`Params::parse`] reads a file (defaults
    /// filled, every rule checked: a set that fails is refused when the event is read), and
    /// written as the JSON object the event log has always held.
    ActivateParams {
        #[serde(with = "params_json")]
        params: Box<Params>,
    },
    /// An expiring future or option settles at `price` (the expiry's settlement index).
    Settlement { instrument: String, price: f64 },
    /// Perpetual funding: longs pay `rate x mark x size` to shorts (negative rate: the reverse).
    Funding { instrument: String, rate: f64 },
    /// Runs a liquidation round now (the engine also runs one after every price change).
    Liquidate,
    /// A position in another protocol, attested by that protocol's attester at nonce `nonce`
    /// until `valid_until` (Unix seconds), accepted at `now_s` (docs/MODEL.md section 12). The
    /// service logs one only after verifying the signature (`POST /v1/external`); the engine
    /// refuses an unknown protocol, an unregistered attester, a used nonce, an expired or a
    /// stale attestation (`engine::attested`). Zero liquidity or amount closes the position.
    Attestation {
        account: String,
        position: ExternalPosition,
        attester: String,
        nonce: u64,
        valid_until: u64,
        now_s: u64,
    },
    /// The attestations' clock: attested deposits and liquidity positions whose attestation
    /// expired before `now_s` stop counting; borrows keep counting.
    AttestationTick { now_s: u64 },
}

/// What the engine concluded while applying an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// The event was refused; nothing changed.
    Rejected {
        reason: String,
        required: Option<f64>,
        available: Option<f64>,
    },
    /// An account's status changed.
    MarginChange {
        account: String,
        from: Status,
        to: Status,
        margin_balance: f64,
        initial_margin: f64,
        maintenance_margin: f64,
    },
    /// Part of a position was taken over by the liquidator at the mark, with a penalty to the fund.
    LiquidationFill {
        account: String,
        instrument: String,
        size: f64,
        price: f64,
        penalty: f64,
    },
    /// Collateral held in another protocol was seized for `receiver` (the liquidator), after the
    /// account's derivatives were closed (`engine::seize`): `position` is the part seized, its
    /// `amount` or `liquidity` what the protocol's controller moves; `value` its worth at
    /// today's prices, credited to the account's settlement balance and paid by the receiver.
    LiquidationSeize {
        account: String,
        receiver: String,
        position: ExternalPosition,
        value: f64,
    },
    /// A bankrupt account was closed out; its deficit was covered by the fund and, beyond it,
    /// by auto-deleveraging.
    CloseOut {
        account: String,
        deficit: f64,
        insurance_paid: f64,
        socialised: f64,
    },
    /// An account's profit was cut to cover a deficit the fund could not.
    Deleveraged { account: String, amount: f64 },
    /// Liquidations on an underlying are suspended (stale or untrusted price) or resumed.
    LiquidationsSuspended { underlying: String, suspended: bool },
    /// A position settled at expiry.
    Settled {
        account: String,
        instrument: String,
        size: f64,
        amount: f64,
    },
}

/// The JSON of an `activate_params` event's parameter set.
///
/// Written through a [`serde_json::Value`], as the event was when it carried one, so the
/// event log's lines keep their bytes.
/// Read with [`Params::parse`], the reading of a parameter file: the sections left out take
/// the documented defaults (the default collateral cut to the set's underlyings) and a set that
/// breaks a rule is an error naming the field.
mod params_json {
    use pmargin_core::Params;
    use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

    /// The file name errors quote (as the engine named the set when it parsed it on activation).
    const SOURCE: &str = "activate_params";

    pub fn serialize<S: Serializer>(params: &Params, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::to_value(params)
            .map_err(ser::Error::custom)?
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Box<Params>, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Params::parse(SOURCE, &value.to_string())
            .map(Box::new)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_from_json_lines_and_refuse_unknown_fields() {
        let e: Event = serde_json::from_str(
            r#"{"type":"trade","account":"a","instrument":"BTC-PERPETUAL","size":1,"price":60000}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            Event::Trade {
                account: "a".into(),
                instrument: "BTC-PERPETUAL".into(),
                size: 1.0,
                price: 60000.0,
                fee: 0.0,
                counterparty: None
            }
        );
        assert!(serde_json::from_str::<Event>(
            r#"{"type":"deposit","account":"a","asset":"USDC","amount":1,"x":2}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Event>(r#"{"type":"teleport"}"#).is_err());
    }
}
