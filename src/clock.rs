//! The time, as reconciles read it: once at the start of each, through this trait, so that tests
//! drive the decisions with a clock of their own. The operator's clock is the API server's
//! ([`ServerClock`]): loops' starts and ends, and so their durations and overruns, are read off
//! one clock even when this machine's is off.

use std::sync::Mutex;

use jiff::Timestamp;

pub trait Clock: Send + Sync + 'static {
    /// The time loops are planned and recorded in.
    fn now(&self) -> Timestamp;

    /// This machine's own clock, to time a request by (see [`ServerClock`]).
    fn machine(&self) -> Timestamp {
        self.now()
    }

    /// A reading of the API server's clock: `stamp` (to the second, rounded down) was set
    /// between `sent` and `received` by [`Clock::machine`]. Only [`ServerClock`] learns from it.
    fn learn(&self, _sent: Timestamp, _received: Timestamp, _stamp: Timestamp) {}
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that says what it is told: for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: Timestamp) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t = crate::schedule::add(*t, by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How many readings of the API server's clock are kept.
const READINGS_KEPT: usize = 16;

/// The API server's clock, as read through this machine's: the time loops are planned and
/// recorded in, so that a loop's start (the operator's) and its end (the Job controller's
/// stamp) are read off one clock however far this machine's clock is off.
///
/// Every answer the API server stamps (a Job's `creationTimestamp`, a response's `Date`
/// header, both to the second) was stamped between the request's send and its answer's
/// receipt: the offset between the clocks lies in a window a second wide plus the round trip.
/// The window of each reading is kept; the estimate is the smallest correction within the
/// intersection of the newest readings that agree (none when this machine's clock agrees with
/// them all; a reading that agrees with none before it means this machine's clock stepped,
/// and starts anew). Until the first reading, the offset is taken as 0.
pub struct ServerClock {
    base: Box<dyn Clock>,
    readings: Mutex<std::collections::VecDeque<Window>>,
}

/// Bounds of (API server's clock − this machine's), in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub low: i64,
    pub high: i64,
}

impl Window {
    /// The window of one reading: `stamp`, rounded down to the second, was stamped between
    /// `sent` and `received` (this machine's clock).
    pub fn of(sent: Timestamp, received: Timestamp, stamp: Timestamp) -> Window {
        let stamp = stamp.as_second() * 1000;
        Window { low: stamp - received.as_millisecond(), high: stamp + 1000 - sent.as_millisecond() }
    }

    fn meet(self, other: Window) -> Option<Window> {
        let w = Window { low: self.low.max(other.low), high: self.high.min(other.high) };
        (w.low <= w.high).then_some(w)
    }

    /// The smallest correction the readings allow: none at all when this machine's clock
    /// agrees with every reading (the common case, and then loops never move when a new
    /// reading narrows the window), else the bound nearest to it.
    pub fn nearest_to_zero(self) -> i64 {
        0i64.clamp(self.low, self.high)
    }
}

impl ServerClock {
    pub fn new(base: impl Clock) -> Self {
        ServerClock { base: Box::new(base), readings: Mutex::new(Default::default()) }
    }

    /// What is known of the offset: the intersection of the newest readings that agree.
    pub fn window(&self) -> Option<Window> {
        let readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest = readings.iter().rev();
        let mut w = *newest.next()?;
        for r in newest {
            match w.meet(*r) {
                Some(m) => w = m,
                None => break,
            }
        }
        Some(w)
    }
}

impl Clock for ServerClock {
    fn now(&self) -> Timestamp {
        let offset = self.window().map_or(0, Window::nearest_to_zero);
        self.base.now().checked_add(jiff::SignedDuration::from_millis(offset)).unwrap_or_else(|_| self.base.now())
    }

    fn machine(&self) -> Timestamp {
        self.base.now()
    }

