//! Asking the memory for data before it is read.
//!
//! Applying a trade is mostly waiting for memory: its two accounts are two of thousands, and
//! their records, positions and bands are far from the last trade's. `Engine::apply_all` knows
//! the events to come, so it asks for the next trades' data while it applies the current one.
//! A prefetch is a hint: it reads nothing into the program and cannot fault, whatever the
//! address; on targets without one it does nothing.
//!
//! The one module of the workspace allowed `unsafe` (the intrinsic is an `unsafe fn`); the
//! engine crate denies it everywhere else.
#![allow(unsafe_code)]

/// Asks for the cache line holding `x`.
#[inline]
pub(crate) fn prefetch<T>(x: &T) {
    prefetch_address((x as *const T).cast());
}

/// Asks for every cache line of `items`.
#[inline]
pub(crate) fn prefetch_slice<T>(items: &[T]) {
    for line in lines(items) {
        prefetch_address(line);
    }
}

/// The start of every cache line that `items` occupies, in order: a slice that does not start
/// on a line boundary reaches one line further than its size alone says.
#[inline]
fn lines<T>(items: &[T]) -> impl Iterator<Item = *const u8> {
    let start = items.as_ptr().cast::<u8>();
    let skew = start as usize % CACHE_LINE;
    let size = std::mem::size_of_val(items);
    let count = if size == 0 {
        0
    } else {
        (skew + size).div_ceil(CACHE_LINE)
    };
    let first = start.wrapping_sub(skew);
    (0..count).map(move |i| first.wrapping_add(i * CACHE_LINE))
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

    /// The lines a slice occupies, by the definition: those holding any of its bytes.
    fn lines_by_bytes(bytes: &[u8]) -> Vec<usize> {
        let mut lines: Vec<usize> = bytes
            .iter()
            .map(|b| b as *const u8 as usize / CACHE_LINE * CACHE_LINE)
            .collect();
        lines.dedup();
        lines
    }

    #[test]
    fn a_slice_asks_for_each_line_it_occupies_once() {
        // Every start within two lines and every length up to four lines, so slices that
        // start, end or both off a line boundary are all there.
        let buffer = vec![0u8; 8 * CACHE_LINE];
        for start in 0..2 * CACHE_LINE {
            for len in 0..=4 * CACHE_LINE {
                let slice = &buffer[start..start + len];
                let got: Vec<usize> = lines(slice).map(|p| p as usize).collect();
                assert_eq!(got, lines_by_bytes(slice), "start {start}, length {len}");
            }
        }
        // Elements wider than a byte: the size in bytes counts, not the length.
        let wide = [[0u8; 24]; 10];
        for start in 0..wide.len() {
            let slice = &wide[start..];
            let bytes = slice.as_flattened();
            let got: Vec<usize> = lines(slice).map(|p| p as usize).collect();
            assert_eq!(got, lines_by_bytes(bytes), "from element {start}");
        }
        // Zero-sized elements occupy nothing.
        assert_eq!(lines(&[(); 100]).count(), 0);
    }

    #[test]
    fn prefetching_changes_nothing_and_never_faults() {
        // Only a hint: whatever is asked for, the data stays as it is, and addresses outside
        // any allocation (one past the end, the null page) do not fault.
        let v: Vec<u64> = (0..1000).collect();
        prefetch(&v[500]);
        prefetch_slice(&v);
        prefetch_slice(&v[..0]);
        prefetch_slice(&[0u8; 3]);
        prefetch_address(
            v.as_ptr()
                .cast::<u8>()
                .wrapping_add(8 * v.len() + CACHE_LINE),
        );
        prefetch_address(std::ptr::null());
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    }
}
