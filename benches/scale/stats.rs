//! Percentiles, and the lines that print a figure with its sample count and a target.

/// A sorted sample set (seconds or any unit the caller names).
pub struct Sample {
    pub sorted: Vec<f64>,
}

impl Sample {
    pub fn new(mut v: Vec<f64>) -> Sample {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        Sample { sorted: v }
    }

    pub fn n(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile (`p` in 0..=1); NaN when empty.
    pub fn p(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (p * self.sorted.len() as f64).ceil().max(1.0) as usize;
        self.sorted[rank.min(self.sorted.len()) - 1]
    }

    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(f64::NAN)
    }

    /// "p50 X  p90 X  p99 X  max X (n=N)", values scaled by `scale` and printed with `unit`.
    pub fn line(&self, scale: f64, unit: &str) -> String {
        if self.sorted.is_empty() {
            return "no samples (n=0)".into();
        }
        let f = |v: f64| fmt(v * scale);
        format!(
            "p50 {}{unit}  p90 {}{unit}  p99 {}{unit}  max {}{unit}  (n={})",
            f(self.p(0.5)),
            f(self.p(0.9)),
            f(self.p(0.99)),
            f(self.max()),
            self.n()
        )
    }
}

/// A number with about three significant digits.
pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    // An empty float sum is -0.0: print it as 0.
    let v = v + 0.0;
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One target line: what was asked, what was measured, met or missed.
pub fn target(what: &str, measured: &str, met: bool) -> String {
    format!("  target {what:<52} {measured:<28} {}", if met { "met" } else { "MISSED" })
}

pub fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
