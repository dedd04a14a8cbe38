//! `pmargin sign` and `pmargin verify`: margin results as EIP-712 messages a contract can check.

use crate::commands::CliError;
use crate::Inputs;
use clap::Args;
use pmargin_core::report::ReportOptions;
use pmargin_core::{margin_report, Status};
use pmargin_settlement::{
    account_id, parse_address, parse_hex, to_checksum_address, to_fixed, to_fixed_unsigned,
    verify_from, Eip712Domain, MarginUpdate, NonceCounter, SignedMessage, Signer,
};
use std::path::PathBuf;

/// Where the signatures are valid: the chain and the verifying contract (EIP-712 domain).
#[derive(Args, Clone)]
pub struct DomainArgs {
    /// EIP-155 chain id of the settlement contract
    #[arg(long, default_value_t = 1)]
    pub chain_id: u64,
    /// Address of the verifying contract (0x + 40 hex digits)
    #[arg(long, default_value = "0x0000000000000000000000000000000000000000")]
    pub contract: String,
}

impl DomainArgs {
    fn domain(&self) -> Result<Eip712Domain, CliError> {
        let address = parse_address(&self.contract)
            .map_err(|e| CliError::Input(format!("--contract: {e}")))?;
        Ok(Eip712Domain::pmargin(self.chain_id, address))
    }
}

#[derive(Args)]
#[command(
    after_help = "The secp256k1 key is read from the environment variable PMARGIN_SIGNING_KEY (64 hex digits).\n\nExample:\n  PMARGIN_SIGNING_KEY=... pmargin sign --account alice --nonce 1 --portfolio p.json --market m.json --params r.json > update.json"
)]
pub struct SignArgs {
    /// Account id
    #[arg(long)]
    pub account: String,
    /// Nonce of this message (strictly increasing per signer)
    #[arg(long)]
    pub nonce: u64,
    #[command(flatten)]
    pub inputs: Inputs,
    #[command(flatten)]
    pub domain: DomainArgs,
}

#[derive(Args)]
#[command(
    after_help = "Example:\n  pmargin verify --message update.json --signer 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
)]
pub struct VerifyArgs {
    /// A signed message (JSON), as written by `pmargin sign` or the service
    #[arg(long, value_name = "FILE")]
    pub message: PathBuf,
    /// The address the message must come from
    #[arg(long)]
    pub signer: String,
    #[command(flatten)]
    pub domain: DomainArgs,
}

pub fn sign(args: &SignArgs) -> Result<String, CliError> {
    let key = std::env::var("PMARGIN_SIGNING_KEY").map_err(|_| {
        CliError::Input("PMARGIN_SIGNING_KEY: set it to the signing key (64 hex digits)".into())
    })?;
    let secret: [u8; 32] =
        parse_hex(key.trim()).map_err(|e| CliError::Input(format!("PMARGIN_SIGNING_KEY: {e}")))?;
    let nonces = NonceCounter::resume_after(args.nonce.saturating_sub(1));
    let mut signer = Signer::with_nonces(secret, nonces)
        .map_err(|e| CliError::Input(format!("PMARGIN_SIGNING_KEY: {e}")))?;
    let loaded = args.inputs.load()?;
    let mut portfolio = loaded.portfolio.clone();
    portfolio.accounts.retain(|a| a.id == args.account);
    if portfolio.accounts.is_empty() {
        return Err(CliError::Input(format!(
            "{}: no account with id `{}`",
            loaded.portfolio.source, args.account
        )));
    }
    let options = ReportOptions {
        liquidation_prices: false,
    };
    let report = margin_report(
        &portfolio,
        &loaded.market,
        &loaded.params,
        loaded.history.as_ref(),
        options,
    )?;
    let a = &report.accounts[0];
    let fixed =
        |x: f64, field: &str| to_fixed(x).map_err(|e| CliError::Input(format!("{field}: {e}")));
    let unsigned = |x: f64, field: &str| {
        to_fixed_unsigned(x).map_err(|e| CliError::Input(format!("{field}: {e}")))
    };
    let message = MarginUpdate {
        account: account_id(&a.id),
        equity: fixed(a.equity, "equity")?,
        margin_balance: fixed(a.margin_balance, "margin_balance")?,
        initial_margin: unsigned(a.initial_margin, "initial_margin")?,
        maintenance_margin: unsigned(a.maintenance_margin, "maintenance_margin")?,
        status: match a.status {
            Status::Healthy => 0,
            Status::Restricted => 1,
            Status::Liquidatable => 2,
            Status::Bankrupt => 3,
        },
        params_version: loaded.params.version,
        nonce: args.nonce,
        timestamp: loaded.market.as_of.timestamp().max(0) as u64,
    };
    let signed = signer
        .sign_margin_update(&args.domain.domain()?, &message)
        .map_err(|e| CliError::Input(format!("signing: {e}")))?;
    serde_json::to_string_pretty(&signed)
        .map(|s| s + "\n")
        .map_err(|e| CliError::Internal(e.to_string()))
}

pub fn verify(args: &VerifyArgs) -> Result<String, CliError> {
    let text = std::fs::read_to_string(&args.message).map_err(|e| {
        CliError::Input(format!(
            "{}: cannot read the file: {e}",
            args.message.display()
        ))
    })?;
    let signed: SignedMessage = serde_json::from_str(&text)
        .map_err(|e| CliError::Input(format!("{}: {e}", args.message.display())))?;
    let trusted =
        parse_address(&args.signer).map_err(|e| CliError::Input(format!("--signer: {e}")))?;
    verify_from(&signed, &args.domain.domain()?, &trusted)
        .map_err(|e| CliError::Input(format!("{}: not valid: {e}", args.message.display())))?;
    Ok(format!(
        "valid: signed by {}\n",
        to_checksum_address(&trusted)
    ))
}
