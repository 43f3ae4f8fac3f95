//! Random draws to spread retries and reconnections out (the jitter of Twisted's
//! `ReconnectingClientFactory` and `backoffPolicy`). Not for cryptography.

/// A small generator (splitmix64) seeded from the time, the process id and a counter.
pub(crate) struct JitterSource {
    state: u64,
}

impl JitterSource {
    /// A generator seeded differently from every other one in this process.
    pub(crate) fn seeded() -> JitterSource {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        JitterSource {
            state: nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id()),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` (Python's `random.random`).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One draw from the standard normal distribution (Box–Muller; Python's
    /// `random.normalvariate(0, 1)`).
    pub(crate) fn sample(&mut self) -> f64 {
        // 1 - uniform is in (0, 1], so the logarithm is finite.
        let (u1, u2) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::JitterSource;

    #[test]
    fn the_jitter_source_is_standard_normal() {
        let mut source = JitterSource { state: 42 };
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|_| source.sample()).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        let within_one = draws.iter().filter(|x| x.abs() < 1.0).count() as f64 / n as f64;
        assert!((within_one - 0.6827).abs() < 0.02, "{within_one}");
        assert!(draws.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn uniform_draws_stay_in_zero_to_one() {
        let mut source = JitterSource { state: 7 };
        let draws: Vec<f64> = (0..20_000).map(|_| source.uniform()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
