//! Asking the memory for data before it is read.
//!
//! Applying a trade is mostly waiting for memory: its two accounts are two of thousands, and
//! their records, positions and bands are far from the last trade's. `Engine::apply_all` knows
//! the events to come, so it asks for the next trades' data while it applies the current one.
//! A prefetch is a hint: it reads nothing into the program and cannot fault, whatever the
//! address; on targets without one it does nothing.

/// Asks for the cache line holding `x`.
#[inline]
pub(crate) fn prefetch<T>(x: &T) {
    prefetch_address((x as *const T).cast());
}

/// Asks for every cache line of `items`.
#[inline]
pub(crate) fn prefetch_slice<T>(items: &[T]) {
    let start = items.as_ptr().cast::<u8>();
    for offset in (0..std::mem::size_of_val(items)).step_by(CACHE_LINE) {
        prefetch_address(start.wrapping_add(offset));
    }
}

const CACHE_LINE: usize = 64;

#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_address(address: *const u8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: `prefetcht0` only hints the cache; it never faults and changes no memory or
    // register the program sees, for any address (SSE, which it needs, is part of x86_64).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn prefetch_address(_address: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_reads_and_changes_nothing() {
        // Only a hint: whatever is asked for, the data stays as it is (and nothing faults,
        // empty slices and odd sizes included).
        let v: Vec<u64> = (0..1000).collect();
        prefetch(&v[500]);
        prefetch_slice(&v);
        prefetch_slice(&v[..0]);
        prefetch_slice(&[0u8; 3]);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    }
}
