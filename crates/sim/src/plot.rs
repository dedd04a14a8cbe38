//! The chart of a run, as SVG and PNG: three panels over the steps, (1) each underlying's price
//! indexed to 100 at the first step, (2) cumulative liquidated notional and cumulative bad
//! debt, (3) the insurance fund and the cumulative socialised loss. Text is drawn with the
//! DejaVu Sans bundled in `crates/backtest/assets` (plotters' `ab_glyph`, the one copy
//! `pmargin_backtest::plot::FONT`), so no system font is needed.

use crate::sim::SimReport;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

use pmargin_backtest::plot::FONT;
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The font is bundled and valid; a failure would only lose the text, not the chart.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1000;
const COLOURS: [RGBColor; 4] = [
    RGBColor(247, 147, 26),
    RGBColor(98, 126, 234),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn usd(y: f64) -> String {
    if y.abs() >= 1e9 {
        format!("{:.1}bn", y / 1e9)
    } else if y.abs() >= 1e6 {
        format!("{:.1}m", y / 1e6)
    } else if y.abs() >= 1e3 {
        format!("{:.0}k", y / 1e3)
    } else {
        format!("{y:.0}")
    }
}

type Series = (String, RGBColor, Vec<f64>);

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    labels: &[String],
    series: &[Series],
    money: bool,
    legend: SeriesLabelPosition,
) -> Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let n = labels.len();
    let values = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.06).max(if money { 1.0 } else { 0.5 });
    let (lo, hi) = (if money && lo >= 0.0 { 0.0 } else { lo - pad }, hi + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..(n.max(2) - 1) as f64, lo..hi)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(7)
        .y_labels(6)
        .x_label_formatter(&|x| {
            labels
                .get(x.round().max(0.0) as usize)
                .cloned()
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| if money { usd(*y) } else { format!("{y:.0}") })
        .y_desc(y_desc)
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    for (name, colour, ys) in series {
        let c = *colour;
        chart
            .draw_series(LineSeries::new(
                ys.iter().enumerate().map(|(i, y)| (i as f64, *y)),
                c.stroke_width(2),
            ))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, r: &SimReport) -> Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let labels: Vec<String> = r.steps.iter().map(|s| s.label.clone()).collect();
    let panels = root.split_evenly((3, 1));
    let prices: Vec<Series> = r
        .underlyings
        .iter()
        .enumerate()
        .map(|(k, u)| {
            let first = r
                .steps
                .first()
                .and_then(|s| s.prices.get(u))
                .copied()
                .unwrap_or(1.0);
            let ys = r
                .steps
                .iter()
                .map(|s| 100.0 * s.prices.get(u).copied().unwrap_or(first) / first)
                .collect();
            (
                format!("{u} (start {first:.2})"),
                COLOURS[k % COLOURS.len()],
                ys,
            )
        })
        .collect();
    let impact = if r.impact.k > 0.0 {
        format!(", impact K = {}", r.impact.k)
    } else {
        String::new()
    };
    panel(
        &panels[0],
        &format!("Price path (indexed, first step = 100{impact})"),
        "index",
        &labels,
        &prices,
        false,
        SeriesLabelPosition::UpperRight,
    )?;
    let mut cumulative = 0.0;
    let liquidated: Vec<f64> = r
        .steps
        .iter()
        .map(|s| {
            cumulative += s.liquidated_notional;
            cumulative
        })
        .collect();
    let liq = vec![
        (
            "liquidated notional (cumulative)".to_string(),
            COLOURS[3],
            liquidated,
        ),
        (
            "bad debt (cumulative)".to_string(),
            RGBColor(0, 0, 0),
            r.steps.iter().map(|s| s.cumulative_bad_debt).collect(),
        ),
    ];
    panel(
        &panels[1],
        &format!(
            "Liquidations: {} fills, {} accounts closed out",
            r.totals.liquidations, r.totals.accounts_closed
        ),
        "USD",
        &labels,
        &liq,
        true,
        SeriesLabelPosition::LowerRight,
    )?;
    let fund = vec![
        (
            "insurance fund".to_string(),
            COLOURS[2],
            r.steps.iter().map(|s| s.insurance_fund).collect(),
        ),
        (
            "socialised loss (cumulative)".to_string(),
            COLOURS[3],
            r.steps
                .iter()
                .map(|s| s.cumulative_socialised_loss)
                .collect(),
        ),
    ];
    panel(
        &panels[2],
        "Insurance fund",
        "USD",
        &labels,
        &fund,
        true,
        SeriesLabelPosition::LowerLeft,
    )?;
    root.present().map_err(e)?;
    Ok(())
}

/// Writes `simulate.svg` and `simulate.png` into `dir` (created if needed); returns the files.
pub fn write_charts(report: &SimReport, dir: &Path) -> Result<Vec<PathBuf>, String> {
    register_font();
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the chart directory: {e}", dir.display()))?;
    let svg = dir.join("simulate.svg");
    let png = dir.join("simulate.png");
    let fail = |path: &Path, m: String| format!("{}: cannot draw the chart: {m}", path.display());
    draw(
        SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area(),
        report,
    )
    .map_err(|m| fail(&svg, m))?;
    draw(
        BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area(),
        report,
    )
    .map_err(|m| fail(&png, m))?;
    Ok(vec![svg, png])
}
