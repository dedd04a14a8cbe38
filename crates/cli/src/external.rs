//! `pmargin external from-chain` (issue 20): an account's positions in other protocols read
//! from an Ethereum node, printed as the portfolio's `external` list (docs/FORMATS.md).
//!
//! The node is only the URL given; every call is made at one block (`--block`, or the node's
//! newest), named on stderr so that a read can be repeated. The list is checked by the
//! portfolio reader before it is printed, so what comes out is what `margin` reads.

use crate::commands::CliError;
use clap::{Args, Subcommand};
use pmargin_feeds::onchain::nonfungible::MAINNET_POSITION_MANAGER;
use pmargin_feeds::onchain::rpc::{self, Rpc};
use pmargin_feeds::onchain::{self as onchain, Names, Request};
use std::time::Duration;

#[derive(Subcommand)]
pub enum ExternalCommand {
    /// Read Uniswap v3 positions and Aave v3 deposits and borrows from an Ethereum node and
    /// print them as a portfolio's `external` list
    #[command(
        name = "from-chain",
        after_help = "Example:\n  pmargin external from-chain --rpc http://127.0.0.1:8545 \\\n      \
            --holder 0x00000000000000000000000000000000000A11CE --uniswap-position 1234 \\\n      \
            --aave-atoken 0x4d5F47FA6A74757f35C14fD3a6Ef8E3C9BC514E8 \\\n      \
            --aave-debt 0x72E95b8931767C79bA4EeE721354d6E99a61D004 \\\n      \
            --name WETH=ETH --quote USDC --account alice\n\n\
            A token is named by its symbol() unless --name renames it; every name must be in the\n\
            parameters' `collateral`. Prices of a liquidity position are of its token0 in token1\n\
            (docs/MODEL.md section 12): the chain's order unless --quote turns it round."
    )]
    FromChain(FromChainArgs),
}

#[derive(Args)]
pub struct FromChainArgs {
    /// The Ethereum node's JSON-RPC URL: http://, ws:// or wss:// (wss:// needs a build with
    /// pmargin-feeds' `tls` feature)
    #[arg(long, value_name = "URL")]
    pub rpc: String,
    /// The account's address: owner of the Uniswap positions, holder of the Aave balances
    #[arg(long, value_name = "ADDRESS")]
    pub holder: String,
    /// A Uniswap v3 position's token id (repeatable)
    #[arg(long = "uniswap-position", value_name = "TOKEN_ID")]
    pub uniswap_positions: Vec<String>,
    /// An Aave v3 aToken: the holder's deposit of its underlying asset (repeatable)
    #[arg(long = "aave-atoken", value_name = "ADDRESS")]
    pub atokens: Vec<String>,
    /// An Aave v3 variable-debt token: the holder's borrow of its underlying (repeatable)
    #[arg(long = "aave-debt", value_name = "ADDRESS")]
    pub debt_tokens: Vec<String>,
    /// Rename a token, by symbol or address, to its portfolio name: SYMBOL=NAME or
    /// ADDRESS=NAME (repeatable), e.g. WETH=ETH
    #[arg(long = "name", value_name = "KEY=NAME")]
    pub names: Vec<String>,
    /// A token that liquidity positions are quoted in (a portfolio name, repeatable): a
    /// position whose chain token0 it is becomes token1, prices inverted
    #[arg(long = "quote", value_name = "NAME")]
    pub quote: Vec<String>,
    /// Print a whole portfolio (one account with this id and the `external` list) instead of
    /// the list alone
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// Read at this block number (default: the node's newest)
    #[arg(long, value_name = "NUMBER")]
    pub block: Option<u64>,
    /// The Uniswap v3 NonfungiblePositionManager
    #[arg(long, value_name = "ADDRESS", default_value_t = MAINNET_POSITION_MANAGER.to_string())]
    pub position_manager: String,
    /// The protocol the liquidity positions are under in the parameters' `external_protocols`
    #[arg(long, value_name = "NAME", default_value = "uniswap-v3")]
    pub uniswap_protocol: String,
    /// The protocol the deposits and borrows are under in `external_protocols`
    #[arg(long, value_name = "NAME", default_value = "aave-v3")]
    pub lending_protocol: String,
    /// Give up on a node that does not answer a call within this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout_s: u64,
}

fn input(flag: &str, value: &str, reason: impl std::fmt::Display) -> CliError {
    CliError::Input(format!("--{flag} {value}: {reason}"))
}

fn parse_all<T: std::str::FromStr>(flag: &str, values: &[String]) -> Result<Vec<T>, CliError>
where
    T::Err: std::fmt::Display,
{
    values
        .iter()
        .map(|v| v.parse::<T>().map_err(|e| input(flag, v, e)))
        .collect()
}

fn request(args: &FromChainArgs) -> Result<Request, CliError> {
    let address = |flag: &str, v: &str| v.parse().map_err(|e| input(flag, v, e));
    let mut names = Names::default();
    for pair in &args.names {
        let (key, name) = pair
            .split_once('=')
            .ok_or_else(|| input("name", pair, "is not KEY=NAME"))?;
        names
            .insert(key, name)
            .map_err(|e| input("name", pair, e))?;
    }
    let request = Request {
        holder: address("holder", &args.holder)?,
        position_manager: address("position-manager", &args.position_manager)?,
        uniswap_positions: parse_all("uniswap-position", &args.uniswap_positions)?,
        atokens: parse_all("aave-atoken", &args.atokens)?,
        debt_tokens: parse_all("aave-debt", &args.debt_tokens)?,
        names,
        quote: args.quote.clone(),
        uniswap_protocol: args.uniswap_protocol.clone(),
        lending_protocol: args.lending_protocol.clone(),
    };
    if request.uniswap_positions.is_empty()
        && request.atokens.is_empty()
        && request.debt_tokens.is_empty()
    {
        return Err(CliError::Input(
            "nothing to read: give --uniswap-position, --aave-atoken or --aave-debt".into(),
        ));
    }
    Ok(request)
}

pub fn run(command: &ExternalCommand) -> Result<String, CliError> {
    let ExternalCommand::FromChain(args) = command;
    let request = request(args)?;
    let node_error = |e: pmargin_feeds::ParseError| CliError::Input(format!("{}: {e}", args.rpc));
    let transport =
        rpc::connect(&args.rpc, Duration::from_secs(args.timeout_s.max(1))).map_err(node_error)?;
    let mut rpc = Rpc::new(transport);
    let block = match args.block {
        Some(number) => {
            rpc.at_block(number);
            number
        }
        None => rpc.pin_latest().map_err(node_error)?,
    };
    let external = onchain::read(&mut rpc, &request).map_err(node_error)?;
    eprintln!(
        "pmargin: {} position(s) read at block {block} from {}",
        external.len(),
        args.rpc
    );
    let id = args.account.as_deref().unwrap_or("from-chain");
    let portfolio = serde_json::json!({ "accounts": [{ "id": id, "external": external }] });
    // What the portfolio reader refuses (a name that is no account id, a position section 12
    // does not allow) is refused here, before anyone merges it.
    pmargin_core::Portfolio::parse("the positions read", &portfolio.to_string())?;
    let out = match &args.account {
        Some(_) => serde_json::to_string_pretty(&portfolio),
        None => serde_json::to_string_pretty(&external),
    };
    out.map(|s| s + "\n")
        .map_err(|e| CliError::Internal(e.to_string()))
}
