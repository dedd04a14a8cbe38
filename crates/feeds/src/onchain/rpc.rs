//! A blocking Ethereum JSON-RPC client for one-shot reads (`pmargin external from-chain`):
//! `eth_blockNumber` once, then every `eth_call` at that block, so the positions read together
//! are one state of the chain, not a mix of blocks.
//!
//! The node is only ever the URL the user gives: `http://` and `https://` through reqwest's
//! blocking client, `ws://` and `wss://` through the WebSocket client the feeds use. TLS
//! (`https://`, `wss://`) needs the crate's `tls` feature; without it an `https://` URL is
//! refused with what to give instead. Requests and answers are the shapes of [`crate::eth`]; a
//! [`Transport`] only carries text, so tests can serve recorded answers without a socket.

use crate::eth::{self, Message};
use crate::ParseError;
use alloy_primitives::{hex, Address, Bytes};
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

const VENUE: &str = "ethereum rpc";

/// Carries one JSON-RPC request's text to the node and its answer's text back.
pub trait Transport {
    fn send(&mut self, request: &str) -> Result<String, ParseError>;
}

fn transport_error(what: impl Into<String>, reason: impl std::fmt::Display) -> ParseError {
    ParseError::new(VENUE, what, reason.to_string())
}

/// What went wrong under a reqwest error: its own text only repeats the URL, the causes
/// (refused, timed out, bad certificate) are what the user can act on.
fn causes(e: &reqwest::Error) -> String {
    let mut text = Vec::new();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push(c.to_string());
        cause = c.source();
    }
    if text.is_empty() {
        e.to_string()
    } else {
        text.join(": ")
    }
}

/// The longest answer read: an `eth_call` of a view function answers a few hundred bytes, and
/// a node is not trusted with this process's memory.
const MAX_ANSWER: usize = 16 << 20;

/// The most of a refusal's body quoted in its error.
const MAX_QUOTED: usize = 300;

/// JSON-RPC over HTTP POST.
pub struct Http {
    client: reqwest::blocking::Client,
    url: reqwest::Url,
}

impl Http {
    /// `url`: `http://...`, or `https://...` in a build with the `tls` feature. `timeout`
    /// bounds each request from connecting to the answer's last byte. Not to be called inside
    /// an async runtime (reqwest's blocking client drives its own).
    pub fn new(url: &str, timeout: Duration) -> Result<Http, ParseError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| transport_error("url", format!("{url} is not a URL: {e}")))?;
        // reqwest without its own provider feature takes the process's; ring is the one the
        // `tls` feature builds (an Err only says one was installed already).
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            // The node is the URL given, never a proxy named by the environment.
            .no_proxy()
            .build()
            .map_err(|e| transport_error("connection", causes(&e)))?;
        Ok(Http {
            client,
            url: parsed,
        })
    }
}

impl Transport for Http {
    fn send(&mut self, request: &str) -> Result<String, ParseError> {
        use reqwest::header::{ACCEPT, CONTENT_TYPE};
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(request.to_string())
            .send()
            .map_err(|e| {
                let reason = if e.is_timeout() {
                    format!("{}: no answer in time", self.url)
                } else if e.is_connect() {
                    format!("cannot connect to {}: {}", self.url, causes(&e))
                } else {
                    format!("cannot send to {}: {}", self.url, causes(&e))
                };
                transport_error("connection", reason)
            })?;
        let status = response.status();
        let mut body = Vec::new();
        response
            .take(MAX_ANSWER as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| transport_error("connection", format!("cannot read the answer: {e}")))?;
        if body.len() > MAX_ANSWER {
            return Err(transport_error(
                "answer",
                format!("is longer than {MAX_ANSWER} bytes"),
            ));
        }
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body);
            let quoted: String = body.trim().chars().take(MAX_QUOTED).collect();
            return Err(transport_error(
                "answer",
                format!("HTTP status `{status}`: {quoted}"),
            ));
        }
        String::from_utf8(body).map_err(|_| transport_error("answer", "is not UTF-8 text"))
    }
}

/// JSON-RPC over one WebSocket, kept open for every request of the read.
pub struct WebSocket {
    runtime: tokio::runtime::Runtime,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    timeout: Duration,
}

impl WebSocket {
    /// `url`: `ws://...` or `wss://...`. Not to be called inside an async runtime (it drives
    /// its own).
    pub fn connect(url: &str, timeout: Duration) -> Result<WebSocket, ParseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| transport_error("connection", e))?;
        let socket = runtime
            .block_on(async {
                tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url)).await
            })
            .map_err(|_| transport_error("connection", format!("{url}: no answer in time")))?
            .map_err(|e| transport_error("connection", format!("cannot connect to {url}: {e}")))?
            .0;
        Ok(WebSocket {
            runtime,
            socket,
            timeout,
        })
    }
}

