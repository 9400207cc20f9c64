//! Start-anchored timing, as pure functions of an injected `now`.
//!
//! For loop i with start S_i and end E_i, the next loop starts at max(S_i + interval, E_i):
//! anchored on the previous start, never overlapping, and with no catch-up loops for time
//! that was lost to an overrun or to the operator being down.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

pub use crate::duration::{parse_duration, parse_offset, MAX_DURATION};

/// `spec.jitter`: each scheduled loop starts a stable pseudo-random offset in [0, max) after
/// it is due. The offset is a hash of the LoopService's uid and the loop's number, so every
/// operator instance computes the same one, before and after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jitter<'a> {
    pub uid: &'a str,
    pub max: Duration,
    /// When the LoopService was created: the first loop's due time, so that its jittered
    /// start does not move with each look at it.
    pub created: Timestamp,
}

impl Jitter<'_> {
    /// The offset of loop `n`, to the millisecond, in [0, max).
    pub fn offset(&self, n: i64) -> Duration {
        let ms = self.max.as_millis().min(u128::from(u64::MAX)) as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        let digest = Sha256::digest(format!("{}/{n}", self.uid).as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Duration::from_millis(u64::from_be_bytes(first) % ms)
    }
}

/// `spec.alignment`: due times lie on the grid Unix epoch + offset + k × interval (UTC).
/// The next loop is due at the first grid point at or after the loop rule's time, so loops
/// are never closer than one interval and come back to the grid after an overrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alignment {
    /// `spec.alignment.offset`, shorter than the interval (zero when absent).
    pub offset: Duration,
    /// When the LoopService was created: the first loop is due at the first grid point at or
    /// after it.
    pub created: Timestamp,
}

/// The instants epoch + offset + k × interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub interval: Duration,
    pub offset: Duration,
}

impl Grid {
    /// How late a start may be and still count as on its grid point: a loop starts a little
    /// after it is due (the reconcile, the API call), and the next loop, one interval later,
    /// must not then move to the grid point after. A tenth of the interval, at most a minute.
    pub fn slack(&self) -> Duration {
        (self.interval / 10).min(Duration::from_secs(60))
    }

    /// The latest grid point at or before `t`.
    pub fn at_or_before(&self, t: Timestamp) -> Timestamp {
        let (iv, off) = (self.interval.as_nanos() as i128, self.offset.as_nanos() as i128);
        if iv == 0 {
            return t;
        }
        let k = (t.as_nanosecond() - off).div_euclid(iv);
        Timestamp::from_nanosecond(k * iv + off).unwrap_or(Timestamp::MIN)
    }

    /// The first grid point at or after `t`.
    pub fn at_or_after(&self, t: Timestamp) -> Timestamp {
        let before = self.at_or_before(t);
        if before >= t {
            before
        } else {
            add(before, self.interval)
        }
    }

    /// What the next loop counts one interval from: the grid point `start` was due at when it
    /// started no more than [`Grid::slack`] after it, else `start` itself.
    pub fn anchor(&self, start: Timestamp) -> Timestamp {
        let point = self.at_or_before(start);
        if until(start, point) <= self.slack() {
            point
        } else {
            start
        }
    }
}

/// The wait after `k` failed loops in a row: min(initial * 2^(k-1), max); zero for k = 0.
pub fn failure_backoff(k: i64, initial: Duration, max: Duration) -> Duration {
    if k <= 0 {
        return Duration::ZERO;
    }
    // 2^31 times even a second is beyond any max (one year at most).
    let doublings = (k - 1).min(31) as u32;
    initial.saturating_mul(1u32 << doublings).min(max)
}

/// The previous loop, as far as timing is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreviousLoop {
    pub start: Timestamp,
    /// `None` while the loop is still running.
    pub end: Option<Timestamp>,
}

/// When the next loop is due: at once for the first loop, else max(start + interval, end).
/// `None` while the previous loop is still running (loops never overlap).
pub fn next_start(previous: Option<PreviousLoop>, interval: Duration, now: Timestamp) -> Option<Timestamp> {
    match previous {
        None => Some(now),
        Some(PreviousLoop { end: None, .. }) => None,
        Some(PreviousLoop { start, end: Some(end) }) => Some(add(start, interval).max(end)),
    }
}

