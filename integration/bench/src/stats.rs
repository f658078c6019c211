//! Latency summaries: nearest-rank percentiles over every recorded sample, and medians.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of one run, in microseconds (JSON-friendly and precise enough for a socket).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Slowest sample, µs.
    pub max_us: f64,
}

impl Latency {
    /// Summarises `samples` (sorted in place); `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        Some(Latency {
            count: samples.len(),
            p50_us: us(nearest_rank(samples, 50.0)),
            p99_us: us(nearest_rank(samples, 99.0)),
            max_us: us(samples[samples.len() - 1]),
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty `sorted`.
fn nearest_rank(sorted: &[Duration], pct: f64) -> Duration {
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (mean of the middle two for an even count); `None` when empty or
/// when a value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = us(&(1..=100).rev().collect::<Vec<_>>());
        let l = Latency::of(&mut s).expect("non-empty");
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_us, 50.0);
        assert_eq!(l.p99_us, 99.0);
        assert_eq!(l.max_us, 100.0);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let l = Latency::of(&mut us(&[7])).expect("non-empty");
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (7.0, 7.0, 7.0));
    }

    #[test]
    fn p99_of_a_small_run_is_its_slowest_sample() {
        let l = Latency::of(&mut us(&[1, 2, 3, 1000])).expect("non-empty");
        assert_eq!(l.p99_us, 1000.0);
        assert_eq!(l.p50_us, 2.0);
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(Latency::of(&mut []), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }
}
