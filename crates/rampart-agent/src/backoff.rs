//! Retry delays for talking to the portal.
//!
//! Many agents lose their uplink at the same moment (a site router reboots, the
//! portal restarts) and come back at the same moment too. Retrying on a fixed
//! or purely exponential schedule makes them all hit the portal in lockstep;
//! "full jitter" (a uniform random delay up to the exponential ceiling) spreads
//! them out. We keep a floor of half the base delay so that an unlucky draw
//! near zero does not turn into a tight retry loop against a portal that is
//! already struggling.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter and a floor of `base / 2`.
///
/// The `n`th call to [`Backoff::next_delay`] after a reset (counting from 0)
/// returns a uniform random delay in `[base / 2, min(max, base * 2^n)]`.
/// Call [`Backoff::reset`] after a success so the next failure starts small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max`.
    ///
    /// A `max` below `base` is raised to `base`: the caller asked for at least
    /// `base` between attempts, and silently retrying faster would be worse
    /// than retrying slightly slower than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay to wait before the next attempt; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        let floor = self.base / 2;
        self.attempt = self.attempt.saturating_add(1);
        // `ceiling >= base >= floor` always holds (see `new`), so the range is
        // never empty; the comparison keeps that true even if it changes.
        if ceiling <= floor {
            return ceiling;
        }
        rand::thread_rng().gen_range(floor..=ceiling)
    }

    /// Starts over from `base`, e.g. after a request succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay: `min(max, base * 2^attempt)`.
    ///
    /// Computed with checked arithmetic, because after a long outage the
    /// attempt count is large enough to overflow both `2^attempt` and the
    /// multiplication; any overflow simply means "capped at `max`".
    pub fn ceiling(&self) -> Duration {
        1u32.checked_shl(self.attempt)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The smallest delay ever returned: `base / 2`.
    pub fn floor(&self) -> Duration {
        self.base / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn delays_stay_between_half_base_and_the_exponential_ceiling() {
        let mut b = Backoff::new(BASE, MAX);
        for n in 0..40u32 {
            let ceiling = b.ceiling();
            let expected = BASE
                .checked_mul(2u32.saturating_pow(n))
                .map_or(MAX, |d| d.min(MAX));
            assert_eq!(ceiling, expected, "ceiling at attempt {n}");
            let d = b.next_delay();
            assert!(d >= BASE / 2, "attempt {n}: {d:?} below the floor");
            assert!(d <= ceiling, "attempt {n}: {d:?} above {ceiling:?}");
        }
    }

    #[test]
    fn first_delay_is_at_most_base() {
        for _ in 0..200 {
            let mut b = Backoff::new(BASE, MAX);
            let d = b.next_delay();
            assert!(d >= BASE / 2 && d <= BASE, "{d:?}");
        }
    }

    #[test]
    fn delays_grow_with_attempts() {
        // The ceiling doubles each attempt until it reaches max.
        let mut b = Backoff::new(BASE, MAX);
        let mut last = Duration::ZERO;
        while b.ceiling() < MAX {
            assert!(b.ceiling() > last);
            last = b.ceiling();
            b.next_delay();
        }
        // And the drawn delays really use the wider range: with a ceiling of
        // 32 * base, the chance that 200 draws all stay at or below base is
        // about (1/63)^200.
        let mut b = Backoff::new(BASE, MAX);
        for _ in 0..5 {
            b.next_delay();
        }
        let biggest = (0..200)
            .map(|_| {
                let mut c = b.clone();
                c.next_delay()
            })
            .max()
            .unwrap_or_default();
        assert!(biggest > BASE, "{biggest:?}");
    }

    #[test]
    fn delays_cap_at_max() {
        let mut b = Backoff::new(BASE, MAX);
        for _ in 0..100 {
            assert!(b.next_delay() <= MAX);
        }
        assert_eq!(b.ceiling(), MAX);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff {
            base: BASE,
            max: MAX,
            attempt: u32::MAX - 1,
        };
        assert_eq!(b.ceiling(), MAX);
        assert!(b.next_delay() <= MAX);
        assert!(b.next_delay() <= MAX);
        assert_eq!(b.attempt(), u32::MAX, "attempt count saturates");
        assert!(b.next_delay() <= MAX);

        // A base so large that base * 2 overflows Duration.
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            assert!(b.next_delay() >= Duration::MAX / 2);
        }
    }

    #[test]
    fn reset_starts_over_from_base() {
        let mut b = Backoff::new(BASE, MAX);
        for _ in 0..10 {
            b.next_delay();
        }
        assert!(b.ceiling() > BASE);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), BASE);
        let d = b.next_delay();
        assert!(d >= BASE / 2 && d <= BASE, "{d:?}");
    }

    #[test]
    fn max_below_base_is_raised_to_base() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
    }

    #[test]
    fn zero_base_gives_zero_delays_without_panicking() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
