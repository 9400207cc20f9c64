//! A gate of `n` places, handed out fairly: when places run out, waiters are served by class
//! (class 0 first), and within a class one namespace at a time, in turn, first come first
//! served within a namespace. A namespace with thousands of waiters therefore delays another
//! namespace's next waiter by one place, not by thousands.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

pub struct Gate<const CLASSES: usize> {
    state: Mutex<State<CLASSES>>,
}

struct State<const CLASSES: usize> {
    /// Places not handed out. More than zero only when no one waits.
    free: usize,
    classes: [Queue; CLASSES],
}

/// Waiters of one class: the namespaces that have any, in turn order, and each one's waiters.
#[derive(Default)]
struct Queue {
    order: VecDeque<Arc<str>>,
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
}

impl Queue {
    fn push(&mut self, ns: &str, tx: oneshot::Sender<()>) {
        if let Some(q) = self.waiting.get_mut(ns) {
            q.push_back(tx);
            return;
        }
        let ns: Arc<str> = Arc::from(ns);
        self.order.push_back(ns.clone());
        self.waiting.insert(ns, VecDeque::from([tx]));
    }

    /// The next waiter still waiting: the first of the namespace whose turn it is; that
    /// namespace goes to the back of the line.
    fn pop(&mut self) -> Option<oneshot::Sender<()>> {
        while let Some(ns) = self.order.pop_front() {
            let Some(q) = self.waiting.get_mut(&ns) else { continue };
            let next = q.pop_front();
            if q.is_empty() {
                self.waiting.remove(&ns);
            } else {
                self.order.push_back(ns);
            }
            if let Some(tx) = next.filter(|tx| !tx.is_closed()) {
                return Some(tx);
            }
        }
        None
    }

    fn len(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

/// One place, given back when dropped.
pub struct Place<'a, const CLASSES: usize>(&'a Gate<CLASSES>);

impl<const CLASSES: usize> Drop for Place<'_, CLASSES> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// A waiter's side while it waits: should it stop waiting (its future dropped) after a place
/// was handed to it, the place goes to the next waiter.
struct Waiting<'a, const CLASSES: usize> {
    gate: &'a Gate<CLASSES>,
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl<const CLASSES: usize> Drop for Waiting<'_, CLASSES> {
    fn drop(&mut self) {
        if !self.done {
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.gate.give_back();
            }
        }
    }
}

impl<const CLASSES: usize> Gate<CLASSES> {
    /// A gate of `n` places (at least one).
    pub fn new(n: usize) -> Self {
        Gate { state: Mutex::new(State { free: n.max(1), classes: std::array::from_fn(|_| Queue::default()) }) }
    }

    /// Waits for a place for a request of `namespace` in `class` (`class` below `CLASSES`).
    pub async fn take(&self, class: usize, namespace: &str) -> Place<'_, CLASSES> {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 {
                st.free -= 1;
                return Place(self);
            }
            let (tx, rx) = oneshot::channel();
            st.classes[class.min(CLASSES - 1)].push(namespace, tx);
            rx
        };
        let mut waiting = Waiting { gate: self, rx, done: false };
        // The sender is dropped without a send only by `pop`, which skips closed receivers: a
        // waiter's sender is either sent on or kept.
        let _ = (&mut waiting.rx).await;
        waiting.done = true;
        Place(self)
    }

    /// Requests waiting for a place, in all classes.
    pub fn waiting(&self) -> usize {
        self.lock().classes.iter().map(Queue::len).sum()
    }

    fn give_back(&self) {
        let mut st = self.lock();
        for class in st.classes.iter_mut() {
            while let Some(tx) = class.pop() {
                if tx.send(()).is_ok() {
                    return;
                }
            }
        }
        st.free += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<CLASSES>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Queues `waiters` (class, namespace, name) one after another behind a full gate of one,
    /// then frees it and returns the order they got the place in.
    async fn order_served<const C: usize>(waiters: &[(usize, &'static str, &'static str)]) -> Vec<&'static str> {
        let gate = Arc::new(Gate::<C>::new(1));
        let order = Arc::new(Mutex::new(vec![]));
        let held = gate.take(0, "holder").await;
        let mut tasks = vec![];
        for &(class, ns, name) in waiters {
            let (g, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _place = g.take(class, ns).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }));
            // Queued in this order.
            while gate.waiting() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(order).unwrap().into_inner().unwrap()
    }

    /// Four waiters of a busy namespace queued before one of a quiet namespace: the quiet one
    /// goes second, not fifth.
    #[tokio::test]
    async fn namespaces_take_turns() {
        let order =
            order_served::<1>(&[(0, "busy", "b1"), (0, "busy", "b2"), (0, "busy", "b3"), (0, "busy", "b4"), (0, "quiet", "q1")]).await;
        assert_eq!(order, ["b1", "q1", "b2", "b3", "b4"]);
    }

    /// Class 0 goes before class 1 whatever the namespace and order; each class is fair.
    #[tokio::test]
    async fn classes_go_in_order_and_each_is_fair() {
        let order = order_served::<2>(&[
            (1, "a", "book a1"),
            (1, "a", "book a2"),
            (1, "b", "book b1"),
            (0, "a", "launch a1"),
            (0, "a", "launch a2"),
            (0, "b", "launch b1"),
        ])
        .await;
        assert_eq!(order, ["launch a1", "launch b1", "launch a2", "book a1", "book b1", "book a2"]);
    }

    /// No more than `n` places are out at once, and every waiter gets one.
    #[tokio::test]
    async fn at_most_n_at_once_and_all_served() {
        let gate = Arc::new(Gate::<2>::new(3));
        let (now, peak) = (Arc::new(Mutex::new(0usize)), Arc::new(Mutex::new(0usize)));
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let (gate, now, peak) = (gate.clone(), now.clone(), peak.clone());
                tokio::spawn(async move {
                    let _place = gate.take(i % 2, ["a", "b", "c"][i % 3]).await;
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
        assert_eq!(gate.waiting(), 0);
    }

    /// A waiter that gives up (its future dropped) loses its place in line, and a place handed
    /// to it as it gave up goes to the next waiter: none is lost.
    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_nothing() {
        let gate = Arc::new(Gate::<1>::new(1));
        let held = gate.take(0, "a").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), gate.take(0, "a")).await;
        assert!(gave_up.is_err(), "a second place was given while the only one was out");
        let next = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _ = gate.take(0, "b").await;
            }
        });
        while gate.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), next).await.expect("the next waiter never got the freed place").unwrap();
        // A place handed to a waiter that stops waiting before it sees it goes back.
        let held = gate.take(0, "a").await;
        let (tx, rx) = oneshot::channel();
        gate.lock().classes[0].push("c", tx);
        let waiting = Waiting { gate: &gate, rx, done: false };
        drop(held);
        drop(waiting);
        let again = tokio::time::timeout(Duration::from_millis(100), gate.take(0, "d")).await;
        assert!(again.is_ok(), "a place handed to a waiter that gave up was lost");
    }
}
