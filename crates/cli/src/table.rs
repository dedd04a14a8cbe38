//! Plain-text rendering for people: aligned columns, thousands separators, worst case marked.

use pmargin_core::report::{AccountReport, MarginReport};
use pmargin_core::scenarios::ScenarioTable;
use pmargin_core::whatif::WhatIf;
use std::fmt::Write;

/// `1234567.891` -> `1,234,567.89`.
pub fn money(x: f64) -> String {
    let negative = x < 0.0;
    let cents = format!("{:.2}", x.abs());
    let (int, frac) = cents.split_once('.').unwrap_or((&cents, "00"));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{}{grouped}.{frac}", if negative { "-" } else { "" })
}

fn price(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(p) if p >= 100.0 => money(p),
        Some(p) => format!("{p:.6}"),
    }
}

/// Renders rows with right-aligned columns (the first left-aligned).
pub(crate) fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn margin_table(report: &MarginReport) -> String {
    let mut rows = vec![vec![
        "account".to_string(),
        "equity".into(),
        "margin balance".into(),
        "initial margin".into(),
        "maint. margin".into(),
        "status".into(),
        "standard IM".into(),
        "saving".into(),
    ]];
    for a in &report.accounts {
        let saving = a.standard_initial_margin - a.initial_margin;
        let ratio = a
            .capital_efficiency
            .map_or(String::new(), |c| format!(" ({c:.1}x)"));
        rows.push(vec![
            a.id.clone(),
            money(a.equity),
            money(a.margin_balance),
            money(a.initial_margin),
            money(a.maintenance_margin),
            a.status.as_str().to_string(),
            money(a.standard_initial_margin),
            format!("{}{ratio}", money(saving)),
        ]);
    }
    let mut out = format!(
        "as of {}, parameters version {}, {} accounts\n\n",
        report.as_of,
        report.params_version,
        report.accounts.len()
    );
    out.push_str(&columns(&rows));
    let details: Vec<String> = report.accounts.iter().map(account_detail).collect();
    out.push('\n');
    out.push_str(&details.join(""));
    out
}

fn account_detail(a: &AccountReport) -> String {
    let mut out = format!(
        "{}: IM = max(grid {}, statistical {}, short option min {}) + add-ons {}",
        a.id,
        money(a.grid_risk),
        money(a.statistical_risk),
        money(a.short_option_minimum),
        money(a.addons)
    );
    if a.addons != 0.0 {
        let b = &a.addon_breakdown;
        let _ = write!(
            out,
            " (option {}, basis {}, oracle {}, liquidity {})",
            money(b.option),
            money(b.basis),
            money(b.oracle),
            money(b.liquidity)
        );
    }
    if let Some(w) = &a.worst_scenario {
        let _ = write!(out, "; worst scenario: {w}");
    }
    out.push('\n');
    for (u, lp) in &a.liquidation_prices {
        let g = a.greeks.get(u).copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {u}: liquidation below {} / above {}; delta {:.4}, gamma {:.6}, vega {:.2}, theta {:.2}/day",
            price(lp.down),
            price(lp.up),
            g.delta,
            g.gamma,
            g.vega,
            g.theta
        );
    }
    out
}