/// How long to wait from `now` until `at` (zero when it has passed).
pub fn until(at: Timestamp, now: Timestamp) -> Duration {
    let d = at.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// A loop overran when it ran longer than its interval.
pub fn overran(start: Timestamp, end: Timestamp, interval: Duration) -> bool {
    end.duration_since(start) > signed(interval)
}

/// Seconds between two instants (negative when `end` is before `start`).
pub fn seconds_between(start: Timestamp, end: Timestamp) -> f64 {
    end.duration_since(start).as_secs_f64()
}

/// The seed's overrun message: "loop 7 took 41.2 seconds, which is longer than its interval of 30 seconds".
pub fn overrun_message(loop_number: i64, took: f64, interval: Duration) -> String {
    format!(
        "loop {loop_number} took {} seconds, which is longer than its interval of {} seconds",
        fmt_secs(took),
        fmt_secs(interval.as_secs_f64())
    )
}

/// Seconds with at most one decimal, without a trailing `.0` for whole numbers.
pub fn fmt_secs(s: f64) -> String {
    let r = (s * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(signed(d)).unwrap_or(Timestamp::MAX)
}

pub fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(signed(d)).unwrap_or(Timestamp::MIN)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn t(s: f64) -> Timestamp {
        Timestamp::from_millisecond((s * 1000.0) as i64).unwrap()
    }
    const I30: Duration = Duration::from_secs(30);

    #[test]
    fn parses_the_documented_forms() {
        for (s, secs) in [("30s", 30.0), ("1m30s", 90.0), ("2h", 7200.0), ("1s500ms", 1.5), ("1h0m0s", 3600.0), ("01s", 1.0)] {
            assert_eq!(parse_duration("interval", s).unwrap().as_secs_f64(), secs, "{s}");
        }
    }

    #[test]
    fn refuses_short_malformed_and_huge_durations() {
        for s in ["", "0s", "500ms", "999ms", "1.5s", "30", "s", "1m 30s", "30s1m", "1s1s", "-1s", "1d", "30sec"] {
            let e = parse_duration("interval", s).unwrap_err();
            assert!(e.contains("spec.interval"), "{s}: {e}");
        }
        let e = parse_duration("timeout", "8761h").unwrap_err();
        assert!(e.contains("spec.timeout") && e.contains("longer than the maximum"), "{e}");
        let e = parse_duration("timeout", "99999h").unwrap_err();
        assert!(e.contains("longer than the maximum"), "{e}");
        // More significant digits than the pattern allows: refused as malformed, by the API
        // server's schema too, before a CEL rule could fail to convert it.
        for s in ["100000h", "9999999999h", "99999999999h", "10000000m", "1000000000s", "1s1000000000000ms", "99999999999999999999999s"] {
            let e = parse_duration("interval", s).unwrap_err();
            assert!(e.contains("spec.interval") && e.contains("not a duration"), "{s}: {e}");
        }
        // Leading zeros do not count.
        assert_eq!(parse_duration("interval", "0000000001s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("interval", "00008760h").unwrap(), MAX_DURATION);
    }

    #[test]
    fn the_pattern_refuses_only_what_is_longer_than_a_year() {
        // The largest value of each part the pattern lets through, and the smallest it refuses.
        let re = Regex::new(crate::crd::DURATION_PATTERN).unwrap();
        for (ok, refused) in
            [("99999h", "100000h"), ("9999999m", "10000000m"), ("999999999s", "1000000000s"), ("1s999999999999ms", "1s1000000000000ms")]
        {
            assert!(re.is_match(ok), "{ok}");
            assert!(!re.is_match(refused), "{refused}");
            assert!(humantime::parse_duration(refused).unwrap() > MAX_DURATION, "{refused}");
        }
        // The longest value it lets through is inside Go's duration range (about 2562047h),
        // so the API server's CEL duration() never overflows on it.
        let longest = humantime::parse_duration("99999h9999999m999999999s999999999999ms").unwrap();
        assert!(longest < Duration::from_secs(2_562_047 * 3600), "{longest:?}");
    }

    #[test]
    fn the_schema_pattern_alone_enforces_the_one_second_floor() {
        // The API server applies DURATION_PATTERN on its own; it must refuse sub-second values.
        let re = Regex::new(crate::crd::DURATION_PATTERN).unwrap();
        for s in ["30s", "1m30s", "2h", "1s500ms", "0h1s", "1h0m", "0m1s0ms"] {
            assert!(re.is_match(s), "{s:?} should match");
        }
        for s in ["0s", "0m0s", "500ms", "0h0m0s999ms", "1.5s", "1m 30s", "s", ""] {
            assert!(!re.is_match(s), "{s:?} should not match");
        }
    }

    #[test]
    fn first_loop_starts_at_once() {
        assert_eq!(next_start(None, I30, t(100.0)), Some(t(100.0)));
    }

    #[test]
    fn next_start_is_anchored_on_the_previous_start() {
        let prev = PreviousLoop { start: t(100.0), end: Some(t(104.5)) };
        assert_eq!(next_start(Some(prev), I30, t(105.0)), Some(t(130.0)));
    }

    #[test]
    fn an_overrun_is_followed_at_once_without_catch_up() {
        // Loop ran 95 s with a 30 s interval: the next starts at its end, not three more.
        let prev = PreviousLoop { start: t(100.0), end: Some(t(195.0)) };
        assert_eq!(next_start(Some(prev), I30, t(195.2)), Some(t(195.0)));
        assert!(overran(t(100.0), t(195.0), I30));
        assert!(!overran(t(100.0), t(130.0), I30), "exactly the interval is not an overrun");
    }

    #[test]
    fn no_new_loop_while_one_runs() {
        let prev = PreviousLoop { start: t(100.0), end: None };
        assert_eq!(next_start(Some(prev), I30, t(1000.0)), None);
    }

    #[test]
    fn after_downtime_one_loop_is_due_now_not_a_burst() {
        // The operator was down for an hour: the next start is long past, so exactly one loop
        // is due, and the one after it is anchored on that new start.
        let prev = PreviousLoop { start: t(100.0), end: Some(t(101.0)) };
        let now = t(3700.0);
        let due = next_start(Some(prev), I30, now).unwrap();
        assert!(due <= now);
        let after = PreviousLoop { start: now, end: Some(t(3701.0)) };
        assert_eq!(next_start(Some(after), I30, t(3701.5)), Some(t(3730.0)));
    }

    #[test]
    fn the_grid_is_the_epoch_plus_offset_plus_multiples_of_the_interval() {
        let quarter = Grid { interval: Duration::from_secs(900), offset: Duration::ZERO };
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(quarter.at_or_after(at("2026-12-05T10:07:12Z")), at("2026-12-05T10:15:00Z"));
        assert_eq!(quarter.at_or_after(at("2026-12-05T10:15:00Z")), at("2026-12-05T10:15:00Z"), "a grid point is its own");
        assert_eq!(quarter.at_or_before(at("2026-12-05T10:14:59.999Z")), at("2026-12-05T10:00:00Z"));
        // Every 6 hours from 05:00 UTC.
        let six = Grid { interval: Duration::from_secs(6 * 3600), offset: Duration::from_secs(5 * 3600) };
        assert_eq!(six.at_or_after(at("2026-12-05T00:00:00Z")), at("2026-12-05T05:00:00Z"));
        assert_eq!(six.at_or_after(at("2026-12-05T23:00:01Z")), at("2026-12-06T05:00:00Z"));
        // Before the epoch too, and an interval that does not divide a day.
        let odd = Grid { interval: Duration::from_secs(7), offset: Duration::from_secs(3) };
        assert_eq!(odd.at_or_after(t(-5.0)), t(-4.0));
        assert_eq!(odd.at_or_before(t(9.9)), t(3.0));
        // A start up to a tenth of the interval (at most a minute) late counts from its grid point.
        assert_eq!(quarter.slack(), Duration::from_secs(60));
        assert_eq!(odd.slack(), Duration::from_millis(700));
        assert_eq!(odd.anchor(t(10.7)), t(10.0));
        assert_eq!(odd.anchor(t(10.8)), t(10.8));
        assert_eq!(odd.anchor(t(9.99)), t(9.99));
    }

    #[test]
    fn jitter_offsets_are_stable_spread_and_below_the_maximum() {
        let j = Jitter { uid: "0c4d2f7e-1111-2222-3333-444455556666", max: Duration::from_secs(10), created: t(0.0) };
        let offsets: Vec<Duration> = (1..=200).map(|n| j.offset(n)).collect();
        assert!(offsets.iter().all(|o| *o < Duration::from_secs(10)));
        // The same uid and loop give the same offset (a restart computes it again).
        let again = Jitter { created: t(99.0), ..j };
        assert_eq!(offsets, (1..=200).map(|n| again.offset(n)).collect::<Vec<_>>());
        // Spread over the range, and another LoopService gets other offsets.
        let mean = offsets.iter().map(|o| o.as_secs_f64()).sum::<f64>() / 200.0;
        assert!((3.5..6.5).contains(&mean), "mean offset {mean}");
        let other = Jitter { uid: "another", ..j };
        assert_ne!(offsets[..10], (1..=10).map(|n| other.offset(n)).collect::<Vec<_>>()[..]);
        assert_eq!(Jitter { max: Duration::ZERO, ..j }.offset(1), Duration::ZERO);
    }

    #[test]
    fn failure_backoff_doubles_up_to_its_maximum() {
        let s = Duration::from_secs;
        let waits: Vec<u64> = (0..=7).map(|k| failure_backoff(k, s(10), s(300)).as_secs()).collect();
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(failure_backoff(i64::MAX, s(1), MAX_DURATION), MAX_DURATION.min(s(1 << 31)));
        assert_eq!(failure_backoff(-1, s(1), s(2)), Duration::ZERO);
    }

    #[test]
    fn until_is_zero_for_past_instants() {
        assert_eq!(until(t(10.0), t(20.0)), Duration::ZERO);
        assert_eq!(until(t(20.5), t(20.0)), Duration::from_millis(500));
    }

    #[test]
    fn overrun_message_reads_like_the_seed() {
        assert_eq!(overrun_message(7, 41.23, I30), "loop 7 took 41.2 seconds, which is longer than its interval of 30 seconds");
        assert_eq!(fmt_secs(1.5), "1.5");
    }
}
