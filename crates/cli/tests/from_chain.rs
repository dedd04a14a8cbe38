//! `pmargin external from-chain` against the feeds crate's recorded node (a loopback HTTP
//! server answering fixtures/onchain_calls.json): the list it prints is what the portfolio
//! reader and the margin computation take, and bad input exits 2 naming the flag or field.

#[path = "../../feeds/tests/common/node.rs"]
mod node;

use node::Node;
use std::process::{Command, Output};

const HOLDER: &str = "0x00000000000000000000000000000000000A11CE";

fn pmargin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmargin"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn from_chain(url: &str, extra: &[&str]) -> Output {
    let mut args = vec!["external", "from-chain", "--rpc", url, "--holder", HOLDER];
    args.extend_from_slice(extra);
    pmargin(&args)
}

/// The output of a command that succeeded (stdout, stderr).
fn succeeded(o: &Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (String::from_utf8(o.stdout.clone()).unwrap(), stderr)
}

fn refused(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_read_prints_a_portfolio_that_margins() {
    let node = Node::start();
    let out = from_chain(
        &node.url(),
        &[
            "--uniswap-position",
            "2",
            "--aave-atoken",
            "0x4d5F47FA6A74757f35C14fD3a6Ef8E3C9BC514E8",
            "--aave-debt",
            "0x72E95b8931767C79bA4EeE721354d6E99a61D004",
            "--name",
            "WETH=ETH",
            "--quote",
            "USDC",
            "--account",
            "lp",
        ],
    );
    let (text, stderr) = succeeded(&out);
    assert!(stderr.contains("at block 21000000"), "{stderr}");
    let portfolio = pmargin_core::Portfolio::parse("stdout", &text).unwrap();
    let account = &portfolio.accounts[0];
    assert_eq!(account.id, "lp");
    let kinds: Vec<_> = account.external.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        ["uniswap_v3_lp", "lending_deposit", "lending_borrow"]
    );

    // Margined with USDC cash against ETH 3000: section 12 by hand. LP at 3000 (ETH 2499.91…
    // to 3601.09…, L 10480): 16.69763409979041 ETH + 50022.29515593571 USDC =
    // 100115.1974553069; the deposit 100.5 ETH = 301500; the borrow −210000.123456.
    let dir = std::env::temp_dir().join(format!("pmargin-from-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let portfolio = write("portfolio.json", &text);
    let market = write(
        "market.json",
        r#"{ "as_of": "2026-11-24T08:00:00Z", "rate": 0.0, "prices": { "ETH": 3000, "USDC": 1 } }"#,
    );
    let params = write(
        "params.json",
        r#"{ "version": 1,
             "underlyings": { "ETH": { "price_scan_range": 0.12, "vol_scan_up": 0.12,
                 "vol_scan_down": 0.12, "standard_im_rate": 0.10, "standard_mm_rate": 0.05 } },
             "collateral": { "USDC": { "haircut": 0.0 }, "ETH": { "haircut": 0.07, "underlying": "ETH" } },
             "external_protocols": { "uniswap-v3": { "haircut": 0.05 }, "aave-v3": { "haircut": 0.02 } } }"#,
    );
    let margin = pmargin(&[
        "margin",
        "--portfolio",
        &portfolio,
        "--market",
        &market,
        "--params",
        &params,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&succeeded(&margin).0).unwrap();
    let account = &report["accounts"][0];
    // Equity counts values in full; the margin balance the LP less the protocol's 5%, the
    // deposit less the protocol's 2% and ETH's 7%, the borrow in full.
    for (field, want) in [
        ("equity", 100115.19745530694 + 301500.0 - 210000.123456),
        (
            "margin_balance",
            100115.19745530694 * 0.95 + 301500.0 * 0.98 * 0.93 - 210000.123456,
        ),
    ] {
        let got = account[field].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-9 * want,
            "{field} {got}, by hand {want}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_an_account_the_external_list_alone_is_printed() {
    let node = Node::start();
    let out = from_chain(&node.url(), &["--uniswap-position", "1"]);
    let list: serde_json::Value = serde_json::from_str(&succeeded(&out).0).unwrap();
    assert_eq!(list[0]["kind"], "uniswap_v3_lp");
    assert_eq!(list[0]["token0"], "ETH");
    assert_eq!(list[0]["token1"], "USDC");
}

#[test]
fn bad_input_exits_2_naming_the_flag_or_the_field() {
    let node = Node::start();
    let url = node.url();
    let err = refused(&from_chain(&url, &["--uniswap-position", "3"]));
    assert!(err.contains("positions(3).liquidity"), "{err}");
    let err = refused(&from_chain(&url, &["--uniswap-position", "5"]));
    assert!(
        err.contains("positions(5).token1") && err.contains("decimals()"),
        "{err}"
    );
    // --block is the block every call is made at: the recording is of block 21000000.
    let at = |block: &str| from_chain(&url, &["--uniswap-position", "1", "--block", block]);
    assert!(succeeded(&at("21000000")).1.contains("at block 21000000"));
    let err = refused(&at("5"));
    assert!(err.contains("ownerOf(1)") && err.contains("0x5"), "{err}");
    let err = refused(&from_chain(&url, &["--uniswap-position", "twelve"]));
    assert!(err.contains("--uniswap-position twelve"), "{err}");
    let err = refused(&from_chain(&url, &["--aave-debt", "0x1234"]));
    assert!(err.contains("--aave-debt 0x1234"), "{err}");
    let err = refused(&from_chain(&url, &[]));
    assert!(err.contains("nothing to read"), "{err}");
    let err = refused(&from_chain(
        &url,
        &["--uniswap-position", "1", "--account", "no spaces"],
    ));
    assert!(err.contains("no spaces"), "{err}");
    let err = refused(&from_chain(
        "https://node.example/",
        &["--uniswap-position", "1"],
    ));
    assert!(err.contains("wss://"), "{err}");
}
