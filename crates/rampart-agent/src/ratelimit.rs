//! Per-exporter rate limit with honest resampling.
//!
//! An exporter that sends more than `limit` flows in a one-second window
//! (unsampled floods, a router exporting every packet) is thinned to one
//! flow in `k`, and every kept flow records `resample = k`, so sums of
//! `bytes × sampling_rate × resample` and counts of `resample` still
//! estimate the real totals.
//!
//! `k` starts each window as the smallest power of two that brings the
//! previous window's count under the limit, so a steady flood settles at or
//! below `limit` kept flows per second. A sudden burst (the previous window
//! was quiet) is caught within the window: once `limit` flows were kept,
//! `k` doubles after every further `limit/8` kept flows. Each stage keeps
//! `limit/8` flows (so the estimate of each stage stays precise) and takes
//! twice the arrivals of the one before, so the first second of a burst
//! `R` times the limit keeps about `limit × (1 + log2(R)/8)`: under twice
//! the limit for any flood below 256 times it. Traffic under the limit is
//! never resampled, however bursty within its second.
//!
//! Selection is stratified random: the flows of each exporter form
//! consecutive blocks of `k`, and one flow chosen uniformly at random is
//! kept from each block. Why not the alternatives:
//! - every `k`-th flow (deterministic) gives exact totals but aliases with
//!   periodic exports: a router that writes the same hosts in the same
//!   order every datagram would have the same few hosts kept every time,
//!   and per-host totals would be wildly wrong;
//! - an independent coin per flow (probability `1/k`) is unbiased for every
//!   host but makes the total's error grow like `k × sqrt(n/k)`.
//!
//! One pick per block is unbiased for every subset of flows (each flow is
//! kept with probability exactly `1/k`), and the total is exact for every
//! complete block: its error is at most `k` flows per change of `k`.

use std::collections::HashMap;
use std::hash::Hash;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest resampling factor: beyond one flow in 2^30 there is nothing
/// left to estimate from.
pub const MAX_FACTOR: u32 = 1 << 30;

#[derive(Debug, Clone)]
struct Window {
    /// The window: unix seconds.
    second: u64,
    /// Flows seen in this window.
    seen: u64,
    /// Flows kept in this window.
    kept: u64,
    /// Kept flows at which `k` doubles next.
    next_doubling: u64,
    k: u32,
    /// Position in the current block of `k` flows, and the one kept.
    pos: u32,
    pick: u32,
}

/// What [`RateLimiter::admit`] says about one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; it stands for this many flows (1 = no resampling).
    Keep(u32),
    /// Leave it out; a kept flow of the same block stands for it.
    Skip,
}

/// Per-key (exporter) resampling state; see the module docs.
pub struct RateLimiter<K> {
    limit: u64,
    max_keys: usize,
    windows: HashMap<K, Window>,
    rng: StdRng,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `limit` flows per second per key; 0 means no limit. At most
    /// `max_keys` keys are tracked; a new one beyond that replaces the one
    /// idle longest.
    pub fn new(limit: u32, max_keys: usize) -> Self {
        Self::with_rng(limit, max_keys, StdRng::from_entropy())
    }

    /// The same with a seeded generator, for reproducible tests.
    pub fn seeded(limit: u32, max_keys: usize, seed: u64) -> Self {
        Self::with_rng(limit, max_keys, StdRng::seed_from_u64(seed))
    }

    fn with_rng(limit: u32, max_keys: usize, rng: StdRng) -> Self {
        RateLimiter {
            limit: u64::from(limit),
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
            rng,
        }
    }

