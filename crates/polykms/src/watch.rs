//! `[server] watch_config`: tells when the config file, or a file it names, has new contents.
//!
//! Directories are watched, not files: a mounted ConfigMap or Secret changes by swapping its
//! `..data` symlink, and editors save by renaming a new file over the old one; both replace
//! the file, which a watch on the file itself would not follow. Events only wake the watcher:
//! what decides is a digest of every watched file's contents, compared with the digests the
//! last reload saw, so a burst of events, a file rewritten with the same bytes, or a SIGHUP
//! reload that already read the change does not reload twice.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last event before the files are read: an editor's save or a
/// ConfigMap update is several events, and one reload should see all of them.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// A file's contents as a SHA-256 digest, or `None` when it cannot be read (missing,
/// unreadable): a file that appears or disappears is a change too.
pub type FileDigest = Option<[u8; 32]>;

/// Reads and digests `path` (following symlinks). The bytes are not kept.
pub fn digest(path: &Path) -> FileDigest {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).ok()?);
    Some(polykms_backend::crypto::sha256(&bytes))
}

/// The watched files and the digests a reload last saw of them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    files: Vec<(PathBuf, FileDigest)>,
}

impl Seen {
    /// Files whose contents differ from what was seen.
    fn changed(&self) -> Vec<&Path> {
        self.files
            .iter()
            .filter(|(path, seen)| digest(path) != *seen)
            .map(|(path, _)| path.as_path())
            .collect()
    }
}

/// Watches a config file and the files it names.
pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<Event>>,
    dirs: BTreeSet<PathBuf>,
    names: BTreeSet<OsString>,
    seen: Seen,
}