pub fn scenario_table(t: &ScenarioTable) -> String {
    let mut out = format!(
        "account {}: grid risk {}, worst scenario {} (marked *)\nlosses are positive; extremes carry their cover weight\n",
        t.account,
        money(t.grid_risk),
        t.worst_scenario.as_deref().unwrap_or("none")
    );
    let cell =
        |loss: f64, worst: bool| format!("{}{}", money(loss), if worst { " *" } else { "  " });
    let mut families: Vec<(String, Vec<&pmargin_core::scenarios::ScenarioLoss>)> = Vec::new();
    for s in &t.scenarios {
        let key = match (&s.underlying, s.family) {
            (Some(u), "single") => format!("{u} alone"),
            (_, "tandem") => {
                "all underlyings in tandem (moves in multiples of each range)".to_string()
            }
            _ => "decoupling".to_string(),
        };
        match families.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(s),
            None => families.push((key, vec![s])),
        }
    }
    for (name, all) in families {
        let _ = writeln!(out, "\n{name}");
        // Extended moves (absolute fractions of the price, one vol direction each) get a row
        // each after the grid's pairs.
        let (extended, scenarios): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|s| s.label.contains(" extended "));
        if name == "decoupling" {
            let mut rows = vec![vec!["scenario".to_string(), "loss".into()]];
            rows.extend(
                scenarios
                    .iter()
                    .map(|s| vec![s.label.clone(), cell(s.loss, s.worst)]),
            );
            out.push_str(&columns(&rows));
            continue;
        }
        let mut rows = vec![vec![
            "price move".to_string(),
            "vol down".into(),
            "vol up".into(),
            "vol unchanged".into(),
        ]];
        for pair in scenarios.chunks(2) {
            let mv = format!("{:+.2}%", pair[0].price_move * 100.0);
            let mv = if name.starts_with("all") {
                format!("{:+.3} x range", pair[0].price_move)
            } else {
                mv
            };
            if pair[0].vol_shift == 0.0 {
                for s in pair {
                    let m = if name.starts_with("all") {
                        format!("{:+.3} x range", s.price_move)
                    } else {
                        format!("{:+.2}%", s.price_move * 100.0)
                    };
                    rows.push(vec![
                        format!("{m} (extreme)"),
                        String::new(),
                        String::new(),
                        cell(s.loss, s.worst),
                    ]);
                }
            } else {
                let (up, down) = (pair[0], pair[1]);
                rows.push(vec![
                    mv,
                    cell(down.loss, down.worst),
                    cell(up.loss, up.worst),
                    String::new(),
                ]);
            }
        }
        for s in extended {
            let mut row = vec![
                format!(
                    "{:+.2}% (extended, cover {})",
                    s.price_move * 100.0,
                    s.weight
                ),
                String::new(),
                String::new(),
                String::new(),
            ];
            let column = if s.vol_shift < 0.0 {
                1
            } else if s.vol_shift > 0.0 {
                2
            } else {
                3
            };
            row[column] = cell(s.loss, s.worst);
            rows.push(row);
        }
        out.push_str(&columns(&rows));
    }
    out
}

pub fn what_if_table(w: &WhatIf) -> String {
    let mut out = format!("account {}: what if\n", w.account);
    for f in &w.fills {
        let _ = writeln!(
            out,
            "  {} {} at {}",
            if f.size > 0.0 { "buy" } else { "sell" },
            f.size.abs(),
            price(Some(f.price))
        );
        let _ = f;
    }
    let (b, a) = (&w.before, &w.after);
    let rows = vec![
        vec![
            String::new(),
            "before".into(),
            "after".into(),
            "change".into(),
        ],
        vec![
            "equity".into(),
            money(b.equity),
            money(a.equity),
            money(a.equity - b.equity),
        ],
        vec![
            "margin balance".into(),
            money(b.margin_balance),
            money(a.margin_balance),
            money(a.margin_balance - b.margin_balance),
        ],
        vec![
            "initial margin".into(),
            money(b.initial_margin),
            money(a.initial_margin),
            money(a.initial_margin - b.initial_margin),
        ],
        vec![
            "  of which add-ons".into(),
            money(b.addons),
            money(a.addons),
            money(a.addons - b.addons),
        ],
        vec![
            "maintenance margin".into(),
            money(b.maintenance_margin),
            money(a.maintenance_margin),
            money(a.maintenance_margin - b.maintenance_margin),
        ],
        vec![
            "standard IM".into(),
            money(b.standard_initial_margin),
            money(a.standard_initial_margin),
            money(a.standard_initial_margin - b.standard_initial_margin),
        ],
        vec![
            "status".into(),
            b.status.as_str().into(),
            a.status.as_str().into(),
            String::new(),
        ],
    ];
    out.push('\n');
    out.push_str(&columns(&rows));
    let _ = writeln!(
        out,
        "\n{}: {}",
        if w.accepted { "ACCEPTED" } else { "REJECTED" },
        w.reason
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands() {
        assert_eq!(money(1234567.891), "1,234,567.89");
        assert_eq!(money(-999.5), "-999.50");
        assert_eq!(money(0.0), "0.00");
        assert_eq!(money(100.0), "100.00");
    }
}
