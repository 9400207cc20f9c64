//! PNG plots under `<target dir>/bench/`. Plotters draws the lines; the text is drawn from
//! an embedded 8x8 bitmap font, so that no system font is needed.

use std::path::PathBuf;

use plotters::coord::Shift;
use plotters::prelude::*;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A named, coloured line of (x, y) points.
pub type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// `$CARGO_TARGET_DIR/bench`, else the cargo target directory the bench was built in.
pub fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf());
    target.join("bench")
}

fn text(area: &Area, (x, y): (i32, i32), s: &str, color: &RGBColor, scale: i32) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[if ch.is_ascii() { ch as usize } else { b'?' as usize }];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let (px, py) = (x + (i as i32 * 8 + col) * scale, y + row as i32 * scale);
                    let _ = area.draw(&Rectangle::new([(px, py), (px + scale, py + scale)], color.filled()));
                }
            }
        }
    }
}

fn label_w(s: &str) -> i32 {
    s.len() as i32 * 8
}

const GRID: RGBColor = RGBColor(220, 220, 220);

/// CDF of each named sample (seconds), on a log time axis.
pub fn cdf(file: &str, title: &str, series: &[(&str, &[f64], RGBColor)]) -> anyhow::Result<PathBuf> {
    let path = out_dir().join(file);
    std::fs::create_dir_all(out_dir())?;
    let all: Vec<f64> = series.iter().flat_map(|(_, v, _)| v.iter().copied()).collect();
    anyhow::ensure!(!all.is_empty(), "no samples to plot");
    let lo_exp = all.iter().copied().fold(f64::INFINITY, f64::min).max(1e-3).log10().floor() as i32;
    let hi_exp = all.iter().copied().fold(0.0, f64::max).max(1e-2).log10().ceil() as i32;
    let (lo, hi) = (10f64.powi(lo_exp), 10f64.powi(hi_exp.max(lo_exp + 1)));
    {
        let root = BitMapBackend::new(&path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(60)
            .margin_right(30)
            .margin_top(50)
            .margin_bottom(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0f64)?;
        for e in lo_exp..=hi_exp.max(lo_exp + 1) {
            let x = 10f64.powi(e);
            chart.draw_series(LineSeries::new([(x, 0.0), (x, 1.0)], GRID))?;
            let (px, py) = chart.backend_coord(&(x, 0.0));
            let l = if x < 1.0 { format!("{}ms", x * 1000.0) } else { format!("{x}s") };
            text(&root, (px - label_w(&l) / 2, py + 8), &l, &BLACK, 1);
        }
        for y in [0.0, 0.25, 0.5, 0.75, 0.9, 0.99] {
            chart.draw_series(LineSeries::new([(lo, y), (hi, y)], GRID))?;
            let (px, py) = chart.backend_coord(&(lo, y));
            let l = format!("{y}");
            text(&root, (px - label_w(&l) - 6, py - 4), &l, &BLACK, 1);
        }
        chart.draw_series(LineSeries::new([(lo, 0.0), (hi, 0.0), (hi, 1.0), (lo, 1.0), (lo, 0.0)], BLACK))?;
        for (i, (name, v, color)) in series.iter().enumerate() {
            let mut v: Vec<f64> = v.iter().map(|x| x.clamp(lo, hi)).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len() as f64;
            let mut pts = vec![(lo, 0.0)];
            for (k, x) in v.iter().enumerate() {
                pts.push((*x, k as f64 / n));
                pts.push((*x, (k + 1) as f64 / n));
            }
            chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
            text(&root, (80, 60 + 12 * i as i32), &format!("{name} (n={})", v.len()), color, 1);
        }
        text(&root, (60, 14), title, &BLACK, 2);
        text(&root, (360, 530), "seconds after due (log scale)", &BLACK, 1);
        root.present()?;
    }
    Ok(path)
}

/// Lines of y against x, each series named and coloured.
pub fn lines(file: &str, title: &str, x_name: &str, series: &[Series]) -> anyhow::Result<PathBuf> {
    let path = out_dir().join(file);
    std::fs::create_dir_all(out_dir())?;
    let xmax = series.iter().flat_map(|(_, v, _)| v.iter().map(|p| p.0)).fold(1.0, f64::max);
    let ymax = series.iter().flat_map(|(_, v, _)| v.iter().map(|p| p.1)).filter(|y| y.is_finite()).fold(1.0, f64::max) * 1.15;
    {
        let root = BitMapBackend::new(&path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(60)
            .margin_right(30)
            .margin_top(50)
            .margin_bottom(60)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
        for k in 0..=5 {
            let (x, y) = (xmax * k as f64 / 5.0, ymax * k as f64 / 5.0);
            chart.draw_series(LineSeries::new([(x, 0.0), (x, ymax)], GRID))?;
            chart.draw_series(LineSeries::new([(0.0, y), (xmax, y)], GRID))?;
            let (px, py) = chart.backend_coord(&(x, 0.0));
            let l = format!("{x:.0}");
            text(&root, (px - label_w(&l) / 2, py + 8), &l, &BLACK, 1);
            let (px, py) = chart.backend_coord(&(0.0, y));
            let l = format!("{y:.0}");
            text(&root, (px - label_w(&l) - 6, py - 4), &l, &BLACK, 1);
        }
        chart.draw_series(LineSeries::new([(0.0, 0.0), (xmax, 0.0), (xmax, ymax), (0.0, ymax), (0.0, 0.0)], BLACK))?;
        for (i, (name, v, color)) in series.iter().enumerate() {
            // Earlier series are drawn wider, so that a later one on top of them still shows.
            let width = 2 * (series.len() - i) as u32;
            chart.draw_series(LineSeries::new(v.clone(), color.stroke_width(width)))?;
            chart.draw_series(v.iter().map(|p| Circle::new(*p, width + 2, color.filled())))?;
            text(&root, (80, 60 + 12 * i as i32), name, color, 1);
        }
        text(&root, (60, 14), title, &BLACK, 2);
        text(&root, (400, 530), x_name, &BLACK, 1);
        root.present()?;
    }
    Ok(path)
}

/// Each named series of (x, y in seconds) as dots, y on a log axis in ms (values under 1 ms
/// drawn at 1 ms): lateness against the time it came due.
pub fn scatter_log(file: &str, title: &str, x_name: &str, series: &[Series]) -> anyhow::Result<PathBuf> {
    let path = out_dir().join(file);
    std::fs::create_dir_all(out_dir())?;
    let pts = || series.iter().flat_map(|(_, v, _)| v.iter().copied());
    anyhow::ensure!(pts().next().is_some(), "no samples to plot");
    let xmax = pts().map(|p| p.0).fold(1.0, f64::max);
    let hi_exp = pts().map(|p| p.1 * 1000.0).fold(10.0, f64::max).log10().ceil() as i32;
    let hi = 10f64.powi(hi_exp.max(1));
    {
        let root = BitMapBackend::new(&path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(70)
            .margin_right(30)
            .margin_top(50)
            .margin_bottom(60)
            .build_cartesian_2d(0.0..xmax, (1.0..hi).log_scale())?;
        for k in 0..=5 {
            let x = xmax * k as f64 / 5.0;
            chart.draw_series(LineSeries::new([(x, 1.0), (x, hi)], GRID))?;
            let (px, py) = chart.backend_coord(&(x, 1.0));
            let l = format!("{x:.0}");
            text(&root, (px - label_w(&l) / 2, py + 8), &l, &BLACK, 1);
        }
        for e in 0..=hi_exp.max(1) {
            let y = 10f64.powi(e);
            chart.draw_series(LineSeries::new([(0.0, y), (xmax, y)], GRID))?;
            let (px, py) = chart.backend_coord(&(0.0, y));
            let l = if y < 1000.0 { format!("{y}ms") } else { format!("{}s", y / 1000.0) };
            text(&root, (px - label_w(&l) - 6, py - 4), &l, &BLACK, 1);
        }
        chart.draw_series(LineSeries::new([(0.0, 1.0), (xmax, 1.0), (xmax, hi), (0.0, hi), (0.0, 1.0)], BLACK))?;
        for (i, (name, v, color)) in series.iter().enumerate() {
            chart.draw_series(v.iter().map(|(x, y)| Circle::new((*x, (y * 1000.0).clamp(1.0, hi)), 2, color.filled())))?;
            text(&root, (90, 60 + 12 * i as i32), &format!("{name} (n={})", v.len()), color, 1);
        }
        text(&root, (70, 14), title, &BLACK, 2);
        text(&root, (330, 530), x_name, &BLACK, 1);
        root.present()?;
    }
    Ok(path)
}
