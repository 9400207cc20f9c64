//! Giving freed heap back to the system.
//!
//! The initial list of every LoopService, Job and Pod decodes each object through short-lived
//! trees that are freed between the objects the caches keep. glibc's allocator keeps those
//! freed pages mapped: after a start with 10,000 LoopServices that was about a quarter of the
//! resident memory. `malloc_trim` hands whole free pages back; it is called once the caches
//! have synced and then now and then. All threads share one heap, so that what one thread
//! frees is reused by all.

/// Returns free heap pages to the system; true when some were returned. A no-op returning
/// false where the allocator is not glibc's.
pub fn trim() -> bool {
    imp::trim()
}

/// Has every thread allocate from one heap (glibc's `M_ARENA_MAX` = 1), as if
/// `MALLOC_ARENA_MAX=1` were set, unless that variable is set. By default each thread that
/// allocates gets a heap of its own, and what one thread decoded and another freed stays in
/// the first one's heap: with 10,000 LoopServices, one heap was 44 MiB resident against
/// 48–52 MiB for the default. The operator's threads spend their time waiting on the API
/// server, so they seldom contend for the one heap. Call it before any thread starts.
pub fn one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        imp::one_arena();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    #[allow(unsafe_code)]
    pub fn trim() -> bool {
        // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it takes
        // no pointers and is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }

    #[allow(unsafe_code)]
    pub fn one_arena() {
        // SAFETY: mallopt sets an allocator parameter; it takes no pointers.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn trim() -> bool {
        false
    }

    pub fn one_arena() {}
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn resident_kib() -> u64 {
        procfs::process::Process::myself().and_then(|p| p.status()).ok().and_then(|s| s.vmrss).expect("VmRSS of this process")
    }

    #[test]
    fn trim_gives_back_the_pages_a_freed_burst_left_between_kept_blocks() {
        // Like an initial list: many small blocks, every 64th kept (the cached object), the
        // rest freed. The free runs between kept blocks stay resident until trimmed.
        let mut kept = vec![];
        {
            let burst: Vec<Box<[u8; 200]>> = (0..200_000).map(|_| Box::new([1u8; 200])).collect();
            for (i, b) in burst.into_iter().enumerate() {
                if i % 64 == 0 {
                    kept.push(b);
                }
            }
        }
        let before = resident_kib();
        assert!(super::trim(), "malloc_trim found no free page to give back");
        let after = resident_kib();
        assert!(before >= after + 20 * 1024, "resident {before} KiB before the trim, {after} KiB after: expected at least 20 MiB back");
        assert!(kept.iter().all(|b| b[199] == 1));
    }
}
