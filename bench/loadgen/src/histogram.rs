//! A small log-linear histogram of nanosecond latencies.
//!
//! Values below `2^SUB_BITS` get a bucket each; above that every power of two
//! is split into `2^(SUB_BITS-1)` equal buckets, so a bucket's width is at
//! most 1/128 of its lower bound (under 0.8 % relative error) and the whole
//! `u64` range fits in 7,424 counters.

const SUB_BITS: u32 = 8;
const EXACT: u64 = 1 << SUB_BITS; // values below this have their own bucket
const HALF: u64 = 1 << (SUB_BITS - 1); // buckets per power of two above EXACT
const BUCKETS: usize = ((64 - SUB_BITS as u64) * HALF + EXACT) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index_of(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - (SUB_BITS - 1);
    (u64::from(shift) * HALF + (v >> shift)) as usize
}

/// The lowest value that falls into bucket `idx`, and the bucket's width.
fn bucket_range(idx: usize) -> (u64, u64) {
    let idx = idx as u64;
    if idx < EXACT {
        return (idx, 1);
    }
    let shift = idx / HALF - 1;
    let mantissa = idx - shift * HALF;
    (mantissa << shift, 1 << shift)
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, value: u64) {
        self.counts[index_of(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at percentile `p` (0–100): the midpoint of the bucket holding
    /// the `ceil(p% · count)`-th smallest value, capped at the largest value
    /// recorded. Zero for an empty histogram.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_range(idx);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut expected_low = 0u64;
        for idx in 0..BUCKETS {
            let (low, width) = bucket_range(idx);
            assert_eq!(low, expected_low, "bucket {idx}");
            assert_eq!(index_of(low), idx);
            assert_eq!(index_of(low + (width - 1)), idx);
            expected_low = low.wrapping_add(width);
        }
        assert_eq!(expected_low, 0, "last bucket ends at u64::MAX");
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_small() {
        for idx in EXACT as usize..BUCKETS {
            let (low, width) = bucket_range(idx);
            assert!(width as f64 / low as f64 <= 1.0 / HALF as f64);
        }
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), 0);
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.percentile(50.0) as f64;
        let p99 = h.percentile(99.0) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.01, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.01, "{p99}");
        assert_eq!(h.percentile(100.0), 1_000_000);
        let mut other = Histogram::new();
        other.record(5);
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.percentile(0.0), 5);
        assert_eq!(h.max(), 1_000_000);
    }
}
