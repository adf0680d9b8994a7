//! Percentiles of one run, the median over runs, and the output line
//! `bench <name> key=value ...` that people read and scripts grep.

use std::fmt::Write as _;
use std::time::Duration;

/// The `q` quantile (0..=1) of `samples` by nearest rank: the smallest
/// sample with at least `q` of all samples at or below it. With 500
/// samples, p99 is the 5th largest.
pub fn percentile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, min and max of one value over runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Self { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        Self { median, min: sorted[0], max: sorted[sorted.len() - 1] }
    }
}

/// One output line, built key by key in the order given.
pub struct Line {
    text: String,
}

impl Line {
    pub fn new(name: &str) -> Self {
        Self { text: format!("bench {name}") }
    }

    /// `key=` the median, then `key_min=` and `key_max=`.
    pub fn spread(mut self, key: &str, spread: Spread, decimals: usize) -> Self {
        let _ = write!(
            self.text,
            " {key}={m:.d$} {key}_min={lo:.d$} {key}_max={hi:.d$}",
            m = spread.median,
            lo = spread.min,
            hi = spread.max,
            d = decimals
        );
        self
    }

    /// `key=` the median only.
    pub fn median(mut self, key: &str, spread: Spread, decimals: usize) -> Self {
        let _ = write!(self.text, " {key}={:.d$}", spread.median, d = decimals);
        self
    }

    pub fn value(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let value = value.to_string();
        // Values never hold spaces, so a line splits on spaces into pairs.
        let _ = write!(self.text, " {key}={}", value.replace(' ', "_"));
        self
    }

    pub fn number(self, key: &str, value: f64, decimals: usize) -> Self {
        self.value(key, format!("{value:.decimals$}"))
    }

    pub fn meets(self, met: bool) -> Self {
        self.value("meets_target", if met { "yes" } else { "no" })
    }

    /// Prints the line, ending with the machine's 1-minute load average
    /// (`load1=`): on a shared 2-core machine, other work inflates the
    /// tails, and the reader should see how busy it was.
    pub fn print(self) {
        let line = match load_average() {
            Some(load) => self.value("load1", load),
            None => self,
        };
        println!("{}", line.text);
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        &self.text
    }
}

/// The 1-minute load average from `/proc/loadavg`, as written there.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let samples = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&millis(&[7]), 0.99), Duration::from_millis(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn spreads_take_the_median_of_runs() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Spread { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(Spread::of(&[]).median.is_nan());
    }

    #[test]
    fn a_line_is_name_then_pairs() {
        let line = Line::new("x").spread("p99_ms", Spread { median: 1.0, min: 0.5, max: 2.0 }, 2).value("runs", 3);
        assert_eq!(line.text(), "bench x p99_ms=1.00 p99_ms_min=0.50 p99_ms_max=2.00 runs=3");
    }
}
