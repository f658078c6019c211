//! The state file: how far each resource got and which objects failed, written atomically (temp
//! file + rename + directory fsync) so that an interrupted run, however it ends, leaves a file the
//! next run continues from. It names its target (cluster, resources, namespace, key_id): a file
//! of another cluster or rotation would skip objects that were never rewritten there.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ReencryptError;

const FORMAT: &str = "polykms-reencrypt-state/v2";

/// Counts of one resource (or of the whole run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Listed objects handled (whatever the outcome).
    pub processed: u64,
    /// Written again: now under the current key.
    pub rewritten: u64,
    /// Written back unchanged and not stored again: already under the current key (KMS v2).
    pub already_current: u64,
    /// Deleted between the list and the rewrite.
    pub skipped: u64,
    /// Gave up (conflicts or errors that outlasted the retries).
    pub failed: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.processed += other.processed;
        self.rewritten += other.rewritten;
        self.already_current += other.already_current;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }
}

/// Where one resource is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Every object of the resource has been handled.
    pub done: bool,
    /// List-order key (`namespace/name`, or `name`) of the last object handled, with all before
    /// it handled too.
    pub last_key: Option<String>,
    /// Position in the list: objects handled so far.
    pub position: u64,
    /// The continue token of the page being worked on (it may have expired by the next run).
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    /// Outcomes so far.
    pub counts: Counts,
    /// Objects given up on (list-order key → why), retried first by the next run: the cursor
    /// moves past them, this keeps them.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
}

/// The cluster and rotation a state file was made for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The API server URL (kubeconfig `server`, or the in-cluster one).
    pub server: String,
    /// The UID of the kube-system namespace, when readable: the same cluster under any URL.
    pub cluster_uid: Option<String>,
    /// `--expect-key-id`, when given: the key_id this rotation rewrites to.
    pub expect_key_id: Option<String>,
}

impl Target {
    /// Why a file made for `self` must not be continued by a run for `run`, if it must not.
    fn mismatch(&self, run: &Target) -> Option<String> {
        let same_cluster = match (&self.cluster_uid, &run.cluster_uid) {
            (Some(a), Some(b)) => a == b,
            _ => self.server == run.server,
        };
        if !same_cluster {
            return Some(format!(
                "it was made for another cluster ({} kube-system uid {}; this run: {} uid {})",
                self.server,
                self.cluster_uid.as_deref().unwrap_or("unreadable"),
                run.server,
                run.cluster_uid.as_deref().unwrap_or("unreadable"),
            ));
        }
        if let (Some(a), Some(b)) = (&self.expect_key_id, &run.expect_key_id)
            && a != b
        {
            return Some(format!(
                "it was made for another rotation (--expect-key-id {a}; this run: {b})"
            ));
        }
        None
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    format: String,
    /// What the file was made for.
    pub target: Target,
    /// `--namespace` of the run (None = all namespaces).
    pub namespace: Option<String>,
    /// Per resource as given on the command line.
    pub resources: BTreeMap<String, Cursor>,
}

impl State {
    /// A fresh state for these resources.
    pub fn new(target: Target, namespace: Option<&str>, resources: &[String]) -> Self {
        State {
            format: FORMAT.into(),
            target,
            namespace: namespace.map(str::to_string),
            resources: resources
                .iter()
                .map(|r| (r.clone(), Cursor::default()))
                .collect(),
        }
    }

    /// The cursor of `resource` (present for every resource of the run).
    pub fn cursor_mut(&mut self, resource: &str) -> &mut Cursor {
        self.resources.entry(resource.to_string()).or_default()
    }
}

/// A state file on disk (or none, when `--state-file` is not given).
#[derive(Debug)]
pub struct StateFile {
    path: Option<PathBuf>,
}

impl StateFile {
    /// No file: progress lives in memory only.
    pub fn none() -> Self {
        StateFile { path: None }
    }

    /// The file at `path`.
    pub fn at(path: PathBuf) -> Self {
        StateFile { path: Some(path) }
    }

