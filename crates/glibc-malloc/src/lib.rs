//! Safe wrappers for two glibc allocator calls, so that `o365-mail-exporter` itself keeps
//! `unsafe_code = "forbid"` (house style) while its binary tunes glibc malloc.
//!
//! Why the exporter needs them is measured in its `docs/benchmarks.md` ("RSS with 1,000
//! mailboxes"): results kept between runs sit between freed connection buffers, and glibc keeps
//! those pages resident unless `malloc_trim` hands them back; and glibc's dynamic mmap threshold
//! rises to the largest buffer ever freed, after which multi-megabyte buffers come from the heap
//! and stay resident. Neither std nor a maintained crate offers these calls safely; both take
//! integers only (no pointers) and change only the allocator's bookkeeping, so the wrappers have
//! no caller-side invariants. Off glibc (musl, other systems) they do nothing.

/// Fix glibc's mmap threshold at `bytes`: allocations from that size up are mapped on their own
/// and unmapped when freed, and the threshold no longer rises with the largest buffer freed.
/// Returns whether glibc accepted it (always `false` off glibc).
pub fn set_mmap_threshold(bytes: u32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's `M_MMAP_THRESHOLD` (malloc.h).
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        let Ok(value) = std::ffi::c_int::try_from(bytes) else {
            return false;
        };
        // SAFETY: mallopt takes two integers and only sets an allocator parameter; glibc
        // serialises it with allocations. 0 means refused, which leaves the default in place.
        unsafe { ffi::mallopt(M_MMAP_THRESHOLD, value) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}

/// Hand whole free pages of every arena back to the kernel (`malloc_trim(0)`). Returns whether
/// glibc released anything (always `false` off glibc).
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes an integer (0: keep no slack) and only releases pages that
        // hold no allocation; glibc locks each arena while it walks it.
        unsafe { ffi::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod ffi {
    extern "C" {
        pub fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        pub fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_accepts_the_threshold_and_trim_runs() {
        let accepted = super::set_mmap_threshold(128 * 1024);
        // Free a large allocation so there is something a trim may hand back.
        drop(vec![1u8; 8 << 20]);
        let _ = super::trim();
        assert_eq!(
            accepted,
            cfg!(all(target_os = "linux", target_env = "gnu")),
            "glibc refused M_MMAP_THRESHOLD"
        );
    }
}
