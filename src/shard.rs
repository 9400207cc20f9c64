//! Shards: `--shards N --shard-index i` splits the LoopServices between N releases of the
//! operator. A LoopService belongs to shard i when the FNV-1a 64-bit hash of its uid falls in
//! the i-th of N equal ranges of the hash space: the hash and the ranges of Kubernetes' sharded
//! list and watch (KEP-5866), so that an API server that serves it (`ShardedListAndWatch`)
//! sends each shard its own LoopServices only. Every shard filters what it is sent as well: on
//! an API server without the feature the parameter is ignored and the filter does the work.
//! A LoopService's Jobs and Pods follow it, by the uid in their `loops.dev/loopservice-uid`
//! label (the API server can shard only by an object's own uid or namespace).
//!
//! Changing N is safe through claims ([`crate::reconcile::claim`]): each shard has its own
//! Lease, named for its index and N, and a shard never writes to a LoopService another live
//! shard has claimed, so a range changes hands only once its old shard has stopped.

use std::hash::Hasher;

use kube::runtime::watcher::Event;
use kube::Resource;
use prometheus_client::metrics::counter::Counter;

use crate::keys;
use crate::metrics::{Metrics, WatchLabels};

/// The field KEP-5866 hashes here.
const KEY: &str = "object.metadata.uid";

/// One shard of N. `Shard::default()` is the whole: one shard of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

/// `2 of 3` (numbered from 0), or `all` for the whole.
impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_whole() {
            f.write_str("all")
        } else {
            write!(f, "{} of {}", self.index, self.count)
        }
    }
}

/// Why `--shards` and `--shard-index` make no shard.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum ShardError {
    #[error("--shards (SHARDS) must be at least 1, got 0")]
    NoShards,
    #[error("--shard-index (SHARD_INDEX) must be below --shards (SHARDS): shards are numbered 0 to {last}, got {index}")]
    IndexOutOfRange { index: u32, last: u32 },
}

impl Shard {
    /// Shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, last: count - 1 });
        }
        Ok(Shard { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this is the only shard.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// The shard's range of hashes, `[start, end)`, as numbers below 2^64 (`end` may be 2^64).
    pub fn range(&self) -> (u128, u128) {
        let bound = |i: u32| (u128::from(i) << 64) / u128::from(self.count);
        (bound(self.index), bound(self.index + 1))
    }

    /// Whether a LoopService with this uid is this shard's.
    pub fn owns(&self, uid: &str) -> bool {
        let (start, end) = self.range();
        let h = u128::from(hash(uid));
        start <= h && h < end
    }

    /// KEP-5866's `shardSelector` for this shard's range, or `None` for the whole.
    pub fn selector(&self) -> Option<String> {
        if self.is_whole() {
            return None;
        }
        let (start, end) = self.range();
        Some(format!("shardRange({KEY}, '{}', '{}')", hex(start), hex(end)))
    }

    /// The Lease of this shard, from the release's `base` name: `base` itself for the whole,
    /// `base-<i>-of-<n>` otherwise, so that shards of another N never share one.
    pub fn lease_name(&self, base: &str) -> String {
        if self.is_whole() {
            base.to_string()
        } else {
            format!("{base}-{}-of-{}", self.index, self.count)
        }
    }

    /// Whether a watch event about objects `owner` maps to a uid (`None`: none known) is this
    /// shard's. Lists' markers always are; an object with no owner uid is shard 0's.
    pub fn keeps<K>(&self, event: &Event<K>, owner: impl Fn(&K) -> Option<&str>) -> bool {
        match event {
            Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => match owner(o) {
                Some(uid) => self.owns(uid),
                None => self.index == 0,
            },
            Event::Init | Event::InitDone => true,
        }
    }
}

/// A shard's filter of one kind's watch events, which counts the objects it keeps and drops
/// (`loopservice_watch_events_total`).
#[derive(Clone)]
pub struct Filter {
    shard: Shard,
    ours: Counter,
    others: Counter,
}

impl Filter {
    /// The filter of `kind`'s watch (`loopservice`, `job`, `pod`).
    pub fn new(shard: Shard, metrics: &Metrics, kind: &'static str) -> Filter {
        let count = |shard| metrics.watch_events.get_or_create(&WatchLabels { kind, shard }).clone();
        Filter { shard, ours: count("ours"), others: count("others") }
    }

    /// A filter that keeps everything and counts nowhere: for tests and tools.
    pub fn everything() -> Filter {
        Filter { shard: Shard::default(), ours: Counter::default(), others: Counter::default() }
    }

    /// Whether `event` is this shard's ([`Shard::keeps`]); counted when it is about an object.
    pub fn keeps<K>(&self, event: &Event<K>, owner: fn(&K) -> Option<&str>) -> bool {
        let keep = self.shard.keeps(event, owner);
        if !matches!(event, Event::Init | Event::InitDone) {
            if keep { &self.ours } else { &self.others }.inc();
        }
        keep
    }
}

/// The uid of the LoopService a Job or Pod is labelled as the loop of.
pub fn owner_label<K: Resource>(o: &K) -> Option<&str> {
    o.meta().labels.as_ref()?.get(keys::LABEL_UID).map(String::as_str)
}

/// `req` with `shardSelector=<selector>` added to its query: a list or watch the API server then
/// answers with the shard's objects only (where it serves sharded lists; elsewhere the parameter
/// is ignored).
pub fn add_selector<B>(req: http::Request<B>, selector: &str) -> http::Request<B> {
    let (mut parts, body) = req.into_parts();
    let param: String = form_urlencoded::Serializer::new(String::new()).append_pair("shardSelector", selector).finish();
    let path = parts.uri.path();
    let path_and_query = match parts.uri.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}&{param}"),
        _ => format!("{path}?{param}"),
    };
    // Form-encoded text always parses; were it not to, the request goes as it was and the
    // shard's own filter still holds.
    let mut uri = http::uri::Parts::from(parts.uri.clone());
    if let Ok(pq) = path_and_query.parse() {
        uri.path_and_query = Some(pq);
        if let Ok(u) = http::Uri::from_parts(uri) {
            parts.uri = u;
        }
    }
    http::Request::from_parts(parts, body)
}

