//! Live reload: on SIGHUP, and when the config file or a file it names changes on disk
//! (`[server] watch_config`). Both go through [`Reloader::reload`]: the same validation,
//! probing, `polykms_config_reloads_total` outcome and log lines; a config that fails keeps
//! the running one.

use std::path::PathBuf;
use std::sync::Arc;

use polykms_core::Plugin;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::exit::Failure;
use crate::serve::{Overrides, keyring};
use crate::watch::{self, ConfigWatcher};

/// What asked for a reload, as logged.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Signal,
    FileChange,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
        }
    }
}

struct Reloader {
    path: PathBuf,
    overrides: Overrides,
    running: Config,
    plugin: Arc<Plugin>,
    watcher: Option<ConfigWatcher>,
}

/// Reloads on SIGHUP and, when `watch_config` is on, on changes on disk, until dropped.
/// `config_digest` is the config file as read at startup.
pub async fn run(
    path: PathBuf,
    overrides: Overrides,
    config_digest: watch::FileDigest,
    running: Config,
    plugin: Arc<Plugin>,
) {
    let mut hup = signal(SignalKind::hangup())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP; reload on signal is off"))
        .ok();
    let watcher = if running.server.watch_config {
        match ConfigWatcher::new() {
            Ok(mut w) => {
                w.watch(&path, config_digest, &running.referenced_files);
                tracing::info!(config = %path.display(), files = running.referenced_files.len(),
                    "watching the config file and the files it names; a change reloads");
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload needs SIGHUP");
                None
            }
        }
    } else {
        None
    };
    let mut reloader = Reloader {
        path,
        overrides,
        running,
        plugin,
        watcher,
    };
    loop {
        let trigger = tokio::select! {
            Some(()) = async { hup.as_mut()?.recv().await } => Trigger::Signal,
            Some(changed) = async { Some(reloader.watcher.as_mut()?.changed().await) } => {
                tracing::info!(changed = ?changed, "watched files changed on disk");
                Trigger::FileChange
            }
            else => return,
        };
        reloader.reload(trigger).await;
    }
}

impl Reloader {
    async fn reload(&mut self, trigger: Trigger) {
        tracing::info!(config = %self.path.display(), trigger = trigger.as_str(), "reloading configuration");
        // Digested before reading, so that a write racing this reload is seen as a change.
        let config_digest = self.watcher.is_some().then(|| watch::digest(&self.path));
        let next = Config::load(&self.path);
        if let Some(w) = &mut self.watcher {
            // Watch what the new file names even when it fails later (a key file it names
            // may appear next); a file that does not parse keeps the running config's files.
            let files = match &next {
                Ok(c) => &c.referenced_files,
                Err(_) => &self.running.referenced_files,
            };
            w.watch(&self.path, config_digest.flatten(), files);
        }
        let outcome = match next {
            Ok(next) => self.apply(next).await,
            Err(e) => {
                self.plugin.metrics().reload(false);
                Err(e.into())
            }
        };
        match outcome {
            Ok(()) => {
                let s = self.plugin.status();
                tracing::info!(key_id = %s.key_id, healthz = %s.healthz, trigger = trigger.as_str(),
                    "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, trigger = trigger.as_str(),
                    "configuration reload rejected; the running configuration stays");
            }
        }
    }

    async fn apply(&mut self, mut next: Config) -> Result<(), Failure> {
        // Compared with what runs: the command line's overrides (--socket) apply to the new
        // file as they did at start, so they are not mistaken for an edit.
        self.overrides.apply(&mut next);
        let changed = self.running.restart_only_changes(&next);
        if !changed.is_empty() {
            tracing::warn!(settings = ?changed,
                "these [server]/[http] changes take effect only after a restart; applying backends and encrypt.with");
        }
        // A Landlock domain cannot widen: a file outside it waits for a restart.
        crate::sandbox::check_reload(&next).map_err(|e| {
            self.plugin.metrics().reload(false);
            Failure::Config(e.to_string())
        })?;
        let ring = keyring(&next, self.plugin.metrics().clone())
            .await
            .inspect_err(|_| self.plugin.metrics().reload(false))?;
        // Counts its own outcome, success or failure.
        self.plugin
            .reload(ring)
            .await
            .map_err(|e| Failure::Config(e.to_string()))?;
        self.plugin
            .set_accept_legacy_multi_wrap(next.decrypt.accept_legacy_multi_wrap);
        // [server] and [http] stay as started; the rest is the new file's.
        let (server, http) = (self.running.server.clone(), self.running.http.clone());
        self.running = Config {
            server,
            http,
            ..next
        };
        Ok(())
    }
}
