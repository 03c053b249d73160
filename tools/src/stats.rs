//! Latency summaries for the reports.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of `values` (NaN for none).
pub fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let index = ((values.len() as f64 - 1.0) * q).round() as usize;
        values[index.min(values.len() - 1)]
    };
    let mean = if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 };
    Percentiles {
        mean,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: values.last().copied().unwrap_or(f64::NAN),
    }
}