    /// Decides one flow of `key` arriving at `now_ms`.
    pub fn admit(&mut self, key: &K, now_ms: u64) -> Verdict {
        if self.limit == 0 {
            return Verdict::Keep(1);
        }
        let second = now_ms / 1000;
        if !self.windows.contains_key(key) {
            self.make_room();
            self.windows.insert(
                key.clone(),
                Window {
                    second,
                    seen: 0,
                    kept: 0,
                    next_doubling: self.limit,
                    k: 1,
                    pos: 0,
                    pick: 0,
                },
            );
        }
        let limit = self.limit;
        let Some(w) = self.windows.get_mut(key) else {
            return Verdict::Keep(1);
        };
        let rng = &mut self.rng;
        if second > w.second {
            // A new window: size k from the last one if it was just before.
            let prev = if second == w.second + 1 { w.seen } else { 0 };
            w.second = second;
            w.seen = 0;
            w.kept = 0;
            w.next_doubling = limit;
            let k = factor_for(prev, limit);
            if k != w.k {
                w.k = k;
                new_block(w, rng);
            }
        }
        // (A late chunk stamped in an earlier second counts in this window.)
        w.seen += 1;
        // Only at a block's start: deciding mid-block would depend on
        // whether its pick was reached, and bias the estimate.
        if w.pos == 0 && w.k < MAX_FACTOR && w.kept >= w.next_doubling {
            w.k *= 2;
            w.next_doubling += (limit / 8).max(1);
            new_block(w, rng);
        }
        let keep = w.pos == w.pick;
        w.pos += 1;
        if w.pos >= w.k {
            new_block(w, rng);
        }
        if keep {
            w.kept += 1;
            Verdict::Keep(w.k)
        } else {
            Verdict::Skip
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    fn make_room(&mut self) {
        if self.windows.len() < self.max_keys {
            return;
        }
        let idle = self
            .windows
            .iter()
            .min_by_key(|(_, w)| w.second)
            .map(|(k, _)| k.clone());
        if let Some(k) = idle {
            self.windows.remove(&k);
        }
    }
}

fn new_block(w: &mut Window, rng: &mut StdRng) {
    w.pos = 0;
    w.pick = if w.k > 1 { rng.gen_range(0..w.k) } else { 0 };
}

/// The smallest power of two `k` with `seen / k <= limit`.
fn factor_for(seen: u64, limit: u64) -> u32 {
    if seen <= limit || limit == 0 {
        return 1;
    }
    let need = seen.div_ceil(limit);
    let k = need.checked_next_power_of_two().unwrap_or(u64::MAX);
    u32::try_from(k.min(u64::from(MAX_FACTOR))).unwrap_or(MAX_FACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rl: &mut RateLimiter<u8>, key: u8, n: u64, start_ms: u64, per_ms: u64) -> (u64, u64) {
        let (mut kept, mut weight) = (0, 0);
        for i in 0..n {
            if let Verdict::Keep(k) = rl.admit(&key, start_ms + i / per_ms) {
                kept += 1;
                weight += u64::from(k);
            }
        }
        (kept, weight)
    }

    #[test]
    fn factor_is_the_smallest_power_of_two_under_the_limit() {
        assert_eq!(factor_for(0, 100), 1);
        assert_eq!(factor_for(100, 100), 1);
        assert_eq!(factor_for(101, 100), 2);
        assert_eq!(factor_for(400, 100), 4);
        assert_eq!(factor_for(401, 100), 8);
        assert_eq!(factor_for(u64::MAX, 1), MAX_FACTOR);
    }

    #[test]
    fn under_the_limit_everything_is_kept_unscaled() {
        let mut rl = RateLimiter::seeded(1000, 16, 1);
        assert_eq!(run(&mut rl, 1, 1000, 5_000, 1), (1000, 1000));
    }

    #[test]
    fn zero_limit_means_unlimited() {
        let mut rl = RateLimiter::seeded(0, 16, 1);
        assert_eq!(run(&mut rl, 1, 10_000, 0, 100), (10_000, 10_000));
    }

    #[test]
    fn a_sudden_burst_keeps_under_twice_the_limit_in_its_first_second() {
        let mut rl = RateLimiter::seeded(1000, 16, 2);
        // 50,000 flows within one second, after silence.
        let (kept, weight) = run(&mut rl, 1, 50_000, 10_000, 50);
        // Stages of 125 keeps at k = 2, 4, ... 128 use 32,750 arrivals; the
        // rest is kept at k = 256.
        assert!(kept <= 2000, "kept {kept}");
        let err = (weight as f64 - 50_000.0).abs() / 50_000.0;
        assert!(err < 0.05, "estimate {weight} for 50000");
    }

    #[test]
    fn a_steady_flood_settles_at_the_limit() {
        let mut rl = RateLimiter::seeded(1000, 16, 3);
        run(&mut rl, 1, 8000, 0, 8); // second 0
        let (kept, weight) = run(&mut rl, 1, 8000, 1000, 8); // second 1: k = 8
        assert!((900..=1000).contains(&kept), "kept {kept}");
        assert!((7_800..=8_200).contains(&weight), "estimate {weight}");
    }

    #[test]
    fn traffic_under_the_limit_is_never_resampled_however_bursty() {
        let mut rl = RateLimiter::seeded(1000, 16, 5);
        // 1,000 flows in the first millisecond of each of three seconds.
        for s in 0..3 {
            assert_eq!(run(&mut rl, 1, 1000, s * 1000, 1000), (1000, 1000));
        }
    }

    #[test]
    fn keys_are_limited_apart_and_bounded() {
        let mut rl = RateLimiter::seeded(10, 2, 4);
        assert_eq!(run(&mut rl, 1, 10, 0, 100), (10, 10));
        assert_eq!(run(&mut rl, 2, 10, 0, 100), (10, 10));
        assert_eq!(rl.len(), 2);
        run(&mut rl, 3, 1, 5_000, 1);
        assert_eq!(rl.len(), 2);
    }
}
