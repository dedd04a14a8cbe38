//! Positions read from chain (issue 20, part 4) against recorded `eth_call` answers written
//! from the contracts' ABIs (fixtures/onchain_calls.json), served by a loopback node.
//!
//! Expected values come from outside the code: the selectors are the published ones; the
//! Uniswap v3 book's worked position (ticks 84222/86129 for prices 4545/5500, liquidity
//! 1517882343751509868544, depositing 0.998976618347425280 ETH and 5000 USDC at 5000); a
//! published pool state (tick 202694 beside its sqrtPriceX96); and values computed by hand in
//! 60-digit decimal arithmetic (Python's `decimal`, `1.0001 ** tick × 10^(d0 − d1)`, liquidity
//! over `10^((d0 + d1)/2)`).

mod common {
    pub mod node;
}

use alloy_primitives::{address, Address, U256};
use common::node::{answer_once, Node, Recorded};
use pmargin_core::external::lp_amounts;
use pmargin_core::input::portfolio::{ExternalPosition, LendingPosition, LiquidityPosition};
use pmargin_feeds::onchain::nonfungible::{self, MAINNET_POSITION_MANAGER};
use pmargin_feeds::onchain::rpc::{self, Rpc, Transport};
use pmargin_feeds::onchain::{aave, erc20, read, Names, Request};
use pmargin_feeds::ParseError;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const HOLDER: Address = address!("00000000000000000000000000000000000A11CE");
const AWETH: Address = address!("4d5F47FA6A74757f35C14fD3a6Ef8E3C9BC514E8");
const VDUSDC: Address = address!("72E95b8931767C79bA4EeE721354d6E99a61D004");

impl Transport for Recorded {
    fn send(&mut self, request: &str) -> Result<String, ParseError> {
        Ok(self.answer(request))
    }
}

fn request(ids: &[u64]) -> Request {
    Request {
        holder: HOLDER,
        position_manager: MAINNET_POSITION_MANAGER,
        uniswap_positions: ids.iter().map(|&i| U256::from(i)).collect(),
        atokens: vec![],
        debt_tokens: vec![],
        names: Names::default(),
        quote: vec![],
        uniswap_protocol: "uniswap-v3".into(),
        lending_protocol: "aave-v3".into(),
    }
}

/// Reads `req` from the recording (no socket), at its block.
fn read_recorded(req: &Request) -> Result<Vec<ExternalPosition>, ParseError> {
    let recorded = Recorded::load();
    let mut rpc = Rpc::new(recorded.clone());
    rpc.pin_latest()?;
    read(&mut rpc, req)
}

fn lp(p: &ExternalPosition) -> &LiquidityPosition {
    match p {
        ExternalPosition::UniswapV3Lp(lp) => lp,
        other => panic!("not an LP: {other:?}"),
    }
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        ((got - want) / want).abs() <= rel,
        "{what}: got {got}, want {want} (relative tolerance {rel})"
    );
}

#[test]
fn selectors_are_the_published_ones() {
    let published: [(&str, [u8; 4]); 6] = [
        ("positions(uint256)", [0x99, 0xfb, 0xab, 0x88]),
        ("ownerOf(uint256)", [0x63, 0x52, 0x21, 0x1e]),
        ("decimals()", [0x31, 0x3c, 0xe5, 0x67]),
        ("symbol()", [0x95, 0xd8, 0x9b, 0x41]),
        ("balanceOf(address)", [0x70, 0xa0, 0x82, 0x31]),
        ("UNDERLYING_ASSET_ADDRESS()", [0xb1, 0x6a, 0x19, 0xde]),
    ];
    let ours: Vec<_> = nonfungible::SELECTORS
        .iter()
        .chain(&erc20::SELECTORS)
        .chain(&aave::SELECTORS)
        .copied()
        .collect();
    for (name, selector) in published {
        let got = ours.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
        assert_eq!(got, Some(selector), "{name}");
    }
}

