//! What every command shares below the commands themselves: the error with its exit code, and
//! the margin inputs read and validated. A module of its own so that the command modules
//! (`commands`, `batch`, `demo`, `compare`) depend on it and never on each other for it.

use crate::Inputs;
use pmargin_core::{History, InputError, Market, Params, Portfolio};
use std::fmt;
use std::path::Path;

/// A failed command: bad input (exit 2) or a failure of the engine itself (exit 1).
#[derive(Debug)]
pub enum CliError {
    Input(String),
    Internal(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Internal(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input(m) | CliError::Internal(m) => f.write_str(m),
        }
    }
}

impl From<InputError> for CliError {
    fn from(e: InputError) -> Self {
        CliError::Input(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CliError>;

pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("{}: cannot read the file: {e}", path.display())))
}

/// Everything a margin run needs, read and validated.
pub struct Loaded {
    pub portfolio: Portfolio,
    pub market: Market,
    pub params: Params,
    pub history: Option<History>,
}

impl Inputs {
    pub fn load(&self) -> Result<Loaded> {
        let name = |p: &Path| p.display().to_string();
        Ok(Loaded {
            params: Params::parse(&name(&self.params), &read(&self.params)?)?,
            market: Market::parse(&name(&self.market), &read(&self.market)?)?,
            portfolio: Portfolio::parse(&name(&self.portfolio), &read(&self.portfolio)?)?,
            history: match &self.history {
                Some(h) => Some(History::parse(&name(h), &read(h)?)?),
                None => None,
            },
        })
    }
}
