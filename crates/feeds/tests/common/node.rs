//! A recorded Ethereum node: the `eth_call` answers of `fixtures/onchain_calls.json`, given
//! straight to the reader ([`Recorded`] is a transport) or served over HTTP on 127.0.0.1:0
//! ([`Node`], stopped when dropped). A call the recording does not hold, or one at another
//! block than the recording's, is answered with a JSON-RPC error that says so.
//!
//! Shared by the feeds tests and the command line's (crates/cli/tests/from_chain.rs).

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../feeds/tests/fixtures/onchain_calls.json"
);

/// The recording, and what was asked of it.
#[derive(Clone)]
pub struct Recorded {
    block: String,
    /// (to, data), lowercase, to the answer's `result` or `error`.
    answers: Arc<BTreeMap<(String, String), Value>>,
    /// Every (method, to, data) asked, in order.
    pub asked: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Recorded {
    pub fn load() -> Recorded {
        let text = std::fs::read_to_string(FIXTURE).expect("the recorded calls");
        let doc: Value = serde_json::from_str(&text).expect("recorded calls are JSON");
        let mut answers = BTreeMap::new();
        for call in doc["calls"].as_array().expect("calls") {
            let key = (
                call["to"].as_str().unwrap().to_lowercase(),
                call["data"].as_str().unwrap().to_lowercase(),
            );
            answers.insert(key, call.clone());
        }
        Recorded {
            block: doc["block"].as_str().unwrap().to_string(),
            answers: Arc::new(answers),
            asked: Arc::default(),
        }
    }

    pub fn block(&self) -> u64 {
        u64::from_str_radix(self.block.trim_start_matches("0x"), 16).unwrap()
    }

    /// The node's answer to one request's text.
    pub fn answer(&self, request: &str) -> String {
        let req: Value = serde_json::from_str(request).expect("a JSON-RPC request");
        let id = req["id"].clone();
        let method = req["method"].as_str().unwrap_or_default().to_string();
        let error = |message: String| {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32000, "message": message } })
                .to_string()
        };
        match method.as_str() {
            "eth_blockNumber" => {
                self.asked
                    .lock()
                    .unwrap()
                    .push((method, String::new(), String::new()));
                json!({ "jsonrpc": "2.0", "id": id, "result": self.block }).to_string()
            }
            "eth_call" => {
                let to = req["params"][0]["to"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase();
                let data = req["params"][0]["data"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase();
                self.asked
                    .lock()
                    .unwrap()
                    .push((method, to.clone(), data.clone()));
                if req["params"][1] != json!(self.block) {
                    return error(format!(
                        "recorded at block {}, asked at {}",
                        self.block, req["params"][1]
                    ));
                }
                match self.answers.get(&(to.clone(), data.clone())) {
                    Some(call) => match call.get("error") {
                        Some(e) => json!({ "jsonrpc": "2.0", "id": id, "error": e }).to_string(),
                        None => json!({ "jsonrpc": "2.0", "id": id, "result": call["result"] })
                            .to_string(),
                    },
                    None => error(format!("no recorded answer for {to} {data}")),
                }
            }
            other => error(format!("the method {other} does not exist")),
        }
    }

    /// How many `eth_call`s asked `data` of `to` (both as hex, any case).
    pub fn times_asked(&self, to: &str, data: &str) -> usize {
        let (to, data) = (to.to_lowercase(), data.to_lowercase());
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t, d)| *t == to && *d == data)
            .count()
    }
}

/// The recording served as a JSON-RPC node over HTTP on loopback.
pub struct Node {
    pub addr: SocketAddr,
    pub recorded: Recorded,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    pub fn start() -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Recorded::load();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, s, c) = (recorded.clone(), stop.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    c.fetch_add(1, Ordering::SeqCst);
                    serve(stream, &r);
                }
            }
        });
        Node {
            addr,
            recorded,
            stop,
            connections,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP request's body, read from its head's `Content-Length`; `None` if the client left.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

fn serve(stream: TcpStream, recorded: &Recorded) {
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    let answer = recorded.answer(&request);
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// A node on 127.0.0.1:0 for one request, whose answer `write` writes raw (head and all); its
/// URL, and its thread, which ends with the request.
pub fn answer_once(
    write: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        if read_request(&mut reader).is_some() {
            write(&mut reader.into_inner());
        }
    });
    (url, thread)
}