#[test]
fn the_uniswap_book_position_is_read_over_http_as_the_book_computed_it() {
    let node = Node::start();
    let transport = rpc::connect(&node.url(), Duration::from_secs(5)).unwrap();
    let mut rpc = Rpc::new(transport);
    assert_eq!(rpc.pin_latest().unwrap(), node.recorded.block());
    let out = read(&mut rpc, &request(&[1])).unwrap();
    assert_eq!(out.len(), 1);
    let p = lp(&out[0]);
    assert_eq!(
        (p.protocol.as_str(), p.token0.as_str(), p.token1.as_str()),
        ("uniswap-v3", "ETH", "USDC")
    );
    // By hand: 1.0001^84222, 1.0001^86129 (both tokens 18 decimals), 1517882343751509868544/1e18.
    close(p.price_lower, 4544.981417625121, 1e-12, "price_lower");
    close(p.price_upper, 5499.813071854862, 1e-12, "price_upper");
    close(p.liquidity, 1517.88234375151, 1e-14, "liquidity");
    // The book: the ticks are the prices 4545 and 5500 rounded down to a tick.
    assert!(p.price_lower <= 4545.0 && p.price_lower * 1.0001 > 4545.0);
    assert!(p.price_upper <= 5500.0 && p.price_upper * 1.0001 > 5500.0);
    // ... and the liquidity deposits its amounts at 5000 (from 4545/5500, so within a tick).
    let (x, y) = lp_amounts(p.liquidity, p.price_lower, p.price_upper, 5000.0);
    close(x, 0.9989766183474253, 5e-4, "ETH at 5000, book");
    close(y, 5000.0, 5e-4, "USDC at 5000, book");
    // By hand from the ticks: L(1/sqrt(5000) − 1/sqrt(pb)), L(sqrt(5000) − sqrt(pa)).
    close(x, 0.9986288021151428, 1e-11, "ETH at 5000");
    close(y, 5000.2091909204856, 1e-11, "USDC at 5000");
}

#[test]
fn a_mainnet_usdc_weth_position_is_turned_round_to_quote_eth_in_usdc() {
    let mut req = request(&[2]);
    req.names.insert("WETH", "ETH").unwrap();
    // Chain order: token0 USDC (6 decimals), token1 WETH (18), priced in WETH per USDC.
    let chain = read_recorded(&req).unwrap();
    let p = lp(&chain[0]);
    assert_eq!((p.token0.as_str(), p.token1.as_str()), ("USDC", "ETH"));
    close(p.price_lower, 2.776933248742835e-4, 1e-12, "price_lower");
    close(p.price_upper, 4.000138246186782e-4, 1e-12, "price_upper");
    close(p.liquidity, 10480.0, 1e-14, "liquidity");
    // Quoted in USDC, it is FORMATS.md's example position: ETH 2500-3601 USDC, L = 10480.
    req.quote = vec!["USDC".into()];
    let quoted = read_recorded(&req).unwrap();
    let q = lp(&quoted[0]);
    assert_eq!((q.token0.as_str(), q.token1.as_str()), ("ETH", "USDC"));
    close(q.price_lower, 2499.9135991194094, 1e-12, "price_lower");
    close(q.price_upper, 3601.094842494745, 1e-12, "price_upper");
    close(q.liquidity, 10480.0, 1e-14, "liquidity");
    // Either way round it holds the same tokens, worth the same.
    let price = |t: &str| if t == "ETH" { 3000.0 } else { 1.0 };
    let (a, b) = (
        chain[0].holding().value(price),
        quoted[0].holding().value(price),
    );
    close(a, b, 1e-12, "value both ways round");
    // By hand at 3000: 10480 (1/sqrt(3000) − 1/sqrt(3601.09…)) = 16.69763409979041 ETH and
    // 10480 (sqrt(3000) − sqrt(2499.91…)) = 50022.29515593571 USDC.
    close(b, 100115.19745530694, 1e-12, "value at 3000");
}

#[test]
fn aave_balances_are_scaled_by_decimals_and_named_by_their_underlying() {
    let mut req = request(&[]);
    req.atokens = vec![AWETH];
    req.debt_tokens = vec![VDUSDC];
    req.names.insert("WETH", "ETH").unwrap();
    let out = read_recorded(&req).unwrap();
    assert_eq!(
        out,
        vec![
            ExternalPosition::LendingDeposit(LendingPosition {
                protocol: "aave-v3".into(),
                asset: "ETH".into(),
                amount: 100.5,
            }),
            ExternalPosition::LendingBorrow(LendingPosition {
                protocol: "aave-v3".into(),
                asset: "USDC".into(),
                amount: 210000.123456,
            }),
        ]
    );
}

