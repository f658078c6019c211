//! `[server] sandbox`: `polykms serve` confines itself with Landlock to the files its config
//! names (key, CA, PIN, token and credential files, the PKCS#11 module and its files), the
//! config file's directory, the files the cloud SDKs read by environment, the system TLS
//! roots, resolver files and shared libraries, and its socket's directory ([`paths`] says
//! which and why). Reading or writing anything else fails with EACCES, whatever the file
//! permissions say: a compromised backend SDK or PKCS#11 module gets no more than polykms.
//!
//! Landlock confines the thread that asks and the threads it starts afterwards, never threads
//! already running (confining every thread at once needs Landlock ABI 8, Linux 7.0). So the
//! ruleset is applied as soon as the config is loaded, while the process still has one thread:
//! before the log writer and the async runtime start their threads. What start-up then does
//! (build the backends, load the PKCS#11 module, read TLS roots, bind the socket) is what a
//! reload does again, so the set covers it anyway; the only start-up step beyond it, creating
//! a missing socket directory, is done here first.
//!
//! A reload cannot widen a Landlock domain: [`check_reload`] refuses a config whose backends
//! need a path the set computed at start does not cover, naming it, and the running
//! configuration keeps serving until a restart.

mod paths;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, BitFlags, LandlockStatus, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus,
};
use serde::Deserialize;

use crate::config::Config;
pub use paths::Grant;
use paths::Need;

/// The newest Landlock ABI these rules were tested against: rights added later (e.g. the
/// unix-socket connect right of ABI 9) stay unhandled, so allowed, until tested.
const TESTED_ABI: ABI = ABI::V7;

/// `server.sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Confine the process where the kernel has Landlock (a kernel without runs unconfined).
    #[default]
    Enforce,
    /// Run unconfined.
    Off,
}

/// A path beneath which the running process is allowed `grant`.
#[derive(Debug, Clone)]
struct Rule {
    /// Canonical: Landlock rules hold the inode a path resolved to at start.
    path: PathBuf,
    grant: Grant,
    /// For a rule on a file, the file's (device, inode): a file replaced by rename is another
    /// inode, which the rule does not cover.
    file_id: Option<(u64, u64)>,
}

/// The rules in force, once the process is confined.
static CONFINED: OnceLock<Vec<Rule>> = OnceLock::new();

/// Why the sandbox could not be set up; each names the setting to change.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "server.sandbox_read_paths: {path}: {source} (name an existing file or directory, or \
         remove it)"
    )]
    ReadPath {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "server.socket: creating the socket directory {path} before the sandbox is applied: \
         {source}"
    )]
    SocketDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "server.sandbox: Landlock refused the ruleset: {0} (set [server] sandbox = \"off\" to \
         run unconfined)"
    )]
    Landlock(String),
    #[error(
        "the sandbox ([server] sandbox = \"enforce\") confined this process at start to the \
         files its config named then, and the new configuration needs {0}; the running \
         configuration stays: restart polykms to pick it up"
    )]
    OutsideSandbox(String),
}

/// What [`confine`] did, logged once logging is set up.
#[derive(Debug)]
pub struct Report {
    outcome: Outcome,
    /// Threads running when the rules were applied: any besides this one is not confined.
    threads: usize,
    /// Needed paths that did not exist at start, so no rule covers them.
    missing: Vec<Need>,
    rules: usize,
}

#[derive(Debug)]
enum Outcome {
    Off,
    NoLandlock(&'static str),
    Enforced { abi: i32, full: bool },
}

impl Report {
    pub fn log(&self) {
        match self.outcome {
            Outcome::Off => {
                tracing::info!(
                    "sandbox off ([server] sandbox = \"off\"): not confined with Landlock"
                )
            }
            Outcome::NoLandlock(why) => tracing::info!(
                reason = why,
                "sandbox: this kernel has no Landlock; running unconfined (no_new_privs is set)"
            ),
            Outcome::Enforced { abi, full } => {
                tracing::info!(
                    landlock_abi = abi,
                    fully_enforced = full,
                    rules = self.rules,
                    "sandbox enforced: Landlock confines reads and writes to the files the config names"
                )
            }
        }
        if self.threads > 1 {
            tracing::warn!(
                threads = self.threads,
                "sandbox: threads started before the Landlock rules were applied are not confined"
            );
        }
        for need in &self.missing {
            tracing::warn!(path = %need.path.display(), needed_for = %need.why,
                "sandbox: this path did not exist at start, so it stays unreadable until a restart");
        }
    }
}

/// Confines the process as `config` (loaded from `config_path`) says. Call it while the
/// process has a single thread.
pub fn confine(config: &Config, config_path: &Path) -> Result<Report, SandboxError> {
    let mut report = Report {
        outcome: Outcome::Off,
        threads: thread_count(),
        missing: Vec::new(),
        rules: 0,
    };
    if config.server.sandbox == SandboxMode::Off {
        return Ok(report);
    }
    for p in &config.server.sandbox_read_paths {
        std::fs::metadata(p).map_err(|source| SandboxError::ReadPath {
            path: p.clone(),
            source,
        })?;
    }
    create_socket_dir(config)?;
    let needs = paths::for_start(config, config_path, &|name| std::env::var_os(name));
    let mut rules: Vec<(Rule, PathFd)> = Vec::new();
    for need in needs {
        let fd = match PathFd::new(&need.path) {
            Ok(fd) => fd,
            Err(_) => {
                if !need.optional {
                    report.missing.push(need);
                }
                continue;
            }
        };
        let path = std::fs::canonicalize(&need.path).unwrap_or(need.path);
        rules.push((
            Rule {
                file_id: file_id(&path),
                path,
                grant: need.grant,
            },
            fd,
        ));
    }
    // A missing path beneath a directory some rule grants is covered once it appears (rules
    // hold for everything beneath their directory): e.g. the key directory that
    // `generate_if_missing` creates inside the config directory.
    report.missing.retain(|need| {
        !rules
            .iter()
            .any(|(rule, _)| rule.path.is_dir() && need.path.starts_with(&rule.path))
    });
    let landlock_err = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(TESTED_ABI))
        .map_err(landlock_err)?
        .create()
        .map_err(landlock_err)?;
    for (rule, fd) in &rules {
        let access = landlock_access(rule.grant, rule.path.is_dir());
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(landlock_err)?;
    }
    let status = ruleset.restrict_self().map_err(landlock_err)?;
    report.rules = rules.len();
    report.outcome = match (status.ruleset, status.landlock) {
        (RulesetStatus::NotEnforced, LandlockStatus::NotEnabled) => {
            Outcome::NoLandlock("Landlock is built in but not enabled (lsm= boot parameter)")
        }
        (RulesetStatus::NotEnforced, _) => Outcome::NoLandlock("Landlock is not in this kernel"),
        (s, landlock) => {
            let abi = match landlock {
                LandlockStatus::Available {
                    effective_abi,
                    kernel_abi,
                } => kernel_abi.unwrap_or(effective_abi as i32),
                _ => 0,
            };
            let _ = CONFINED.set(rules.into_iter().map(|(r, _)| r).collect());
            Outcome::Enforced {
                abi,
                full: s == RulesetStatus::FullyEnforced,
            }
        }
    };
    Ok(report)
}