impl ConfigWatcher {
    /// Starts an inotify watcher (nothing is watched until [`ConfigWatcher::watch`]).
    pub fn new() -> notify::Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when serving stops.
            let _ = tx.send(event);
        })?;
        Ok(ConfigWatcher {
            watcher,
            events,
            dirs: BTreeSet::new(),
            names: BTreeSet::new(),
            seen: Seen::default(),
        })
    }

    /// Watches `config` (whose contents, as the reload read them, digest to `config_digest`)
    /// and `files`, taking their current contents as seen. Called after every reload, whatever
    /// its outcome, so that the next change of any of them is noticed once.
    pub fn watch(&mut self, config: &Path, config_digest: FileDigest, files: &[PathBuf]) {
        let mut dirs = BTreeSet::new();
        let mut names = BTreeSet::new();
        for path in std::iter::once(config).chain(files.iter().map(PathBuf::as_path)) {
            // The directory of the path as named (where `..data` is swapped) and, for a
            // symlink, of the file it points to (where an in-place write happens).
            let real = std::fs::canonicalize(path).ok();
            for p in std::iter::once(path).chain(real.as_deref()) {
                dirs.insert(parent(p));
                if let Some(name) = p.file_name() {
                    names.insert(name.to_os_string());
                }
            }
        }
        for gone in self.dirs.difference(&dirs) {
            // A directory that was deleted has lost its watch already.
            let _ = self.watcher.unwatch(gone);
        }
        for new in dirs.difference(&self.dirs) {
            if let Err(e) = self.watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %new.display(), error = %e,
                    "cannot watch a config directory; changes there need a SIGHUP");
            }
        }
        self.dirs = dirs;
        self.names = names;
        let mut seen = vec![(config.to_path_buf(), config_digest)];
        seen.extend(files.iter().map(|f| (f.clone(), digest(f))));
        self.seen = Seen { files: seen };
    }

    /// Waits until a watched file has contents the last reload did not see, and names the
    /// files that changed.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        loop {
            match self.events.recv().await {
                Some(event) if self.relevant(&event) => {}
                Some(_) => continue,
                // The watcher thread is gone: nothing more will come.
                None => return std::future::pending().await,
            }
            // Debounce: wait for a quiet moment, then compare contents.
            while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, self.events.recv()).await {}
            let changed = self.seen.changed();
            if !changed.is_empty() {
                return changed.into_iter().map(Path::to_path_buf).collect();
            }
        }
    }

    /// Events that may change a watched file: not reads (our own digests open the files),
    /// and only for a watched name or a Kubernetes atomic-writer entry (`..data`, `..2024_…`).
    fn relevant(&self, event: &notify::Result<Event>) -> bool {
        let event = match event {
            Ok(e) => e,
            // A lost event (queue overflow) may have been a change.
            Err(_) => return true,
        };
        if let EventKind::Access(kind) = event.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return false;
        }
        event.paths.is_empty()
            || event.paths.iter().any(|p| {
                p.file_name().is_some_and(|n| {
                    self.names.contains(n) || n.to_string_lossy().starts_with("..")
                })
            })
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher_on(dir: &Path, files: &[&str]) -> (ConfigWatcher, PathBuf, Vec<PathBuf>) {
        let config = dir.join("config.toml");
        let files: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let mut w = ConfigWatcher::new().expect("inotify is available on Linux");
        w.watch(&config, digest(&config), &files);
        (w, config, files)
    }

    async fn next_change(w: &mut ConfigWatcher) -> Vec<PathBuf> {
        tokio::time::timeout(Duration::from_secs(20), w.changed())
            .await
            .expect("a change is reported")
    }

    #[tokio::test]
    async fn a_config_replaced_by_rename_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "a = 1").unwrap();
        let (mut w, config, _) = watcher_on(dir.path(), &[]);
        // What editors do: write a new file, rename it over the old one.
        std::fs::write(dir.path().join(".config.toml.swp"), "a = 2").unwrap();
        std::fs::rename(dir.path().join(".config.toml.swp"), &config).unwrap();
        assert_eq!(next_change(&mut w).await, vec![config]);
    }

    #[tokio::test]
    async fn a_kubernetes_data_symlink_swap_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The layout of a mounted ConfigMap: config.toml -> ..data/config.toml,
        // ..data -> ..v1; an update writes ..v2, then renames a new ..data link over the old.
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/config.toml"), "a = 1").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.toml", d.join("config.toml")).unwrap();
        let (mut w, config, _) = watcher_on(d, &[]);
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/config.toml"), "a = 2").unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..v1")).unwrap();
        assert_eq!(next_change(&mut w).await, vec![config]);
    }

    #[tokio::test]
    async fn a_named_file_written_in_place_is_a_change_and_only_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "a = 1").unwrap();
        std::fs::write(dir.path().join("token"), "t1").unwrap();
        let (mut w, _, files) = watcher_on(dir.path(), &["token"]);
        std::fs::write(&files[0], "t2").unwrap();
        assert_eq!(next_change(&mut w).await, files);
    }

    #[tokio::test]
    async fn same_bytes_reads_and_unrelated_files_are_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "a = 1").unwrap();
        let (mut w, config, _) = watcher_on(dir.path(), &[]);
        std::fs::write(&config, "a = 1").unwrap();
        assert!(w.seen.changed().is_empty());
        let event = |kind, name: &str| Ok(Event::new(kind).add_path(dir.path().join(name)));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let write = EventKind::Modify(notify::event::ModifyKind::Any);
        assert!(!w.relevant(&event(open, "config.toml")));
        assert!(!w.relevant(&event(write, "other.toml")));
        assert!(w.relevant(&event(write, "config.toml")));
        assert!(w.relevant(&event(write, "..data")));
        // Once a reload has seen new contents, they are not a change any more.
        std::fs::write(&config, "a = 2").unwrap();
        assert_eq!(w.seen.changed(), vec![config.as_path()]);
        w.watch(&config, digest(&config), &[]);
        assert!(w.seen.changed().is_empty());
    }

    #[tokio::test]
    async fn a_missing_file_that_appears_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "a = 1").unwrap();
        let (mut w, _, files) = watcher_on(dir.path(), &["new.key"]);
        std::fs::write(&files[0], "k").unwrap();
        assert_eq!(next_change(&mut w).await, files);
    }
}