#[test]
fn every_call_is_at_one_block_and_each_token_is_read_once() {
    let node = Node::start();
    let mut rpc = Rpc::new(rpc::connect(&node.url(), Duration::from_secs(5)).unwrap());
    rpc.pin_latest().unwrap();
    let mut req = request(&[2, 1]);
    req.atokens = vec![AWETH];
    req.debt_tokens = vec![VDUSDC];
    let out = read(&mut rpc, &req).unwrap();
    assert_eq!(out.len(), 4);
    // The recording answers a call at another block with an error, so none was.
    let r = &node.recorded;
    let usdc_decimals = r.times_asked("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "0x313ce567");
    assert_eq!(
        usdc_decimals, 1,
        "USDC's decimals, read for the LP and the debt"
    );
    // The address renames a token before its symbol would: an address wins.
    let mut req = request(&[2]);
    req.names.insert("WETH", "wrapped").unwrap();
    req.names
        .insert("0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2", "ETH")
        .unwrap();
    assert_eq!(lp(&read_recorded(&req).unwrap()[0]).token1, "ETH");
}

/// Reading position `id` fails with an error that says every one of `says`.
fn refused(id: u64, says: &[&str]) {
    let err = read_recorded(&request(&[id])).unwrap_err().to_string();
    for part in says {
        assert!(err.contains(part), "position {id}: `{part}` not in: {err}");
    }
}

#[test]
fn a_withdrawn_position_is_refused_naming_its_liquidity() {
    refused(3, &["positions(3).liquidity", "is 0"]);
}

#[test]
fn a_malformed_answer_is_refused_naming_the_call() {
    refused(4, &["positions(4)", "not an answer of positions()"]);
    refused(7, &["positions(7)", "not hex"]);
}

#[test]
fn a_token_without_decimals_is_refused_naming_it() {
    // One whose decimals() reverts, one at an address without code (an empty answer).
    for (id, role, token, why) in [
        (
            5,
            "token1",
            "0x3333333333333333333333333333333333333333",
            "execution reverted",
        ),
        (
            9,
            "token0",
            "0x4444444444444444444444444444444444444444",
            "returned nothing",
        ),
    ] {
        let field = format!("positions({id}).{role}");
        refused(id, &[&field, token, "decimals()", why]);
    }
}

#[test]
fn a_position_of_someone_else_or_of_no_one_is_refused() {
    refused(6, &["ownerOf(6)", "not the holder"]);
    refused(8, &["ownerOf(8)", "nonexistent token"]);
}

#[test]
fn a_node_that_cannot_be_reached_is_an_error_naming_the_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let mut rpc = Rpc::new(rpc::connect(&url, Duration::from_secs(2)).unwrap());
    let err = rpc.pin_latest().unwrap_err().to_string();
    assert!(
        err.contains("connection") && err.contains("cannot connect"),
        "{err}"
    );
}

#[test]
fn a_url_that_names_no_node_is_refused_naming_it() {
    let err = |url: &str| {
        rpc::connect(url, Duration::from_secs(1))
            .err()
            .unwrap_or_else(|| panic!("{url} was taken"))
            .to_string()
    };
    let e = err("http://host:port/");
    assert!(e.contains("url") && e.contains("is not a URL"), "{e}");
    let e = err("ftp://node.local/");
    assert!(e.contains("the scheme must be"), "{e}");
    #[cfg(not(feature = "tls"))]
    {
        let e = err("https://mainnet.example/key");
        assert!(e.contains("`tls` feature") && e.contains("http://"), "{e}");
    }
    // With TLS built, an https:// URL is a client (no connection is made until a request).
    #[cfg(feature = "tls")]
    assert!(rpc::connect("https://mainnet.example/key", Duration::from_secs(1)).is_ok());
}

/// The error of `eth_blockNumber` asked of a node that answers with `write`.
fn block_number_from(
    timeout: Duration,
    write: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
) -> Result<u64, ParseError> {
    let (url, server) = answer_once(write);
    // The client goes (and its connection closes) before the node's thread is waited for.
    let answer = Rpc::new(rpc::connect(&url, timeout).unwrap()).pin_latest();
    server.join().unwrap();
    answer
}

#[test]
fn a_chunked_answer_is_read_whole() {
    let answer = r#"{"jsonrpc":"2.0","id":1,"result":"0x10"}"#;
    let block = block_number_from(Duration::from_secs(5), move |s| {
        let (a, b) = answer.split_at(17);
        let chunk = |part: &str| format!("{:x}\r\n{part}\r\n", part.len());
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}{}0\r\n\r\n",
            chunk(a),
            chunk(b)
        );
    });
    assert_eq!(block.unwrap(), 16);
}

#[test]
fn a_refusal_by_http_status_is_an_error_quoting_the_node() {
    let err = block_number_from(Duration::from_secs(5), |s| {
        let _ = s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\nConnection: close\r\n\r\nno key",
        );
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("401") && err.contains("no key"), "{err}");
}

