//! Turns to make an API request, a bounded number at once, launches first: a due loop's Job
//! create (and the reads and checks right before it) takes the next free turn before any
//! status write, delete of an old Job or Event. When thousands of loops are due at once, every
//! Job is created before the bookkeeping of any.
//!
//! Within each priority, namespaces take turns ([`crate::fair::Gate`]): a namespace with
//! thousands of requests waiting delays another namespace's next request by one turn.
//!
//! Bookkeeping also holds back, for at most `HOLD_FOR_LAUNCHES`, while launches are still in
//! flight: the API server answers the last Job creates of a burst sooner when the burst's
//! status writes do not compete with them. The bound keeps bookkeeping moving when launches
//! never stop (thousands of LoopServices on short intervals).
//!
//! And fewer bookkeeping requests are in flight at once than turns (namespaces in turn for
//! those places too): a backlog of thousands of status writes and Events (a namespace that
//! just made thousands of LoopServices, all to be reported) keeps only that many in the API
//! server's queue ahead of another namespace's Job create, where it would otherwise fill
//! every turn.
//!
//! Bookkeeping that a launch waits for is not left behind the rest: a LoopService is
//! reconciled one reconcile at a time, so the reconcile that starts its next loop cannot begin
//! while the last one still waits to write its status, let its Job go or delete an old one. A
//! bookkeeping request still waiting [`PROMOTE_BEFORE`] before its LoopService's next loop is
//! due takes a launch's turn instead ([`Turns::take_before`]).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::fair::{Gate, Place};

/// The longest bookkeeping waits for launches in flight (not for launches waiting for a turn:
/// those always go first).
pub const HOLD_FOR_LAUNCHES: Duration = Duration::from_millis(500);

/// How long before its LoopService's next loop is due a bookkeeping request still waiting
/// becomes a launch's: the reconcile that starts the loop is woken this early too
/// ([`crate::urgency::LOOKAHEAD_MS`]).
pub const PROMOTE_BEFORE: Duration = Duration::from_millis(crate::urgency::LOOKAHEAD_MS as u64);

/// Which requests take the next turn when many wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Launch = 0,
    Bookkeeping = 1,
}

pub struct Turns {
    gate: Gate<2>,
    /// Places for bookkeeping requests in flight, fewer than the gate's turns.
    bookkeeping: Gate<1>,
    /// Launch requests holding a turn.
    launches_in_flight: watch::Sender<usize>,
}

/// One request's turn, held until dropped.
pub struct Turn<'a> {
    _place: Place<'a, 2>,
    _bookkeeping: Option<Place<'a, 1>>,
    _launch: Option<Counted<'a>>,
}

impl Turns {
    /// `n` turns at once (at least one), of which `bookkeeping` (at least one) at most for
    /// bookkeeping.
    pub fn new(n: usize, bookkeeping: usize) -> Turns {
        let n = n.max(1);
        Turns { gate: Gate::new(n), bookkeeping: Gate::new(bookkeeping.clamp(1, n)), launches_in_flight: watch::Sender::new(0) }
    }

    /// A turn for a request about a LoopService in `namespace`.
    pub async fn take(&self, priority: Priority, namespace: &str) -> Turn<'_> {
        let mut bookkeeping = None;
        if priority == Priority::Bookkeeping {
            let mut in_flight = self.launches_in_flight.subscribe();
            let _ = tokio::time::timeout(HOLD_FOR_LAUNCHES, in_flight.wait_for(|n| *n == 0)).await;
            bookkeeping = Some(self.bookkeeping.take(0, namespace).await);
        }
        let place = self.gate.take(priority as usize, namespace).await;
        let launch = (priority == Priority::Launch).then(|| {
            self.launches_in_flight.send_modify(|n| *n += 1);
            Counted(&self.launches_in_flight)
        });
        Turn { _place: place, _bookkeeping: bookkeeping, _launch: launch }
    }

    /// A bookkeeping turn for a request of a LoopService whose next loop is due at `due`: if it
    /// is still waiting [`PROMOTE_BEFORE`] before then, it waits for a launch's turn instead.
    pub async fn take_before(&self, namespace: &str, due: Instant) -> Turn<'_> {
        let promote_at = due.checked_sub(PROMOTE_BEFORE).unwrap_or(due);
        tokio::select! {
            biased;
            turn = self.take(Priority::Bookkeeping, namespace) => turn,
            () = tokio::time::sleep_until(promote_at) => self.take(Priority::Launch, namespace).await,
        }
    }
}

