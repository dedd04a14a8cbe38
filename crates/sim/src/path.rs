//! Price paths: the prices a simulation replays, one row per step.
//!
//! ## Format (CSV)
//!
//! ```text
//! step,BTC,ETH
//! 0,7911.43,194.87
//! 1,7850.00,193.10
//! 2020-03-12T00:30,7702.5,190.0
//! ```
//!
//! * The first line is the header. Its first column is a label column under any name (`step`,
//!   `time`, `date`...); every further column is an underlying, named as in the parameter set.
//!   Column names are unique.
//! * Every further line is one step: a label (free text without commas, e.g. a step number or a
//!   timestamp, carried into the report), then one index price per underlying, positive and
//!   finite, in the header's order. Steps are replayed in file order.
//! * Blank lines and lines starting with `#` are skipped. At least one step is required.
//!
//! Every error names the file and the 1-based line (and the column when it is about one).

use std::fmt;

/// One row of a path: a label and one price per underlying (in [`PricePath::underlyings`]
/// order).
#[derive(Debug, Clone, PartialEq)]
pub struct PathStep {
    pub label: String,
    pub prices: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PricePath {
    /// Where the path came from (a file name, or a description of a built-in path).
    pub source: String,
    pub underlyings: Vec<String>,
    pub steps: Vec<PathStep>,
}

/// A problem with a path file: the file, the line (1-based; 0 when the file as a whole is at
/// fault) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct PathError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for PathError {}

impl PricePath {
    /// Parses the CSV format of the module documentation. `file` is used in error messages.
    pub fn parse(file: &str, text: &str) -> Result<PricePath, PathError> {
        let err = |line: usize, message: String| PathError {
            file: file.to_string(),
            line,
            message,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let (header_line, header) = lines.next().ok_or_else(|| {
            err(
                0,
                "empty price path: expected a header `step,<underlying>,...` and at least one row"
                    .into(),
            )
        })?;
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        if columns.len() < 2 {
            return Err(err(
                header_line,
                format!("header `{header}` needs a label column and at least one underlying (e.g. `step,BTC,ETH`)"),
            ));
        }
        let mut underlyings: Vec<String> = Vec::with_capacity(columns.len() - 1);
        for (c, name) in columns.iter().enumerate().skip(1) {
            if name.is_empty() {
                return Err(err(
                    header_line,
                    format!("column {}: empty underlying name", c + 1),
                ));
            }
            if underlyings.iter().any(|u| u == name) {
                return Err(err(
                    header_line,
                    format!("column {}: duplicate underlying `{name}`", c + 1),
                ));
            }
            underlyings.push(name.to_string());
        }
        let mut steps = Vec::new();
        for (n, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != columns.len() {
                return Err(err(
                    n,
                    format!(
                        "expected {} columns ({}), found {}",
                        columns.len(),
                        columns.join(","),
                        cells.len()
                    ),
                ));
            }
            let mut prices = Vec::with_capacity(underlyings.len());
            for (c, cell) in cells.iter().enumerate().skip(1) {
                let u = &underlyings[c - 1];
                let price: f64 = cell.parse().map_err(|_| {
                    err(
                        n,
                        format!("column {} ({u}): `{cell}` is not a number", c + 1),
                    )
                })?;
                if !(price.is_finite() && price > 0.0) {
                    return Err(err(
                        n,
                        format!(
                            "column {} ({u}): price must be positive and finite, got {cell}",
                            c + 1
                        ),
                    ));
                }
                prices.push(price);
            }
            steps.push(PathStep {
                label: cells[0].to_string(),
                prices,
            });
        }
        if steps.is_empty() {
            return Err(err(
                0,
                "no steps: the price path has a header but no rows".into(),
            ));
        }
        Ok(PricePath {
            source: file.to_string(),
            underlyings,
            steps,
        })
    }

    /// The path as CSV in the format [`PricePath::parse`] reads.
    pub fn to_csv(&self) -> String {
        let mut s = format!("step,{}\n", self.underlyings.join(","));
        for step in &self.steps {
            s.push_str(&step.label);
            for p in &step.prices {
                s.push_str(&format!(",{p}"));
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_prices() {
        let p =
            PricePath::parse("p.csv", "# a comment\nstep,BTC,ETH\n0,100,10\n\n1,90.5,9\n").unwrap();
        assert_eq!(p.underlyings, vec!["BTC", "ETH"]);
        assert_eq!(p.steps.len(), 2);
        assert_eq!(
            p.steps[1],
            PathStep {
                label: "1".into(),
                prices: vec![90.5, 9.0]
            }
        );
        assert_eq!(
            PricePath::parse("q.csv", &p.to_csv()).unwrap().steps,
            p.steps
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = PricePath::parse("p.csv", "step,BTC\n0,100\n1,abc\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.csv:3: column 2 (BTC): `abc` is not a number"
        );
        let e = PricePath::parse("p.csv", "step,BTC\n0,100\n\n1,100,3\n").unwrap_err();
        assert!(
            e.to_string().starts_with("p.csv:4: expected 2 columns"),
            "{e}"
        );
        let e = PricePath::parse("p.csv", "step,BTC\n0,-5\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.csv:2: column 2 (BTC): price must be positive"),
            "{e}"
        );
        let e = PricePath::parse("p.csv", "step,BTC,BTC\n0,1,1\n").unwrap_err();
        assert!(
            e.to_string().starts_with("p.csv:1: column 3: duplicate"),
            "{e}"
        );
        assert!(PricePath::parse("p.csv", "step,BTC\n")
            .unwrap_err()
            .to_string()
            .contains("no steps"));
        assert!(PricePath::parse("p.csv", "")
            .unwrap_err()
            .to_string()
            .starts_with("p.csv: empty"));
    }
}
