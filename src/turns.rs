//! Turns to make an API request, a bounded number at once, launches first: a due loop's Job
//! create (and the reads and checks right before it) takes the next free turn before any
//! status write, delete of an old Job or Event. When thousands of loops are due at once, every
//! Job is created before the bookkeeping of any.
//!
//! Bookkeeping also holds back, for at most `HOLD_FOR_LAUNCHES`, while launches are still in
//! flight: the API server answers the last Job creates of a burst sooner when the burst's
//! status writes do not compete with them. The bound keeps bookkeeping moving when launches
//! never stop (thousands of LoopServices on short intervals).

use std::time::Duration;

use tokio::sync::{watch, Semaphore, SemaphorePermit};

/// The longest bookkeeping waits for launches in flight (not for launches waiting for a turn:
/// those always go first).
pub const HOLD_FOR_LAUNCHES: Duration = Duration::from_millis(500);

/// Which requests take the next turn when many wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Launch,
    Bookkeeping,
}

pub struct Turns {
    permits: Semaphore,
    /// Launch requests waiting for a turn; bookkeeping waits while there are any.
    launches_waiting: watch::Sender<usize>,
    /// Launch requests holding a turn.
    launches_in_flight: watch::Sender<usize>,
}

/// One request's turn, held until dropped.
pub struct Turn<'a> {
    _permit: Option<SemaphorePermit<'a>>,
    _launch: Option<Counted<'a>>,
}

impl Turns {
    /// `n` turns at once (at least one).
    pub fn new(n: usize) -> Turns {
        Turns { permits: Semaphore::new(n.max(1)), launches_waiting: watch::Sender::new(0), launches_in_flight: watch::Sender::new(0) }
    }

    pub async fn take(&self, priority: Priority) -> Turn<'_> {
        let permit = match priority {
            Priority::Launch => {
                let permit = {
                    self.launches_waiting.send_modify(|n| *n += 1);
                    // Counted out again even if this future is dropped while it waits.
                    let _waiting = Counted(&self.launches_waiting);
                    self.permits.acquire().await.ok()
                };
                self.launches_in_flight.send_modify(|n| *n += 1);
                return Turn { _permit: permit, _launch: Some(Counted(&self.launches_in_flight)) };
            }
            Priority::Bookkeeping => loop {
                let mut in_flight = self.launches_in_flight.subscribe();
                let _ = tokio::time::timeout(HOLD_FOR_LAUNCHES, in_flight.wait_for(|n| *n == 0)).await;
                let mut launches = self.launches_waiting.subscribe();
                // The sender lives as long as `self`: the wait cannot fail.
                let _ = launches.wait_for(|n| *n == 0).await;
                let permit = self.permits.acquire().await.ok();
                // A launch that queued meanwhile goes first.
                if *self.launches_waiting.borrow() == 0 {
                    break permit;
                }
            },
        };
        Turn { _permit: permit, _launch: None }
    }
}

/// One launch counted in a gauge (waiting, or in flight) for as long as it lives.
struct Counted<'a>(&'a watch::Sender<usize>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// With one turn held, a bookkeeping request queued first and a launch queued after it:
    /// the launch goes first when the turn is freed.
    #[tokio::test]
    async fn a_launch_queued_after_bookkeeping_goes_first() {
        let turns = Arc::new(Turns::new(1));
        let order = Arc::new(Mutex::new(vec![]));
        let held = turns.take(Priority::Bookkeeping).await;
        let spawn = |p: Priority, name: &'static str| {
            let (turns, order) = (turns.clone(), order.clone());
            tokio::spawn(async move {
                let _turn = turns.take(p).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
            })
        };
        let book = spawn(Priority::Bookkeeping, "status write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let launch = spawn(Priority::Launch, "job create");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        launch.await.unwrap();
        book.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["job create", "status write"]);
    }

    /// No more than `n` turns are out at once, and every request gets one.
    #[tokio::test]
    async fn at_most_n_at_once_and_all_served() {
        let turns = Arc::new(Turns::new(3));
        let (now, peak) = (Arc::new(Mutex::new(0usize)), Arc::new(Mutex::new(0usize)));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (turns, now, peak) = (turns.clone(), now.clone(), peak.clone());
                tokio::spawn(async move {
                    let _turn = turns.take(if i % 2 == 0 { Priority::Launch } else { Priority::Bookkeeping }).await;
                    let n = {
                        let mut n = now.lock().unwrap();
                        *n += 1;
                        *n
                    };
                    {
                        let mut p = peak.lock().unwrap();
                        *p = (*p).max(n);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    *now.lock().unwrap() -= 1;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*peak.lock().unwrap(), 3);
    }

    /// Bookkeeping waits for a launch in flight to end although turns are free, and goes
    /// ahead after `HOLD_FOR_LAUNCHES` if it does not.
    #[tokio::test(start_paused = true)]
    async fn bookkeeping_holds_back_for_launches_in_flight_for_a_bounded_time() {
        let turns = Turns::new(8);
        let launch = turns.take(Priority::Launch).await;
        let early = tokio::time::timeout(Duration::from_millis(100), turns.take(Priority::Bookkeeping)).await;
        assert!(early.is_err(), "bookkeeping took a turn while a launch was in flight");
        drop(launch);
        let after = tokio::time::timeout(Duration::from_millis(1), turns.take(Priority::Bookkeeping)).await;
        assert!(after.is_ok(), "bookkeeping still waited once the launch ended");
        let _stuck = turns.take(Priority::Launch).await;
        let started = tokio::time::Instant::now();
        let _book = turns.take(Priority::Bookkeeping).await;
        assert_eq!(started.elapsed(), HOLD_FOR_LAUNCHES);
    }

    /// A launch that gives up waiting (its reconcile timed out) no longer holds back bookkeeping.
    #[tokio::test]
    async fn a_launch_dropped_while_waiting_stops_holding_back_bookkeeping() {
        let turns = Turns::new(1);
        let held = turns.take(Priority::Launch).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), turns.take(Priority::Launch)).await;
        assert!(gave_up.is_err(), "a second turn was given while the only one was out");
        drop(held);
        let book = tokio::time::timeout(Duration::from_secs(5), turns.take(Priority::Bookkeeping)).await;
        assert!(book.is_ok(), "bookkeeping still waits for a launch that is gone");
    }
}