/// Refuses a reloaded config whose backends need a path outside the rules applied at start.
/// Passes when the process is not confined.
pub fn check_reload(next: &Config) -> Result<(), SandboxError> {
    let Some(rules) = CONFINED.get() else {
        return Ok(());
    };
    let needs = paths::for_backends(next, &|name| std::env::var_os(name));
    let outside = uncovered(rules, &needs);
    if outside.is_empty() {
        return Ok(());
    }
    Err(SandboxError::OutsideSandbox(
        outside
            .iter()
            .map(|n| format!("{} ({})", n.path.display(), n.why))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// The needs no rule covers (an optional one only when it exists).
fn uncovered<'a>(rules: &[Rule], needs: &'a [Need]) -> Vec<&'a Need> {
    needs
        .iter()
        .filter(|n| !n.optional || n.path.exists())
        .filter(|n| {
            let path = std::fs::canonicalize(&n.path).unwrap_or_else(|_| n.path.clone());
            !rules.iter().any(|r| {
                path.starts_with(&r.path)
                    && r.grant.covers(n.grant)
                    && (r.file_id.is_none() || r.file_id == file_id(&path))
            })
        })
        .collect()
}

fn landlock_access(grant: Grant, is_dir: bool) -> BitFlags<AccessFs> {
    let mut a = BitFlags::EMPTY;
    if grant.read {
        a |= AccessFs::ReadFile | AccessFs::ReadDir;
    }
    if grant.exec {
        a |= AccessFs::Execute;
    }
    if grant.write {
        a |= AccessFs::WriteFile
            | AccessFs::Truncate
            | AccessFs::MakeReg
            | AccessFs::RemoveFile
            | AccessFs::MakeDir
            | AccessFs::RemoveDir
            | AccessFs::Refer;
    }
    if grant.socket {
        a |= AccessFs::MakeSock | AccessFs::RemoveFile;
    }
    // A rule on a file takes only the rights a file has.
    let valid = if is_dir {
        AccessFs::from_all(TESTED_ABI)
    } else {
        AccessFs::from_file(TESTED_ABI)
    };
    a & valid
}

/// The socket's directory must exist for a rule to name it: made here as core's bind would
/// (0700, or 0750 and the socket group's when the socket is shared).
fn create_socket_dir(config: &Config) -> Result<(), SandboxError> {
    use std::os::unix::fs::DirBuilderExt;
    let Ok(polykms_core::SocketSpec::Path(socket)) =
        polykms_core::SocketSpec::parse(&config.server.socket)
    else {
        return Ok(());
    };
    let dir = paths::absolute(&socket);
    let Some(dir) = dir.parent().filter(|d| !d.exists()) else {
        return Ok(());
    };
    let err = |source| SandboxError::SocketDir {
        path: dir.to_path_buf(),
        source,
    };
    let group = config.server.socket_access().ok().and_then(|a| a.group);
    let mode = if group.is_some() { 0o750 } else { 0o700 };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(err)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(dir, None, Some(gid)).map_err(err)?;
    }
    Ok(())
}

impl From<SandboxError> for crate::exit::Failure {
    fn from(e: SandboxError) -> Self {
        use crate::exit::Failure;
        match e {
            SandboxError::ReadPath { .. } | SandboxError::OutsideSandbox(_) => {
                Failure::Config(e.to_string())
            }
            SandboxError::SocketDir { .. } | SandboxError::Landlock(_) => {
                Failure::Os(anyhow::Error::new(e))
            }
        }
    }
}

/// (device, inode) of a path that is not a directory.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    (!meta.is_dir()).then(|| (meta.dev(), meta.ino()))
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

#[cfg(test)]
mod tests;
