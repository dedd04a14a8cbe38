//! Ethereum JSON-RPC over a WebSocket: the requests the DEX and Chainlink feeds send
//! (`eth_subscribe` to logs, `eth_getLogs`, `eth_call`) and the log notifications and answers
//! they get back. Logs are decoded by their event's ABI in [`crate::uniswap`] and
//! [`crate::chainlink`].

use crate::num::json;
use crate::ParseError;
use alloy_primitives::{Address, Bytes, B256};
use serde::Deserialize;
use serde_json::{json, Value};

/// One log, as `eth_subscription` and `eth_getLogs` give it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
    /// Set when a reorganisation drops the block the log was in: its price never happened.
    #[serde(default)]
    pub removed: bool,
}

/// What an Ethereum JSON-RPC message holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Logs, from a subscription's notification or an `eth_getLogs` answer.
    Logs(Vec<Log>),
    /// The answer to request `id` that is not a list of logs (an `eth_call`'s hex, a
    /// subscription id).
    Answer { id: u64, result: Value },
}

pub fn subscribe_logs(id: u64, addresses: &[Address], topic0: &[B256]) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": "eth_subscribe",
            "params": ["logs", { "address": addresses, "topics": [topic0] }] })
    .to_string()
}

pub fn get_logs(id: u64, addresses: &[Address], topic0: &[B256], from_block: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": "eth_getLogs",
            "params": [{ "address": addresses, "topics": [topic0], "fromBlock": from_block }] })
    .to_string()
}

pub fn call(id: u64, to: Address, data: &[u8]) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": "eth_call",
            "params": [{ "to": to, "data": Bytes::copy_from_slice(data) }, "latest"] })
    .to_string()
}

pub fn parse(venue: &'static str, text: &str) -> Result<Message, ParseError> {
    let msg = json(venue, text)?;
    if let Some(err) = msg.get("error") {
        return Err(ParseError::new(venue, "error", err.to_string()));
    }
    let logs = |v: &Value| -> Result<Vec<Log>, ParseError> {
        serde_json::from_value::<Vec<Log>>(v.clone())
            .map_err(|e| ParseError::new(venue, "result", format!("is not a list of logs ({e})")))
    };
    if msg.get("method").and_then(Value::as_str) == Some("eth_subscription") {
        let result = msg
            .pointer("/params/result")
            .ok_or_else(|| ParseError::new(venue, "params.result", "is missing"))?;
        return Ok(Message::Logs(logs(&Value::Array(vec![result.clone()]))?));
    }
    let id = msg.get("id").and_then(Value::as_u64).ok_or_else(|| {
        ParseError::new(
            venue,
            "id",
            "is missing: neither a notification nor an answer",
        )
    })?;
    let result = msg.get("result").cloned().unwrap_or(Value::Null);
    if result.is_array() {
        return Ok(Message::Logs(logs(&result)?));
    }
    Ok(Message::Answer { id, result })
}
