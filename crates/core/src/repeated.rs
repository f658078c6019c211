//! Failed calls that repeat: the apiserver retries a failing call (a key removed too early
//! makes it retry the same Decrypt for minutes), and one WARN line per retry buries everything
//! else. The first failure of a kind — same API, method, backend and error kind — is logged at
//! WARN in full; identical ones after it are counted (and logged at DEBUG), and the count is
//! written in one WARN summary line at most once a [`WINDOW`] per kind. Metrics still count
//! every call; counts still pending at shutdown are written by [`flush`].

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// At most one summary line per kind of failure in this time.
pub const WINDOW: Duration = Duration::from_secs(60);

/// What makes two failures identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailureKind {
    pub api: &'static str,
    pub method: &'static str,
    /// The backend that failed, or `-` when the failure is not a backend's.
    pub backend: String,
    /// `CoreError::outcome()`: the error kind.
    pub outcome: &'static str,
}

/// Whether a failure gets its own WARN line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first of its kind in this window: log it in full.
    Log,
    /// A repeat: counted for the next summary.
    Counted,
}

/// The count written in a summary line.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub kind: FailureKind,
    /// Failures since the last line written for this kind.
    pub repeated: u64,
    /// The last of them, as its log line would have said.
    pub last_error: String,
    /// How long the counted failures span, from the last line for this kind.
    pub over: Duration,
}

#[derive(Debug)]
struct Entry {
    /// When the last line for this kind was written.
    since: Instant,
    repeated: u64,
    last_error: String,
}

/// Failures by kind in the current window: the bookkeeping, with time passed in.
#[derive(Debug, Default)]
pub struct RepeatedFailures {
    entries: HashMap<FailureKind, Entry>,
}

impl RepeatedFailures {
    /// Records one failure at `now`.
    pub fn record(&mut self, kind: &FailureKind, error: &str, now: Instant) -> Verdict {
        match self.entries.get_mut(kind) {
            Some(e) => {
                e.repeated += 1;
                e.last_error.clear();
                e.last_error.push_str(error);
                Verdict::Counted
            }
            None => {
                self.entries.insert(
                    kind.clone(),
                    Entry {
                        since: now,
                        repeated: 0,
                        last_error: String::new(),
                    },
                );
                Verdict::Log
            }
        }
    }

    /// Summaries of the kinds whose window ended by `now` with repeats in it (their next
    /// window starts now); kinds whose window ended quietly are forgotten, so that their next
    /// failure is logged in full again. `all` ends every window (shutdown).
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Summary> {
        let mut out = Vec::new();
        self.entries.retain(|kind, e| {
            let over = now.saturating_duration_since(e.since);
            if !all && over < WINDOW {
                return true;
            }
            if e.repeated == 0 {
                return false;
            }
            out.push(Summary {
                kind: kind.clone(),
                repeated: std::mem::take(&mut e.repeated),
                last_error: std::mem::take(&mut e.last_error),
                over,
            });
            e.since = now;
            !all
        });
        out
    }

    /// No kind is being counted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One process serves one plugin: its repeated failures are counted in one place.
fn shared() -> &'static Mutex<RepeatedFailures> {
    static SHARED: OnceLock<Mutex<RepeatedFailures>> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

/// Records a failed call and says whether to log it in full. The first repeat starts the
/// task that writes the summaries.
pub fn record(kind: &FailureKind, error: &str) -> Verdict {
    let verdict = lock().record(kind, error, Instant::now());
    if verdict == Verdict::Counted {
        start_summaries();
    }
    verdict
}

/// Writes the summaries still pending (at shutdown: no count is lost).
pub fn flush() {
    let due = lock().due(Instant::now(), true);
    due.iter().for_each(log_summary);
}

fn lock() -> std::sync::MutexGuard<'static, RepeatedFailures> {
    // The bookkeeping stays consistent even if a holder panicked: every update is one step.
    shared().lock().unwrap_or_else(|e| e.into_inner())
}

fn start_summaries() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        tokio::spawn(async {
            // A summary is written between one and one and a quarter windows after the line
            // before it.
            let mut tick = tokio::time::interval(WINDOW / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let due = lock().due(Instant::now(), false);
                due.iter().for_each(log_summary);
            }
        });
    });
}

fn log_summary(s: &Summary) {
    let k = &s.kind;
    tracing::warn!(api = k.api, method = k.method, backend = %k.backend, outcome = k.outcome,
        repeated = s.repeated, over_s = s.over.as_secs(), error = %s.last_error,
        "request failed repeatedly (identical failures counted since the last line)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(backend: &str, outcome: &'static str) -> FailureKind {
        FailureKind {
            api: "v2",
            method: "Decrypt",
            backend: backend.into(),
            outcome,
        }
    }

    #[test]
    fn the_first_failure_of_a_kind_is_logged_and_repeats_are_counted() {
        let mut r = RepeatedFailures::default();
        let t0 = Instant::now();
        let a = kind("aws", "key_unavailable");
        assert_eq!(r.record(&a, "e1", t0), Verdict::Log);
        for i in 0..188 {
            assert_eq!(r.record(&a, &format!("e{i}"), t0), Verdict::Counted);
        }
        // Another backend, method or kind is another failure.
        assert_eq!(
            r.record(&kind("vault", "key_unavailable"), "x", t0),
            Verdict::Log
        );
        assert_eq!(r.record(&kind("aws", "unavailable"), "x", t0), Verdict::Log);
        let encrypt = FailureKind {
            method: "Encrypt",
            ..a.clone()
        };
        assert_eq!(r.record(&encrypt, "x", t0), Verdict::Log);
        assert!(r.due(t0 + WINDOW / 2, false).is_empty());
        let due = r.due(t0 + WINDOW, false);
        assert_eq!(
            due,
            vec![Summary {
                kind: a.clone(),
                repeated: 188,
                last_error: "e187".into(),
                over: WINDOW,
            }]
        );
    }

    #[test]
    fn at_most_one_summary_per_window_and_quiet_kinds_are_forgotten() {
        let mut r = RepeatedFailures::default();
        let t0 = Instant::now();
        let a = kind("local", "key_unavailable");
        r.record(&a, "e", t0);
        r.record(&a, "e", t0);
        assert_eq!(r.due(t0 + WINDOW, false).len(), 1);
        // Still failing: counted into the next window, summarised a window later, not before.
        r.record(&a, "e", t0 + WINDOW);
        assert!(r.due(t0 + WINDOW + WINDOW / 2, false).is_empty());
        assert_eq!(r.due(t0 + WINDOW * 2, false)[0].repeated, 1);
        // A quiet window: nothing to say, and the kind is forgotten...
        assert!(r.due(t0 + WINDOW * 3, false).is_empty());
        assert!(r.is_empty());
        // ...so its next failure is logged in full.
        assert_eq!(r.record(&a, "e", t0 + WINDOW * 3), Verdict::Log);
    }

    #[test]
    fn flushing_at_shutdown_writes_every_pending_count() {
        let mut r = RepeatedFailures::default();
        let t0 = Instant::now();
        let (a, b) = (kind("a", "unavailable"), kind("b", "unavailable"));
        r.record(&a, "e", t0);
        r.record(&a, "e", t0);
        r.record(&b, "e", t0);
        let due = r.due(t0, true);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].kind.backend.as_str(), due[0].repeated), ("a", 1));
        assert!(r.is_empty());
    }
}