#[test]
fn an_answer_longer_than_16_mib_is_refused_before_its_end() {
    let err = block_number_from(Duration::from_secs(20), |s| {
        // 17 MiB in 1 MiB chunks, with no length announced: only the cap stops the read.
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, " ".repeat(1 << 20));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..17 {
            if s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
    })
    .unwrap_err()
    .to_string();
    // 16 MiB = 16 × 2^20 = 16777216 bytes.
    assert!(err.contains("longer than 16777216 bytes"), "{err}");
}

#[test]
fn a_node_that_never_answers_is_given_up_on_in_time() {
    let start = Instant::now();
    let err = block_number_from(Duration::from_millis(300), |s| {
        // Holds the connection, silent, until the client leaves.
        let _ = s.read(&mut [0u8; 1]);
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no answer in time"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_published_pool_state_agrees_with_the_tick_price() {
    // The USDC/WETH 0.05% pool (0x88e6…5640) as The Graph gave it: tick 202694 and
    // sqrtPrice 1995791025043001032341104211323643; USDC 6 decimals, WETH 18. The price of
    // USDC in WETH is (sqrtPrice / 2^96)^2 × 10^(6 − 18), the tick the floor of its log.
    let root = 1_995_791_025_043_001_032_341_104_211_323_643f64 / 2f64.powi(96);
    let from_sqrt = root * root * 1e-12;
    let at_tick = nonfungible::tick_price(202_694, 6, 18);
    assert!(at_tick <= from_sqrt && from_sqrt < at_tick * 1.0001);
    // ETH at about 1575.9 USDC then.
    close(1.0 / from_sqrt, 1575.901383847488, 1e-12, "ETH in USDC");
}

proptest! {
    /// Section 12 is symmetric in the two tokens: a position read the chain's way round and
    /// turned round holds the same tokens at any prices.
    #[test]
    fn turning_a_position_round_keeps_its_tokens(
        lower in -400_000i32..400_000,
        width in 1i32..200_000,
        liquidity in 1u128..(1u128 << 100),
        d0 in 0u8..=24,
        d1 in 0u8..=24,
        move_ in -3.0f64..3.0,
    ) {
        let raw = nonfungible::RawPosition {
            token0: Address::repeat_byte(1),
            token1: Address::repeat_byte(2),
            tick_lower: lower,
            tick_upper: lower + width,
            liquidity,
        };
        let t = |a, d| erc20::Token { address: a, symbol: String::new(), decimals: d };
        let (t0, t1) = (t(raw.token0, d0), t(raw.token1, d1));
        let make = |invert| nonfungible::liquidity_position(
            U256::from(9), &raw, (&t0, &t1), ("A", "B"), "uniswap-v3", invert).unwrap();
        let (a, b) = (make(false), make(true));
        let mid = (a.price_lower * a.price_upper).sqrt() * move_.exp();
        let price = |token: &str| if token == "A" { mid } else { 1.0 };
        let holding = |p: LiquidityPosition| ExternalPosition::UniswapV3Lp(p);
        let amounts = |p: &ExternalPosition| {
            let mut out = p.holding().amounts(price);
            out.sort_by(|x, y| x.0.cmp(y.0));
            out.map(|(token, x)| (token.to_string(), x))
        };
        let (ha, hb) = (holding(a), holding(b));
        for ((ta, xa), (tb, xb)) in amounts(&ha).into_iter().zip(amounts(&hb)) {
            prop_assert_eq!(&ta, &tb);
            prop_assert!((xa - xb).abs() <= 1e-9 * xa.abs().max(xb.abs()) + 1e-300,
                "{}: {} vs {}", ta, xa, xb);
        }
    }
}

/// The recording served over one WebSocket on loopback, for one client; the server's thread
/// ends when the client leaves.
fn ws_node() -> (String, std::thread::JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let recorded = Recorded::load();
            while let Some(Ok(Message::Text(request))) = ws.next().await {
                let answer = recorded.answer(&request);
                if ws.send(Message::text(answer)).await.is_err() {
                    return;
                }
            }
        });
    });
    (url, thread)
}

#[test]
fn a_websocket_node_is_read_on_one_connection() {
    let (url, server) = ws_node();
    {
        let mut rpc = Rpc::new(rpc::connect(&url, Duration::from_secs(5)).unwrap());
        rpc.pin_latest().unwrap();
        let mut req = request(&[1]);
        req.atokens = vec![AWETH];
        let out = read(&mut rpc, &req).unwrap();
        assert_eq!(lp(&out[0]).token0, "ETH");
        assert_eq!(out.len(), 2);
    }
    // The server took one connection only: every call went over it.
    server.join().unwrap();
}
