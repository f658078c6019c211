//! Progress: a bar per resource on a terminal; JSON lines on stderr otherwise, at most one per
//! resource every few seconds.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::state::Counts;

const JSON_EVERY: Duration = Duration::from_secs(3);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on stderr.
    Bars,
    /// JSON lines on stderr.
    JsonLines,
}

impl ProgressMode {
    /// Bars when stderr is a terminal, JSON lines otherwise.
    pub fn detect() -> Self {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::JsonLines
        }
    }
}

/// The progress display of a run.
pub struct Progress {
    mode: ProgressMode,
    bars: MultiProgress,
    per_resource: HashMap<String, Entry>,
}

struct Entry {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    started: Instant,
    started_at: u64,
}

impl Progress {
    /// A display in `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        Progress {
            mode,
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            per_resource: HashMap::new(),
        }
    }

    /// A resource starts (or resumes at `position`).
    pub fn start(&mut self, resource: &str, position: u64) {
        let bar = (self.mode == ProgressMode::Bars).then(|| {
            let bar = self.bars.add(ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
                    .expect("the progress template is valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(resource.to_string());
            bar.set_position(position);
            bar
        });
        self.per_resource.insert(
            resource.to_string(),
            Entry {
                bar,
                last_line: None,
                started: Instant::now(),
                started_at: position,
            },
        );
    }

    /// Objects handled so far and the estimated total (listed + remaining).
    pub fn update(&mut self, resource: &str, position: u64, total: Option<u64>, counts: &Counts) {
        let Some(e) = self.per_resource.get_mut(resource) else {
            return;
        };
        match &e.bar {
            Some(bar) => {
                if let Some(t) = total {
                    bar.set_length(t.max(position));
                }
                bar.set_position(position);
                bar.set_message(format!(
                    "{:.0}/s rewritten {} current {} skipped {} failed {}",
                    rate(position, e),
                    counts.rewritten,
                    counts.already_current,
                    counts.skipped,
                    counts.failed
                ));
            }
            None => {
                if e.last_line.is_some_and(|t| t.elapsed() < JSON_EVERY) {
                    return;
                }
                e.last_line = Some(Instant::now());
                json_line(resource, "progress", position, total, counts, e);
            }
        }
    }

    /// A resource is finished (or the run stops).
    pub fn finish(&mut self, resource: &str, position: u64, counts: &Counts, done: bool) {
        let Some(e) = self.per_resource.get_mut(resource) else {
            return;
        };
        let event = if done { "done" } else { "stopped" };
        match &e.bar {
            Some(bar) => {
                bar.set_position(position);
                if done {
                    bar.set_length(position);
                    bar.finish();
                } else {
                    bar.abandon_with_message(format!("stopped at {position}"));
                }
            }
            None => json_line(resource, event, position, Some(position), counts, e),
        }
    }

    /// Prints a line without tearing the bars.
    pub fn note(&self, line: &str) {
        match self.mode {
            ProgressMode::Bars => {
                let _ = self.bars.println(line);
            }
            ProgressMode::JsonLines => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}",
                    serde_json::json!({ "event": "note", "message": line })
                );
            }
        }
    }
}

/// Objects per second since this run started on the resource.
fn rate(position: u64, e: &Entry) -> f64 {
    let secs = e.started.elapsed().as_secs_f64();
    if secs > 0.0 {
        (position.saturating_sub(e.started_at)) as f64 / secs
    } else {
        0.0
    }
}

fn json_line(
    resource: &str,
    event: &str,
    position: u64,
    total: Option<u64>,
    counts: &Counts,
    e: &Entry,
) {
    let rate = rate(position, e);
    let eta = match total {
        Some(t) if rate > 0.0 && t > position => Some(((t - position) as f64 / rate).ceil() as u64),
        _ => None,
    };
    let _ = writeln!(
        std::io::stderr(),
        "{}",
        serde_json::json!({
            "event": event,
            "resource": resource,
            "done": position,
            "total": total,
            "rate_per_second": (rate * 10.0).round() / 10.0,
            "eta_seconds": eta,
            "rewritten": counts.rewritten,
            "already_current": counts.already_current,
            "skipped": counts.skipped,
            "failed": counts.failed,
        })
    );
}