/// FNV-1a, 64 bits, of `value`'s bytes (Go's `hash/fnv.New64a`, as the API server hashes).
pub fn hash(value: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(value.as_bytes());
    h.finish()
}

/// `0x` and 16 lowercase hex digits (17 for 2^64): the API server's form of a bound.
fn hex(n: u128) -> String {
    format!("0x{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a_64() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(hash(""), 0xcbf29ce484222325);
        assert_eq!(hash("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(hash("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn n_ranges_cover_the_hash_space_once_in_equal_parts() {
        for n in 1..=9 {
            let shards: Vec<Shard> = (0..n).map(|i| Shard::new(i, n).unwrap()).collect();
            assert_eq!(shards[0].range().0, 0);
            assert_eq!(shards[n as usize - 1].range().1, 1u128 << 64);
            for pair in shards.windows(2) {
                assert_eq!(pair[0].range().1, pair[1].range().0, "{n} shards: ranges meet");
            }
            let widths: Vec<u128> = shards.iter().map(|s| s.range().1 - s.range().0).collect();
            let (lo, hi) = (widths.iter().min().unwrap(), widths.iter().max().unwrap());
            assert!(hi - lo <= 1, "{n} shards: widths {widths:?}");
        }
    }

    #[test]
    fn each_uid_belongs_to_exactly_one_shard() {
        for n in 1..=5 {
            for k in 0..2_000 {
                let uid = format!("{k:08x}-0000-4000-8000-{k:012x}");
                let owners = (0..n).filter(|&i| Shard::new(i, n).unwrap().owns(&uid)).count();
                assert_eq!(owners, 1, "{uid} of {n} shards");
            }
        }
    }

    #[test]
    fn uids_spread_evenly() {
        let three: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
        let mut counts = [0; 3];
        for k in 0..3_000u32 {
            let uid = format!("{:08x}-1c2d-4e5f-9a0b-{:012x}", k.wrapping_mul(2_654_435_761), k);
            counts[three.iter().position(|s| s.owns(&uid)).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1_200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn the_selector_is_keps_shard_range_with_bounds_in_its_form() {
        assert_eq!(Shard::default().selector(), None);
        assert_eq!(
            Shard::new(0, 2).unwrap().selector().unwrap(),
            "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')"
        );
        assert_eq!(
            Shard::new(2, 3).unwrap().selector().unwrap(),
            "shardRange(object.metadata.uid, '0xaaaaaaaaaaaaaaaa', '0x10000000000000000')"
        );
    }

    #[test]
    fn the_selector_goes_in_the_query_encoded() {
        let sel = Shard::new(0, 2).unwrap().selector().unwrap();
        let req = http::Request::get("/apis/loops.dev/v1/loopservices?watch=true&timeoutSeconds=290").body(()).unwrap();
        let uri = add_selector(req, &sel).uri().clone();
        assert_eq!(uri.path(), "/apis/loops.dev/v1/loopservices");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap().as_bytes()).into_owned().collect();
        assert_eq!(pairs[0], ("watch".into(), "true".into()));
        assert_eq!(pairs[2], ("shardSelector".into(), sel.clone()));
        let bare = add_selector(http::Request::get("/apis/loops.dev/v1/loopservices").body(()).unwrap(), &sel);
        assert_eq!(form_urlencoded::parse(bare.uri().query().unwrap().as_bytes()).count(), 1);
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_names() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        let err = Shard::new(3, 3).unwrap_err();
        assert_eq!(err, ShardError::IndexOutOfRange { index: 3, last: 2 });
        assert!(err.to_string().contains("--shard-index (SHARD_INDEX)") && err.to_string().contains("0 to 2"), "{err}");
    }

    #[test]
    fn each_shard_and_n_has_its_own_lease() {
        assert_eq!(Shard::default().lease_name("op"), "op");
        assert_eq!(Shard::new(1, 3).unwrap().lease_name("op"), "op-1-of-3");
        assert_ne!(Shard::new(0, 2).unwrap().lease_name("op"), Shard::new(0, 3).unwrap().lease_name("op"));
    }

    #[test]
    #[allow(clippy::ptr_arg)] // the owner function of a `String` object
    fn list_markers_pass_and_objects_follow_their_owner() {
        let s = Shard::new(1, 2).unwrap();
        let mine = (0..).map(|k| format!("uid-{k}")).find(|u| s.owns(u)).unwrap();
        let theirs = (0..).map(|k| format!("uid-{k}")).find(|u| !s.owns(u)).unwrap();
        fn owner(o: &String) -> Option<&str> {
            Some(o.as_str())
        }
        fn none(_: &String) -> Option<&str> {
            None
        }
        assert!(s.keeps(&Event::<String>::Init, owner));
        assert!(s.keeps(&Event::<String>::InitDone, owner));
        assert!(s.keeps(&Event::Apply(mine.clone()), owner));
        assert!(s.keeps(&Event::Delete(mine), owner));
        assert!(!s.keeps(&Event::InitApply(theirs), owner));
        assert!(!s.keeps(&Event::Apply("x".to_string()), none), "no owner: shard 0's");
        assert!(Shard::new(0, 2).unwrap().keeps(&Event::Apply("x".to_string()), none));
    }
}
