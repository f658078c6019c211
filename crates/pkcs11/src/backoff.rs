//! How often a module may be finalized and initialized again while a token stays missing: at
//! once the first time, then after delays doubling from [`FIRST_DELAY`] up to [`MAX_DELAY`].
//! A token missing for `t` then costs about log2(min(t, MAX_DELAY) / FIRST_DELAY) + 1 +
//! t / MAX_DELAY re-initializations of a module that every backend shares, not one per probe,
//! and a token that comes back is found within `MAX_DELAY`.
//!
//! The clock is the caller's (`now`), so the schedule is tested with explicit instants.

use std::time::{Duration, Instant};

/// The wait after the first re-initialization (two unhealthy probe intervals).
pub(crate) const FIRST_DELAY: Duration = Duration::from_secs(10);
/// The longest wait: a re-created or re-inserted token is found at most this late.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(300);

/// When the next re-initialization for a missing token may run.
#[derive(Debug)]
pub(crate) struct ReinitBackoff {
    /// None: at once.
    next: Option<Instant>,
    delay: Duration,
}

impl ReinitBackoff {
    pub(crate) fn new() -> Self {
        ReinitBackoff {
            next: None,
            delay: FIRST_DELAY,
        }
    }

    /// Ok when a re-initialization may run at `now`, else the instant it may.
    pub(crate) fn due(&self, now: Instant) -> Result<(), Instant> {
        match self.next {
            Some(next) if now < next => Err(next),
            _ => Ok(()),
        }
    }

    /// A re-initialization ran at `now`: the next one waits twice as long as this one did.
    pub(crate) fn record(&mut self, now: Instant) {
        self.next = Some(now + self.delay);
        self.delay = (self.delay * 2).min(MAX_DELAY);
    }

    /// The missing token is back: the next one to go missing is looked for at once.
    pub(crate) fn reset(&mut self) {
        *self = ReinitBackoff::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE_INTERVAL: Duration = Duration::from_secs(5);

    /// The offsets from `start` at which probes every 5 s over `horizon` re-initialize.
    fn reinitializations(b: &mut ReinitBackoff, start: Instant, horizon: Duration) -> Vec<u64> {
        let mut at = Duration::ZERO;
        let mut ran = Vec::new();
        while at <= horizon {
            if b.due(start + at).is_ok() {
                b.record(start + at);
                ran.push(at.as_secs());
            }
            at += PROBE_INTERVAL;
        }
        ran
    }

    fn log2_bound(horizon: Duration) -> usize {
        let capped = horizon.min(MAX_DELAY).as_secs_f64() / FIRST_DELAY.as_secs_f64();
        capped.log2().ceil() as usize + 1 + (horizon.as_secs() / MAX_DELAY.as_secs()) as usize
    }

    #[test]
    fn the_first_reinitialization_runs_at_once_then_delays_double_up_to_the_cap() {
        let start = Instant::now();
        let ran = reinitializations(&mut ReinitBackoff::new(), start, Duration::from_secs(1300));
        assert_eq!(ran, [0, 10, 30, 70, 150, 310, 610, 910, 1210]);
    }

    #[test]
    fn a_token_missing_for_t_costs_logarithmically_many_reinitializations() {
        let start = Instant::now();
        for minutes in [1, 5, 10, 60, 24 * 60] {
            let horizon = Duration::from_secs(60 * minutes);
            let ran = reinitializations(&mut ReinitBackoff::new(), start, horizon);
            let probes = horizon.as_secs() / PROBE_INTERVAL.as_secs() + 1;
            assert!(
                ran.len() <= log2_bound(horizon),
                "{minutes} min: {} re-initializations for {probes} probes: {ran:?}",
                ran.len()
            );
        }
    }

    #[test]
    fn a_reset_makes_the_next_reinitialization_immediate_and_the_delays_short_again() {
        let start = Instant::now();
        let mut b = ReinitBackoff::new();
        reinitializations(&mut b, start, Duration::from_secs(3600));
        let later = start + Duration::from_secs(3601);
        assert!(b.due(later).is_err());
        b.reset();
        assert_eq!(
            reinitializations(&mut b, later, Duration::from_secs(30)),
            [0, 10, 30]
        );
    }

    #[test]
    fn a_deferred_reinitialization_names_when_it_may_run() {
        let start = Instant::now();
        let mut b = ReinitBackoff::new();
        b.record(start);
        assert_eq!(
            b.due(start + Duration::from_secs(9)),
            Err(start + FIRST_DELAY)
        );
        assert_eq!(b.due(start + FIRST_DELAY), Ok(()));
    }
}
