//! The state file: how far each resource got, written atomically (temp file + rename) so that an
//! interrupted run, however it ends, leaves a file the next run continues from.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ReencryptError;

const FORMAT: &str = "polykms-reencrypt-state/v1";

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
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    format: String,
    /// `--namespace` of the run (None = all namespaces).
    pub namespace: Option<String>,
    /// Per resource as given on the command line.
    pub resources: BTreeMap<String, Cursor>,
}

impl State {
    /// A fresh state for these resources.
    pub fn new(namespace: Option<&str>, resources: &[String]) -> Self {
        State {
            format: FORMAT.into(),
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

    /// Loads the state of a previous run, if the file exists; it must be for the same scope.
    pub fn load(
        &self,
        namespace: Option<&str>,
        resources: &[String],
    ) -> Result<Option<State>, ReencryptError> {
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
        let state: State = serde_json::from_slice(&text).map_err(|e| {
            ReencryptError::Config(format!(
                "--state-file {}: not a reencrypt state file: {e}",
                path.display()
            ))
        })?;
        if state.format != FORMAT {
            return Err(ReencryptError::Config(format!(
                "--state-file {}: format {:?}, this version writes {FORMAT:?}",
                path.display(),
                state.format
            )));
        }
        let same_resources = state.resources.len() == resources.len()
            && resources.iter().all(|r| state.resources.contains_key(r));
        if state.namespace.as_deref() != namespace || !same_resources {
            return Err(ReencryptError::Config(format!(
                "--state-file {} belongs to another run (namespace {}, resources {}): give the same \
                 --namespace and --resources, or remove the file to start over",
                path.display(),
                state.namespace.as_deref().unwrap_or("<all>"),
                state
                    .resources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
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

    #[test]
    fn state_round_trips_and_refuses_another_scope() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = StateFile::at(dir.path().join("s.json"));
        let resources = vec!["secrets".to_string(), "configmaps".to_string()];
        assert_eq!(file.load(None, &resources).expect("no file yet"), None);
        let mut state = State::new(None, &resources);
        let c = state.cursor_mut("secrets");
        c.last_key = Some("ns/a".into());
        c.position = 7;
        c.counts.rewritten = 7;
        file.save(&state).expect("saved");
        assert_eq!(file.load(None, &resources).expect("loads"), Some(state));
        for (ns, res) in [
            (Some("ns"), resources.clone()),
            (None, vec!["secrets".to_string()]),
        ] {
            match file.load(ns, &res) {
                Err(ReencryptError::Config(m)) => assert!(m.contains("another run"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        file.remove().expect("removed");
        assert_eq!(file.load(None, &resources).expect("gone"), None);
    }

    #[test]
    fn garbage_state_is_a_config_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"{not json").expect("write");
        match StateFile::at(path).load(None, &["secrets".into()]) {
            Err(ReencryptError::Config(m)) => assert!(m.contains("not a reencrypt state"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