    fn learn(&self, sent: Timestamp, received: Timestamp, stamp: Timestamp) {
        let mut readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        if readings.len() == READINGS_KEPT {
            readings.pop_front();
        }
        readings.push_back(Window::of(sent, received, stamp));
    }
}

/// This machine's clock moved by a fixed offset: a test build's stand-in for a machine whose
/// clock is wrong.
pub struct OffsetClock(pub jiff::SignedDuration);

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        Timestamp::now().checked_add(self.0).unwrap_or_else(|_| Timestamp::now())
    }
}

/// Reads the API server's clock from the `Date` header of a request that reads nothing
/// (`/version`), `n` times a quarter of a second apart (each reading lands at another point
/// of the server's second, so together they narrow the window). Returns the readings taken.
pub async fn read_server_clock(client: &kube::Client, clock: &dyn Clock, n: usize) -> usize {
    let mut taken = 0;
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let Ok(request) = axum::http::Request::get("/version").body(Vec::new()) else { return taken };
        let sent = clock.machine();
        let Ok(response) = client.send(request.map(kube::client::Body::from)).await else { continue };
        let received = clock.machine();
        let date = response.headers().get(axum::http::header::DATE).and_then(|d| d.to_str().ok());
        if let Some(stamp) = date.and_then(|d| jiff::fmt::rfc2822::parse(d).ok()) {
            clock.learn(sent, received, stamp.timestamp());
            taken += 1;
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("an instant")
    }

    /// A machine clock that says what it is told.
    struct Machine(std::sync::Arc<ManualClock>);

    impl Clock for Machine {
        fn now(&self) -> Timestamp {
            self.0.now()
        }
    }

    #[test]
    fn a_reading_bounds_the_offset_by_its_second_and_round_trip() {
        // Sent at 10:00:00.100, answered at .140, stamped 11:00:05 (the server an hour and
        // about five seconds ahead).
        let w = Window::of(t("2026-03-01T10:00:00.100Z"), t("2026-03-01T10:00:00.140Z"), t("2026-03-01T11:00:05Z"));
        assert_eq!(w, Window { low: 3_604_860, high: 3_605_900 });
    }

    #[test]
    fn the_server_clock_narrows_with_readings_and_starts_anew_when_the_machine_clock_steps() {
        let machine = std::sync::Arc::new(ManualClock::new(t("2026-03-01T10:00:00.300Z")));
        let clock = ServerClock::new(Machine(machine.clone()));
        assert_eq!(clock.now(), t("2026-03-01T10:00:00.300Z"), "no reading yet: the machine's clock");
        // The server is exactly an hour ahead (offset 3,600,000 ms); round trips of 20 ms, sent
        // at different points of the second.
        for sent_ms in [300, 550, 800, 50] {
            let sent = t("2026-03-01T10:00:01Z") + jiff::SignedDuration::from_millis(sent_ms);
            let received = sent + jiff::SignedDuration::from_millis(20);
            let server = Timestamp::from_millisecond(sent.as_millisecond() + 10 + 3_600_000).unwrap();
            clock.learn(sent, received, Timestamp::from_second(server.as_second()).unwrap());
        }
        let w = clock.window().expect("readings");
        assert!(w.low <= 3_600_000 && 3_600_000 <= w.high && w.high - w.low <= 300, "{w:?}");
        let ahead = clock.now().as_millisecond() - machine.now().as_millisecond();
        assert_eq!(ahead, w.low, "the smallest correction the readings allow");
        assert!((ahead - 3_600_000).abs() <= 300, "{ahead}");
        // The machine's clock is set right: the next reading agrees with none before it.
        let sent = t("2026-03-01T11:00:10.400Z");
        clock.learn(sent, sent + jiff::SignedDuration::from_millis(20), t("2026-03-01T11:00:10Z"));
        let w = clock.window().expect("readings");
        assert!(w.low <= 0 && 0 <= w.high, "{w:?}");
        assert_eq!(clock.now(), machine.now(), "a clock that agrees with the readings is not moved at all");
    }
}