impl Transport for WebSocket {
    fn send(&mut self, request: &str) -> Result<String, ParseError> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message as Frame;
        let socket = &mut self.socket;
        let exchange = async {
            socket
                .send(Frame::text(request))
                .await
                .map_err(|e| transport_error("connection", format!("cannot send: {e}")))?;
            while let Some(frame) = socket.next().await {
                match frame {
                    Ok(Frame::Text(text)) => return Ok(text.to_string()),
                    Ok(Frame::Close(_)) => break,
                    Ok(_) => {}
                    Err(e) => return Err(transport_error("connection", e)),
                }
            }
            Err(transport_error("connection", "closed before the answer"))
        };
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, exchange).await })
            .map_err(|_| transport_error("connection", "no answer in time"))?
    }
}

/// The transport for a node URL the user gave.
pub fn connect(url: &str, timeout: Duration) -> Result<Box<dyn Transport>, ParseError> {
    let https = url.starts_with("https://");
    if url.starts_with("http://") || (https && cfg!(feature = "tls")) {
        Ok(Box::new(Http::new(url, timeout)?))
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        Ok(Box::new(WebSocket::connect(url, timeout)?))
    } else if https {
        Err(transport_error(
            "url",
            format!(
                "{url}: https:// needs a build with the `tls` feature (as wss:// does); give a \
                 node's http:// or ws:// URL"
            ),
        ))
    } else {
        Err(transport_error(
            "url",
            format!("{url}: the scheme must be http://, https://, ws:// or wss://"),
        ))
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, request: &str) -> Result<String, ParseError> {
        (**self).send(request)
    }
}

/// Reads contract state at one block.
pub struct Rpc<T> {
    transport: T,
    next_id: u64,
    /// `latest` until [`Rpc::pin_latest`] fixes it to a number.
    block: Value,
}

impl<T: Transport> Rpc<T> {
    pub fn new(transport: T) -> Rpc<T> {
        Rpc {
            transport,
            next_id: 1,
            block: json!("latest"),
        }
    }

    /// Reads at block `number` from now on.
    pub fn at_block(&mut self, number: u64) {
        self.block = json!(format!("{number:#x}"));
    }

    /// Asks the node for its newest block and reads at it from now on; its number.
    pub fn pin_latest(&mut self) -> Result<u64, ParseError> {
        let result = self.request("eth_blockNumber", json!([]), "eth_blockNumber")?;
        let number = result
            .as_str()
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                transport_error("eth_blockNumber", format!("{result} is not a block number"))
            })?;
        self.at_block(number);
        Ok(number)
    }

    /// `eth_call` of `data` on `to`; its ABI-encoded answer. `what` names the call in errors
    /// (e.g. `token0 0x…: decimals()`).
    pub fn call(&mut self, to: Address, data: Vec<u8>, what: &str) -> Result<Vec<u8>, ParseError> {
        let params = json!([{ "to": to, "data": Bytes::from(data) }, self.block]);
        let result = self.request("eth_call", params, what)?;
        let text = result
            .as_str()
            .ok_or_else(|| transport_error(what, format!("answer {result} is not a hex string")))?;
        let answer = hex::decode(text)
            .map_err(|e| transport_error(what, format!("answer `{text}` is not hex ({e})")))?;
        // What a call to an address without code answers; every call made here returns data.
        if answer.is_empty() {
            return Err(transport_error(
                what,
                format!("returned nothing: {to} holds no contract with this function"),
            ));
        }
        Ok(answer)
    }

    fn request(&mut self, method: &str, params: Value, what: &str) -> Result<Value, ParseError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let text = self.transport.send(&request.to_string())?;
        match eth::parse(VENUE, &text) {
            Ok(Message::Answer { id: got, result }) if got == id => match result {
                Value::Null => Err(transport_error(what, "the node answered no result")),
                result => Ok(result),
            },
            Ok(Message::Answer { id: got, .. }) => Err(transport_error(
                what,
                format!("the node answered request {got}, not {id}"),
            )),
            Ok(Message::Logs(_)) => Err(transport_error(what, "the node answered a list of logs")),
            Err(e) if e.field == "error" => Err(transport_error(
                what,
                format!("the node refused it: {}", e.reason),
            )),
            Err(e) => Err(transport_error(what, e)),
        }
    }
}