/// One launch counted in flight for as long as it lives.
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
        let turns = Arc::new(Turns::new(1, 1));
        let order = Arc::new(Mutex::new(vec![]));
        let held = turns.take(Priority::Bookkeeping, "ns").await;
        let spawn = |p: Priority, name: &'static str| {
            let (turns, order) = (turns.clone(), order.clone());
            tokio::spawn(async move {
                let _turn = turns.take(p, "ns").await;
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

    /// Bookkeeping waits for a launch in flight to end although turns are free, and goes
    /// ahead after `HOLD_FOR_LAUNCHES` if it does not.
    #[tokio::test(start_paused = true)]
    async fn bookkeeping_holds_back_for_launches_in_flight_for_a_bounded_time() {
        let turns = Turns::new(8, 8);
        let launch = turns.take(Priority::Launch, "ns").await;
        let early = tokio::time::timeout(Duration::from_millis(100), turns.take(Priority::Bookkeeping, "ns")).await;
        assert!(early.is_err(), "bookkeeping took a turn while a launch was in flight");
        drop(launch);
        let after = tokio::time::timeout(Duration::from_millis(1), turns.take(Priority::Bookkeeping, "ns")).await;
        assert!(after.is_ok(), "bookkeeping still waited once the launch ended");
        let _stuck = turns.take(Priority::Launch, "ns").await;
        let started = tokio::time::Instant::now();
        let _book = turns.take(Priority::Bookkeeping, "ns").await;
        assert_eq!(started.elapsed(), HOLD_FOR_LAUNCHES);
    }

    /// Bookkeeping behind a backlog of bookkeeping keeps its place in that line until
    /// `PROMOTE_BEFORE` before its LoopService's loop is due, then goes ahead of the backlog.
    #[tokio::test(start_paused = true)]
    async fn bookkeeping_a_due_loop_waits_for_goes_ahead_of_the_backlog_before_the_loop_is_due() {
        let turns = Turns::new(8, 1);
        let backlog = turns.take(Priority::Bookkeeping, "broken").await;
        let started = Instant::now();
        let due = started + Duration::from_secs(3);
        let early = tokio::time::timeout(Duration::from_millis(1500), turns.take_before("healthy", due)).await;
        assert!(early.is_err(), "it went ahead of the backlog 1.5 s before the loop was due");
        let turn = tokio::time::timeout(Duration::from_secs(5), turns.take_before("healthy", due)).await;
        assert!(turn.is_ok(), "still no turn when the loop was due");
        assert_eq!(started.elapsed(), Duration::from_secs(3) - PROMOTE_BEFORE, "not promoted when it should have been");
        drop((turn, backlog));
        // With a bookkeeping place free it takes that one, at once, long before the loop is due.
        let free =
            tokio::time::timeout(Duration::from_millis(1), turns.take_before("healthy", Instant::now() + Duration::from_secs(60))).await;
        assert!(free.is_ok(), "a bookkeeping place was free");
    }

    /// A launch that gives up waiting (its reconcile timed out) no longer holds back bookkeeping.
    #[tokio::test]
    async fn a_launch_dropped_while_waiting_stops_holding_back_bookkeeping() {
        let turns = Turns::new(1, 1);
        let held = turns.take(Priority::Launch, "ns").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), turns.take(Priority::Launch, "ns")).await;
        assert!(gave_up.is_err(), "a second turn was given while the only one was out");
        drop(held);
        let book = tokio::time::timeout(Duration::from_secs(5), turns.take(Priority::Bookkeeping, "ns")).await;
        assert!(book.is_ok(), "bookkeeping still waits for a launch that is gone");
    }
}
