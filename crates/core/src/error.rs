//! Input errors that say where the problem is.
//!
//! A risk system must never guess: a typo in a parameter file or a missing vol has to stop the
//! run with a message a person can act on. Every error therefore carries the file it came from,
//! the JSON path of the offending field, and the account when one is involved.

use std::fmt;

/// A rejected input: which file, which field (JSON path such as `accounts[1].positions[0].size`),
/// which account, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub path: String,
    pub account: Option<String>,
    pub message: String,
}

impl InputError {
    pub fn new(
        file: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        InputError {
            file: file.into(),
            path: path.into(),
            account: None,
            message: message.into(),
        }
    }

    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        if let Some(account) = &self.account {
            write!(f, " (account \"{account}\")")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for InputError {}

pub type Result<T, E = InputError> = std::result::Result<T, E>;
