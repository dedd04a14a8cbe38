//! Daily close history (`history.csv`): the raw material of filtered historical simulation,
//! calibration and backtests.

use crate::error::{InputError, Result};
use chrono::NaiveDate;

/// Daily closes, one column per underlying, dates strictly ascending, no gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub source: String,
    pub dates: Vec<NaiveDate>,
    /// (underlying, closes aligned with `dates`), in the file's column order.
    pub columns: Vec<(String, Vec<f64>)>,
}

impl History {
    pub fn parse(file: &str, text: &str) -> Result<History> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| {
            InputError::new(file, "", "empty file: expected a header `date,BTC,...`")
        })?;
        let names: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
        if names.first().map(String::as_str) != Some("date") || names.len() < 2 {
            return Err(InputError::new(
                file,
                "line 1",
                "the header must be `date,<UNDERLYING>,...`",
            ));
        }
        for (i, name) in names.iter().enumerate().skip(1) {
            if name.is_empty() || names[..i].contains(name) {
                return Err(InputError::new(
                    file,
                    "line 1",
                    format!("column {} is empty or repeated", i + 1),
                ));
            }
        }
        let mut dates: Vec<NaiveDate> = Vec::new();
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); names.len() - 1];
        for (index, line) in lines {
            let line_no = index + 1;
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                return Err(InputError::new(
                    file,
                    format!("line {line_no}"),
                    format!("expected {} cells, found {}", names.len(), cells.len()),
                ));
            }
            let date = NaiveDate::parse_from_str(cells[0], "%Y-%m-%d").map_err(|_| {
                InputError::new(
                    file,
                    format!("line {line_no}.date"),
                    format!("`{}` is not a date YYYY-MM-DD", cells[0]),
                )
            })?;
            if let Some(prev) = dates.last() {
                if date <= *prev {
                    return Err(InputError::new(
                        file,
                        format!("line {line_no}.date"),
                        format!("dates must be ascending and unique: {date} follows {prev}"),
                    ));
                }
            }
            dates.push(date);
            for (c, cell) in cells.iter().enumerate().skip(1) {
                let path = || format!("line {line_no}.{}", names[c]);
                let value: f64 = cell.parse().map_err(|_| {
                    InputError::new(
                        file,
                        path(),
                        format!("`{cell}` is not a price (gaps are not allowed)"),
                    )
                })?;
                if !(value.is_finite() && value > 0.0) {
                    return Err(InputError::new(
                        file,
                        path(),
                        format!("a close must be positive and finite, got {cell}"),
                    ));
                }
                columns[c - 1].push(value);
            }
        }
        if dates.len() < 2 {
            return Err(InputError::new(
                file,
                "",
                "at least two dates are needed to form a return",
            ));
        }
        Ok(History {
            source: file.to_string(),
            dates,
            columns: names.into_iter().skip(1).zip(columns).collect(),
        })
    }

    pub fn column(&self, underlying: &str) -> Option<&[f64]> {
        self.columns
            .iter()
            .find(|(n, _)| n == underlying)
            .map(|(_, v)| v.as_slice())
    }

    /// The rows up to and including `end` (exclusive index), for look-ahead-free backtests.
    pub fn truncated(&self, end: usize) -> History {
        let end = end.min(self.dates.len());
        History {
            source: self.source.clone(),
            dates: self.dates[..end].to_vec(),
            columns: self
                .columns
                .iter()
                .map(|(n, v)| (n.clone(), v[..end].to_vec()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_rejects() {
        let h = History::parse(
            "h.csv",
            "date,BTC,ETH\n2024-01-01,42283.6,2352.0\n2024-01-02,44950.3,2355.3\n",
        )
        .unwrap();
        assert_eq!(h.column("ETH"), Some(&[2352.0, 2355.3][..]));
        let cases = [
            ("date,BTC\n2024-01-02,1\n2024-01-01,2\n", "line 3.date"),
            ("date,BTC\n2024-01-01,1\n2024-01-01,2\n", "line 3.date"),
            ("date,BTC\n2024-01-01,1\n2024-13-01,2\n", "line 3.date"),
            (
                "date,BTC,ETH\n2024-01-01,1,2\n2024-01-02,,2\n",
                "line 3.BTC",
            ),
            ("date,BTC\n2024-01-01,1\n2024-01-02,-2\n", "line 3.BTC"),
            ("date,BTC\n2024-01-01,1\n2024-01-02,2,3\n", "line 3"),
            ("day,BTC\n2024-01-01,1\n", "line 1"),
        ];
        for (text, path) in cases {
            let err = History::parse("h.csv", text).unwrap_err();
            assert_eq!(err.path, path, "{err}");
        }
    }
}
