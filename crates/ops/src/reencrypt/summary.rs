//! The result of a run: counts per resource, the failed objects, text and JSON renderings.

use std::fmt::Write as _;

use serde::Serialize;

use super::OutputFormat;
use super::state::Counts;
use super::svm;

/// The outcome of one resource.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceSummary {
    /// As given in `--resources`.
    pub resource: String,
    /// Outcomes.
    #[serde(flatten)]
    pub counts: Counts,
    /// Every object was handled.
    pub done: bool,
    /// Lists restarted after an expired continue token.
    pub relists: u64,
    /// StorageVersionMigration name and final condition, with `--use-storage-version-migration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<svm::MigrationResult>,
    /// Cluster-scoped (by discovery): the run covered every object, `--namespace` or not.
    #[serde(skip)]
    pub cluster_scoped: bool,
}

/// One object that was given up on.
#[derive(Debug, Clone, Serialize)]
pub struct FailedObject {
    /// The resource.
    pub resource: String,
    /// `namespace/name` or `name`.
    pub object: String,
    /// Why.
    pub reason: String,
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// `--dry-run`: nothing was written.
    pub dry_run: bool,
    /// Stopped by a signal before the end; the state file says where.
    pub interrupted: bool,
    /// Per resource, in the order given.
    pub resources: Vec<ResourceSummary>,
    /// All resources together.
    pub total: Counts,
    /// Every object still not rewritten (this run's failures and those of earlier runs that
    /// the state file kept and that failed again).
    pub failures: Vec<FailedObject>,
    /// The state file a later run continues from (kept when interrupted or when objects
    /// failed: the next run retries them first).
    pub state_file: Option<String>,
    /// Objects were written back but the apiserver stored none of them again. With KMS v2 that
    /// means all were already under the current key; KMS v1 has no staleness signal, so there
    /// it means nothing was re-encrypted (`--force-rewrite` is needed).
    pub nothing_rewritten: bool,
}

/// What `nothing_rewritten` means, for people.
pub const NOTHING_REWRITTEN: &str = "the API server rewrote nothing: every object came back \
     unchanged. With a KMS v2 provider they are all under the current key already; a KMS v1 \
     provider has no staleness signal and keeps every object under its old key until it is \
     changed: run again with --force-rewrite";

impl Summary {
    /// Nothing failed and the run went to the end.
    pub fn passed(&self) -> bool {
        self.total.failed == 0 && !self.interrupted && self.resources.iter().all(|r| r.done)
    }

    pub(super) fn add_failure(&mut self, resource: &str, object: &str, reason: String) {
        self.failures.push(FailedObject {
            resource: resource.into(),
            object: object.into(),
            reason,
        });
    }

    /// The summary for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "would rewrite"
        } else {
            "processed"
        };
        for r in &self.resources {
            if let Some(m) = &r.migration {
                let _ = writeln!(
                    out,
                    "{}: StorageVersionMigration {} {}",
                    r.resource, m.name, m.condition
                );
                continue;
            }
            let _ = write!(out, "{}: {verb} {}", r.resource, r.counts.processed);
            if !self.dry_run {
                let _ = write!(
                    out,
                    " ({} rewritten, {} already current, {} skipped (deleted), {} failed)",
                    r.counts.rewritten, r.counts.already_current, r.counts.skipped, r.counts.failed
                );
            }
            if r.relists > 0 {
                let _ = write!(
                    out,
                    "; {} relist(s) after an expired continue token",
                    r.relists
                );
            }
            if !r.done {
                let _ = write!(out, " [not finished]");
            }
            out.push('\n');
        }
        let t = &self.total;
        if self.dry_run {
            let _ = writeln!(
                out,
                "dry run: {} object(s) listed, nothing written",
                t.processed
            );
        } else {
            let _ = writeln!(
                out,
                "total: {} rewritten, {} already current, {} skipped, {} failed",
                t.rewritten, t.already_current, t.skipped, t.failed
            );
        }
        for f in &self.failures {
            let _ = writeln!(out, "failed: {} {}: {}", f.resource, f.object, f.reason);
        }
        if !self.failures.is_empty() && !self.interrupted {
            let _ = writeln!(
                out,
                "{} object(s) not rewritten: {}",
                self.failures.len(),
                self.state_file
                    .as_deref()
                    .map(|p| format!(
                        "run again with the same flags to retry them first (state in {p})"
                    ))
                    .unwrap_or_else(|| {
                        "give --state-file so that a later run retries only them".into()
                    })
            );
        }
        if self.nothing_rewritten {
            let _ = writeln!(out, "note: {NOTHING_REWRITTEN}");
        }
        if self.interrupted {
            let _ = writeln!(
                out,
                "interrupted: run again with the same flags to continue{}",
                self.state_file
                    .as_deref()
                    .map(|p| format!(" (state in {p})"))
                    .unwrap_or_else(|| " (no --state-file: it starts over)".into())
            );
        }
        out
    }

    /// The summary as one JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("the summary serialises");
        v["passed"] = self.passed().into();
        if self.nothing_rewritten {
            v["note"] = NOTHING_REWRITTEN.into();
        }
        v
    }

    /// Renders in `format`.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Text => self.to_text(),
            OutputFormat::Json => format!("{}\n", self.to_json()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_passes_only_when_finished_without_failures() {
        let mut s = Summary {
            resources: vec![ResourceSummary {
                resource: "secrets".into(),
                done: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(s.passed() && s.to_json()["passed"] == true);
        s.total.failed = 1;
        s.add_failure("secrets", "ns/a", "still conflicting".into());
        assert!(!s.passed());
        assert!(
            s.to_text()
                .contains("failed: secrets ns/a: still conflicting")
        );
        s.total.failed = 0;
        s.interrupted = true;
        assert!(!s.passed());
        assert!(s.to_text().contains("no --state-file: it starts over"));
    }

    #[test]
    fn every_failed_object_is_named_with_the_way_to_retry_it() {
        let mut s = Summary {
            state_file: Some("/tmp/s.json".into()),
            ..Default::default()
        };
        for i in 0..250 {
            s.add_failure("secrets", &format!("ns/{i}"), "get: HTTP 503".into());
        }
        let text = s.to_text();
        assert_eq!(s.failures.len(), 250);
        assert!(
            text.contains("failed: secrets ns/249: get: HTTP 503"),
            "{text}"
        );
        assert!(
            text.contains("250 object(s) not rewritten: run again"),
            "{text}"
        );
    }

    #[test]
    fn a_run_the_apiserver_stored_nothing_of_says_so_with_the_kms_v1_hint() {
        let s = Summary {
            nothing_rewritten: true,
            ..Default::default()
        };
        assert!(s.to_text().contains("rewrote nothing") && s.to_text().contains("--force-rewrite"));
        assert!(
            s.to_json()["note"]
                .as_str()
                .is_some_and(|n| n.contains("KMS v1"))
        );
    }
}
