//! Charts: each portfolio's requirement (one line per model) against the realised loss over
//! the horizon, breaches marked, as SVG and PNG. Text is drawn with the bundled DejaVu Sans
//! (plotters' `ab_glyph` backend), so no system font is needed.

use crate::report::{BacktestReport, PortfolioResult};
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// DejaVu Sans, the one copy in the binary: the sim's charts draw with it too.
pub static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The font is bundled and valid; a failure would only lose the text, not the chart.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 520;

fn model_colour(model: &str) -> RGBColor {
    match model {
        "grid" => RGBColor(31, 119, 180),
        "fhs" => RGBColor(44, 160, 44),
        _ => RGBColor(255, 127, 14),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    p: &PortfolioResult,
    horizon: usize,
) -> std::result::Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let order: Vec<(&str, &crate::report::ModelResult)> = ["grid", "fhs", "mc"]
        .iter()
        .filter_map(|m| p.models.get(*m).map(|r| (*m, r)))
        .collect();
    let Some((_, first)) = order.first() else {
        return Ok(());
    };
    let dates: Vec<String> = first.series.iter().map(|o| o.date.to_string()).collect();
    let n = dates.len();
    let y_max = order
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|o| o.requirement.max(o.loss)))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.05;
    let y_min = first
        .series
        .iter()
        .map(|o| o.loss)
        .fold(0.0f64, f64::min)
        .max(-y_max);
    let clamp = |v: f64| v.clamp(y_min, y_max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: margin requirement vs realised {horizon}-day loss",
                p.id
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..(n.max(2) - 1) as f64, y_min..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|x| {
            let i = x.round().max(0.0) as usize;
            dates.get(i).cloned().unwrap_or_default()
        })
        .y_label_formatter(&|y| {
            if y.abs() >= 1e6 {
                format!("{:.1}m", y / 1e6)
            } else if y.abs() >= 1e3 {
                format!("{:.0}k", y / 1e3)
            } else {
                format!("{y:.0}")
            }
        })
        .y_desc("USD")
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(
            first
                .series
                .iter()
                .enumerate()
                .map(|(i, o)| (i as f64, clamp(o.loss))),
            grey.stroke_width(1),
        ))
        .map_err(e)?
        .label(format!("realised {horizon}-day loss"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2)));
    for (model, r) in &order {
        let c = model_colour(model);
        chart
            .draw_series(LineSeries::new(
                r.series
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (i as f64, clamp(o.requirement))),
                c.stroke_width(2),
            ))
            .map_err(e)?
            .label(format!("{model} requirement"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    for (k, (model, r)) in order.iter().enumerate() {
        let c = model_colour(model);
        let size = 4 + 2 * k as i32;
        let points: Vec<(f64, f64)> = r
            .series
            .iter()
            .enumerate()
            .filter(|(_, o)| o.loss > o.requirement)
            .map(|(i, o)| (i as f64, clamp(o.loss)))
            .collect();
        let count = points.len();
        chart
            .draw_series(points.into_iter().map(move |pt| {
                EmptyElement::at(pt)
                    + Circle::new((0, 0), size, RED.stroke_width(2))
                    + Circle::new((0, 0), 2, c.filled())
            }))
            .map_err(e)?
            .label(format!("{model} breaches ({count})"))
            .legend(move |(x, y)| Circle::new((x + 10, y), size, RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Safe file name for a portfolio id (ids may hold `:` and `.`).
fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `<id>.svg` and `<id>.png` for every portfolio into `dir` (created if needed).
/// Returns the files written.
pub fn write_charts(report: &BacktestReport, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| {
        Error(format!(
            "{}: cannot create the chart directory: {e}",
            dir.display()
        ))
    })?;
    let mut written = Vec::new();
    for p in &report.portfolios {
        let stem = file_stem(&p.id);
        let svg = dir.join(format!("{stem}.svg"));
        let png = dir.join(format!("{stem}.png"));
        let fail = |path: &Path, m: String| {
            Error(format!("{}: cannot draw the chart: {m}", path.display()))
        };
        draw(
            SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area(),
            p,
            report.horizon_days,
        )
        .map_err(|m| fail(&svg, m))?;
        draw(
            BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area(),
            p,
            report.horizon_days,
        )
        .map_err(|m| fail(&png, m))?;
        written.push(svg);
        written.push(png);
    }
    Ok(written)
}