    /// The path, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Loads the state of a previous run, if the file exists; it must be for the same target
    /// (cluster, key_id, namespace, resources) as `fresh`, unless `discard` is set, in which
    /// case any earlier file is ignored (and replaced at the first save).
    pub fn load(&self, fresh: &State, discard: bool) -> Result<Option<State>, ReencryptError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ReencryptError::Config(format!(
                    "--state-file {}: {e}",
                    path.display()
                )));
            }
        };
        if discard {
            return Ok(None);
        }
        let refuse = |why: String| {
            ReencryptError::Config(format!(
                "--state-file {} belongs to another run: {why}; give the flags of that run, or \
                 --discard-state to start over (objects it recorded as done are rewritten again)",
                path.display()
            ))
        };
        let header: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            ReencryptError::Config(format!(
                "--state-file {}: not a reencrypt state file: {e}",
                path.display()
            ))
        })?;
        if header["format"] != FORMAT {
            return Err(refuse(format!(
                "format {}, this version writes {FORMAT:?}",
                header["format"]
            )));
        }
        let mut state: State = serde_json::from_value(header).map_err(|e| {
            ReencryptError::Config(format!(
                "--state-file {}: not a reencrypt state file: {e}",
                path.display()
            ))
        })?;
        if let Some(why) = state.target.mismatch(&fresh.target) {
            return Err(refuse(why));
        }
        let same_resources = state.resources.len() == fresh.resources.len()
            && fresh
                .resources
                .keys()
                .all(|r| state.resources.contains_key(r));
        if state.namespace != fresh.namespace || !same_resources {
            return Err(refuse(format!(
                "namespace {}, resources {}",
                state.namespace.as_deref().unwrap_or("<all>"),
                state
                    .resources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        // A run that names the key_id binds a file that did not (and learns the UID).
        state.target = Target {
            expect_key_id: fresh
                .target
                .expect_key_id
                .clone()
                .or(state.target.expect_key_id),
            cluster_uid: fresh
                .target
                .cluster_uid
                .clone()
                .or(state.target.cluster_uid),
            server: fresh.target.server.clone(),
        };
        Ok(Some(state))
    }

    /// Writes `state` atomically: a temporary file in the same directory, fsync, rename.
    pub fn save(&self, state: &State) -> Result<(), ReencryptError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let failed = |e: std::io::Error| {
            ReencryptError::Io(format!("writing --state-file {}: {e}", path.display()))
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
        let text = serde_json::to_vec_pretty(state).expect("the state serialises");
        tmp.write_all(&text).map_err(failed)?;
        tmp.as_file().sync_all().map_err(failed)?;
        tmp.persist(path).map_err(|e| failed(e.error))?;
        // The rename is durable only once the directory entry is on disk.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
        Ok(())
    }

    /// A finished run removes its state: the next run starts over.
    pub fn remove(&self) -> Result<(), ReencryptError> {
        match &self.path {
            Some(path) => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ReencryptError::Io(format!(
                    "removing --state-file {}: {e}",
                    path.display()
                ))),
            },
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(server: &str, uid: Option<&str>, key_id: Option<&str>) -> Target {
        Target {
            server: server.into(),
            cluster_uid: uid.map(str::to_string),
            expect_key_id: key_id.map(str::to_string),
        }
    }

    fn refusal(result: Result<Option<State>, ReencryptError>) -> String {
        match result {
            Err(ReencryptError::Config(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn state_round_trips_and_refuses_another_scope() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = StateFile::at(dir.path().join("s.json"));
        let resources = vec!["secrets".to_string(), "configmaps".to_string()];
        let t = target("https://a:6443", Some("uid-a"), Some("k2"));
        let fresh = State::new(t.clone(), None, &resources);
        assert_eq!(file.load(&fresh, false).expect("no file yet"), None);
        let mut state = fresh.clone();
        let c = state.cursor_mut("secrets");
        c.last_key = Some("ns/a".into());
        c.position = 7;
        c.counts.rewritten = 6;
        c.counts.failed = 1;
        c.failed.insert("ns/0".into(), "get: HTTP 503".into());
        file.save(&state).expect("saved");
        assert_eq!(file.load(&fresh, false).expect("loads"), Some(state));
        for (ns, res) in [
            (Some("ns"), resources.clone()),
            (None, vec!["secrets".to_string()]),
        ] {
            let m = refusal(file.load(&State::new(t.clone(), ns, &res), false));
            assert!(
                m.contains("another run") && m.contains("--discard-state"),
                "{m}"
            );
        }
        file.remove().expect("removed");
        assert_eq!(file.load(&fresh, false).expect("gone"), None);
    }

    #[test]
    fn a_file_of_another_cluster_or_rotation_is_refused_unless_discarded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = StateFile::at(dir.path().join("s.json"));
        let res = vec!["secrets".to_string()];
        let made = State::new(
            target("https://a:6443", Some("uid-a"), Some("k1")),
            None,
            &res,
        );
        file.save(&made).expect("saved");
        let run = |t: Target| State::new(t, None, &res);
        let m = refusal(file.load(&run(target("https://a:6443", Some("uid-b"), None)), false));
        assert!(m.contains("another cluster"), "{m}");
        let m = refusal(file.load(
            &run(target("https://a:6443", Some("uid-a"), Some("k2"))),
            false,
        ));
        assert!(m.contains("another rotation") && m.contains("k1"), "{m}");
        // Without a readable UID on one side, the URL decides.
        let m = refusal(file.load(&run(target("https://b:6443", None, None)), false));
        assert!(m.contains("another cluster"), "{m}");
        // The same cluster under another URL, and a run that names no key_id, continue.
        let same = file
            .load(&run(target("https://lb:443", Some("uid-a"), None)), false)
            .expect("same cluster");
        assert_eq!(
            same.map(|s| s.target.expect_key_id),
            Some(Some("k1".into()))
        );
        assert_eq!(
            file.load(
                &run(target("https://b:6443", Some("uid-b"), Some("k9"))),
                true
            )
            .expect("discarded"),
            None
        );
    }

    #[test]
    fn a_file_of_the_previous_format_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.json");
        std::fs::write(
            &path,
            br#"{"format":"polykms-reencrypt-state/v1","namespace":null,"resources":{}}"#,
        )
        .expect("write");
        let fresh = State::new(Target::default(), None, &["secrets".into()]);
        let m = refusal(StateFile::at(path).load(&fresh, false));
        assert!(m.contains("format") && m.contains("--discard-state"), "{m}");
    }

    #[test]
    fn garbage_state_is_a_config_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"{not json").expect("write");
        let fresh = State::new(Target::default(), None, &["secrets".into()]);
        match StateFile::at(path).load(&fresh, false) {
            Err(ReencryptError::Config(m)) => assert!(m.contains("not a reencrypt state"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
