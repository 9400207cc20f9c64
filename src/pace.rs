//! Paces reports per namespace by reservation: each report is given its own instant to go, at
//! most `rate` a second after a burst, and the reconcile that asked comes back then instead of
//! waiting inside itself.
//!
//! A limiter one waits on (governor's `until_key_ready`) does not do for thousands of reports:
//! every waiter wakes at the same instant and all but one sleep again, each wait holds a
//! reconcile place, and a wait longer than the reconcile's timeout fails the reconcile, which
//! is retried from the start. Here a report past the burst is booked at the next free instant
//! of its namespace (the generic cell rate algorithm's theoretical arrival time, as Go's
//! `rate.Limiter.Reserve` does), and its reconcile is requeued to it: one wake each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

/// A booking unused this long after its instant is dropped once the lane has many (its
/// LoopService was deleted, or its spec fixed, before it came back). One left behind does no
/// harm: if its LoopService reports again, it finds its instant passed and goes.
const STALE: Duration = Duration::from_secs(600);

/// Reports per namespace: `rate` a second after a burst of `burst`.
pub struct Pace {
    /// Time between two reports past the burst.
    every: Duration,
    /// How far ahead of its turn a report may go: the burst, less one.
    ahead: Duration,
    lanes: Mutex<HashMap<String, Lane>>,
}

#[derive(Default)]
struct Lane {
    /// When the next report would go if none went ahead of its turn.
    next: Option<Timestamp>,
    /// Reports booked for a later instant, by LoopService name.
    booked: HashMap<String, Timestamp>,
}

impl Pace {
    pub fn new(rate: std::num::NonZeroU32, burst: std::num::NonZeroU32) -> Pace {
        let every = Duration::from_secs(1) / rate.get();
        Pace { every, ahead: every * (burst.get() - 1), lanes: Mutex::default() }
    }

    /// Whether the report of LoopService `name` in `namespace` may go at `now`: `None` if so,
    /// else how long until its booked instant. Asked again before then, it answers the time
    /// left; at or after it, `None`, and the booking is used.
    pub fn turn(&self, namespace: &str, name: &str, now: Timestamp) -> Option<Duration> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let lane = lanes.entry(namespace.to_string()).or_default();
        if let Some(at) = lane.booked.get(name).copied() {
            if at <= now {
                lane.booked.remove(name);
                return None;
            }
            return Some(crate::schedule::until(at, now));
        }
        let next = lane.next.map_or(now, |n| n.max(now));
        lane.next = Some(next + self.every);
        let at = next - self.ahead;
        if at <= now {
            return None;
        }
        if lane.booked.len() >= 1024 && lane.booked.len().is_power_of_two() {
            lane.booked.retain(|_, t| *t + STALE > now);
        }
        lane.booked.insert(name.to_string(), at);
        Some(crate::schedule::until(at, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> std::num::NonZeroU32 {
        std::num::NonZeroU32::new(n).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_goes_at_once_then_each_report_is_booked_its_own_instant() {
        let pace = Pace::new(nz(10), nz(3));
        let t = Timestamp::UNIX_EPOCH;
        let waits: Vec<_> = (0..6).map(|i| pace.turn("a", &format!("ls-{i}"), t)).collect();
        assert_eq!(waits, [None, None, None, Some(ms(100)), Some(ms(200)), Some(ms(300))]);
        // Another namespace has its own lane.
        assert_eq!(pace.turn("b", "ls-0", t), None);
    }

    #[test]
    fn a_booked_report_asked_early_waits_for_the_rest_and_goes_at_its_instant_once() {
        let pace = Pace::new(nz(10), nz(1));
        let t = Timestamp::UNIX_EPOCH;
        assert_eq!(pace.turn("a", "first", t), None);
        assert_eq!(pace.turn("a", "late", t), Some(ms(100)));
        // Woken early by a change: the same booking, not a new one further back.
        assert_eq!(pace.turn("a", "late", t + ms(40)), Some(ms(60)));
        assert_eq!(pace.turn("a", "late", t + ms(100)), None);
        // Its booking is used: a next report is booked behind the others.
        assert_eq!(pace.turn("a", "late", t + ms(100)), Some(ms(100)));
    }

    #[test]
    fn the_pace_holds_over_time_and_a_quiet_lane_has_its_burst_again() {
        let pace = Pace::new(nz(50), nz(50));
        let t = Timestamp::UNIX_EPOCH;
        let booked: Vec<_> = (0..1000).filter_map(|i| pace.turn("a", &format!("ls-{i}"), t)).collect();
        assert_eq!(booked.len(), 950, "past the burst of 50");
        assert_eq!(booked.last().copied(), Some(ms(19_000)), "1,000 reports at 50 a second");
        // Long after, the lane has been quiet: a burst again.
        let later = t + Duration::from_secs(60);
        assert!((0..50).all(|i| pace.turn("a", &format!("new-{i}"), later).is_none()));
        assert!(pace.turn("a", "new-50", later).is_some());
    }
}
