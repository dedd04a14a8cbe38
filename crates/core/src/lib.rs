//! # pmargin-core: the margin methodology as a library
//!
//! Portfolio margin looks at the net risk of a whole account: a hedge lowers the requirement,
//! so capital works harder than under isolated (per-position) margin. This crate implements
//! the methodology of `docs/MODEL.md` version 2, and its data flows one way:
//!
//! 1. [`input`]: the public formats are parsed and validated (errors name file, field, account);
//! 2. [`book::Book`]: the portfolio is bound to a market snapshot; every instrument gets its
//!    marks once (forward, vol, time to expiry);
//! 3. [`arrays::RiskArrays`]: each instrument's P&L in every grid slot and every historical
//!    scenario, computed once per snapshot;
//! 4. [`account::Evaluator`]: an account's requirement is a weighted sum of those arrays, read
//!    through the scenario families of [`grid`] and the tail of [`fhs`];
//! 5. [`report::margin_report`]: requirements, status, [`liquidation`] prices, [`standard`]
//!    margin and [`greeks`], in the report format.
//!
//! Nothing here does I/O: the CLI, a server and a simulator all drive the same core.

pub mod account;
pub mod arrays;
pub mod book;
pub mod error;
pub mod external;
pub mod external_risk;
pub mod fhs;
pub mod greeks;
pub mod grid;
pub mod input;
pub mod instrument;
pub mod liquidation;
pub mod montecarlo;
pub mod report;
pub mod scenarios;
pub mod standard;
pub mod synthetic;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod whatif;

pub use account::{Evaluator, Requirement, Status};
pub use arrays::RiskArrays;
pub use book::Book;
pub use error::InputError;
pub use input::{history::History, market::Market, params::Params, portfolio::Portfolio};
pub use report::{margin_report, MarginReport, ReportOptions};
