//! The text rendering of a [`SimReport`]: the totals, then the steps (every step with a
//! liquidation, and every `stride`-th step otherwise, always the first and the last).

use crate::sim::SimReport;
use std::fmt::Write;

fn money(v: f64) -> String {
    let neg = v < 0.0;
    let cents = (v.abs() * 100.0).round() as u128;
    let (whole, frac) = (cents / 100, cents % 100);
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{}{grouped}.{frac:02}", if neg { "-" } else { "" })
}

/// The report as text; `stride` thins the quiet steps (0 or 1: every step).
pub fn render_text(r: &SimReport, stride: usize) -> String {
    let t = &r.totals;
    let mut s = String::new();
    let _ = writeln!(s, "Cascade simulation: {}", r.scenario);
    let _ = writeln!(s, "path: {}", r.path);
    let depth: Vec<String> = r
        .impact
        .depth
        .iter()
        .map(|(u, d)| format!("{u} {}", money(*d)))
        .collect();
    let _ = writeln!(
        s,
        "{} steps, {} accounts (liquidator `{}`), market impact K = {} (depth = open interest: {})",
        r.steps.len(),
        r.accounts,
        r.liquidator,
        r.impact.k,
        depth.join(", ")
    );
    let _ = writeln!(s);
    let relative = if t.value_before != 0.0 {
        t.value_difference / t.value_before.abs()
    } else {
        0.0
    };
    let rows: Vec<(&str, String)> = vec![
        ("value before", money(t.value_before)),
        ("value after", money(t.value_after)),
        (
            "difference",
            format!("{:.6} ({relative:.1e} relative)", t.value_difference),
        ),
        ("insurance fund before", money(t.insurance_fund_before)),
        ("insurance fund after", money(t.insurance_fund_after)),
        ("liquidation penalties", money(t.penalties)),
        ("bad debt", money(t.bad_debt)),
        ("  paid by the fund", money(t.insurance_paid)),
        ("  socialised (ADL)", money(t.socialised_loss)),
        ("  uncovered", money(t.uncovered_loss)),
        ("liquidations (fills)", t.liquidations.to_string()),
        ("liquidated notional", money(t.liquidated_notional)),
        ("accounts liquidated", t.accounts_liquidated.to_string()),
        ("accounts closed out", t.accounts_closed.to_string()),
        ("accounts deleveraged", t.accounts_deleveraged.to_string()),
        ("liquidator P&L", money(t.liquidator_pnl)),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "{k:<24}{v:>22}");
    }
    for u in &r.underlyings {
        let first = r
            .steps
            .first()
            .and_then(|x| x.prices.get(u))
            .copied()
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "{:<24}{:>22}",
            format!("{u} first / low / last"),
            format!(
                "{first:.2} / {:.2} / {:.2}",
                t.lowest_price[u], t.final_price[u]
            )
        );
    }
    let _ = writeln!(s);
    let stride = stride.max(1);
    let _ = write!(s, "{:>4}  {:<18}", "step", "label");
    for u in &r.underlyings {
        let _ = write!(s, "{u:>11}");
    }
    let _ = writeln!(
        s,
        "{:>7}{:>16}{:>7}{:>14}{:>15}{:>14}{:>8}",
        "fills", "notional", "closed", "bad debt", "fund", "socialised", "below"
    );
    for (i, st) in r.steps.iter().enumerate() {
        let quiet = st.liquidations == 0 && st.accounts_closed == 0;
        if quiet && i % stride != 0 && i + 1 != r.steps.len() {
            continue;
        }
        let _ = write!(s, "{:>4}  {:<18}", st.step, st.label);
        for u in &r.underlyings {
            let _ = write!(s, "{:>11.2}", st.prices[u]);
        }
        let _ = writeln!(
            s,
            "{:>7}{:>16}{:>7}{:>14}{:>15}{:>14}{:>8}",
            st.liquidations,
            money(st.liquidated_notional),
            st.accounts_closed,
            money(st.bad_debt),
            money(st.insurance_fund),
            money(st.socialised_loss),
            st.accounts_below_maintenance
        );
    }
    if stride > 1 {
        let _ = writeln!(
            s,
            "(steps without liquidations shown every {stride}th; --json has every step)"
        );
    }
    for c in &r.charts {
        let _ = writeln!(s, "chart: {c}");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_groups_thousands() {
        assert_eq!(super::money(1234567.891), "1,234,567.89");
        assert_eq!(super::money(-0.5), "-0.50");
        assert_eq!(super::money(999.0), "999.00");
    }
}
