//! How a duration is written in an error message, as every language of xshm writes it ("250
//! ms", "1.5 s", "20 µs"), and the end of a bounded wait. Process-local.
#![forbid(unsafe_code)] // pure: no OS calls, no unsafe (src/lib.rs, "Safety")

use std::time::{Duration, Instant};

/// `d` as people write it: the largest unit that keeps a whole part (s, ms, µs, ns), at most
/// three decimals, trailing zeros dropped (the C++ `format_duration`).
pub fn format_duration(d: Duration) -> String {
    const UNIT: [u128; 4] = [1_000_000_000, 1_000_000, 1_000, 1];
    const NAME: [&str; 4] = ["s", "ms", "µs", "ns"];
    let mag = d.as_nanos();
    let mut u = 0;
    while u < 3 && mag < UNIT[u] {
        u += 1;
    }
    if mag == 0 {
        u = 0;
    }
    let (whole, milli) = loop {
        let mut whole = mag / UNIT[u];
        let mut milli = if UNIT[u] >= 1000 {
            ((mag % UNIT[u]) * 1000 + UNIT[u] / 2) / UNIT[u]
        } else {
            0
        };
        if milli == 1000 {
            whole += 1;
            milli = 0;
        }
        if whole < 1000 || u == 0 {
            break (whole, milli);
        }
        u -= 1; // 999.9996 ms rounds to 1000 ms: say 1 s
    };
    let mut out = whole.to_string();
    if milli != 0 {
        let frac = format!("{milli:03}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push(' ');
    out.push_str(NAME[u]);
    out
}

/// The end of a bounded wait, fixed when the wait starts: `None` is forever.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        // A timeout too long for the clock is forever.
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Time left; `None` when forever.
    pub(crate) fn left(&self) -> Option<Duration> {
        self.0
            .map(|end| end.saturating_duration_since(Instant::now()))
    }

    #[cfg(test)]
    fn passed(&self) -> bool {
        self.left() == Some(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let ns = Duration::from_nanos;
        assert_eq!(format_duration(ns(0)), "0 s");
        assert_eq!(format_duration(ns(1_000_000_000)), "1 s");
        assert_eq!(format_duration(ns(1_500_000_000)), "1.5 s");
        assert_eq!(format_duration(ns(250_000_000)), "250 ms");
        assert_eq!(format_duration(ns(20_000)), "20 µs");
        assert_eq!(format_duration(ns(7)), "7 ns");
        assert_eq!(format_duration(ns(999_999_600)), "1 s");
        assert_eq!(format_duration(ns(1_234_567)), "1.235 ms");
        assert_eq!(format_duration(ns(2_000_400_000)), "2 s");
    }

    #[test]
    fn deadlines() {
        assert_eq!(Deadline::after(None).left(), None);
        assert!(Deadline::after(Some(Duration::ZERO)).passed());
        assert!(!Deadline::after(Some(Duration::from_secs(60))).passed());
        assert_eq!(Deadline::after(Some(Duration::MAX)).left(), None);
    }
}
