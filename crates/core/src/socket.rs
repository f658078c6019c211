//! The plugin's unix socket: where it lives, and the rules for owning it.
//!
//! A stale socket left by a crash is replaced; a live one (another plugin answers) or a path
//! that is not a socket is an error, never deleted. The socket is created 0600, its missing
//! parent directories 0700 (or `[server] socket_mode` / `socket_group` when the socket is
//! shared with a group), and a world-writable directory without the sticky bit is refused
//! (anyone could swap the socket). `@name` is a Linux abstract socket: no file at all.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::net::UnixListener;

/// Why the socket could not be set up.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("socket address {0:?}: {1}")]
    BadAddress(String, &'static str),
    #[error("{0}: exists and is not a socket; refusing to delete it")]
    NotASocket(PathBuf),
    #[error("{0}: another process is serving this socket")]
    InUse(PathBuf),
    #[error("{0}: directory is writable by everyone and has no sticky bit")]
    UnsafeDirectory(PathBuf),
    #[error(
        "{path}: permission denied: the plugin runs as uid {uid} (gid {gid}), which needs write \
         and search access to {dir} (chown it to that user, or run the plugin as its owner)"
    )]
    Denied {
        path: String,
        dir: String,
        uid: u32,
        gid: u32,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SocketError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            // SAFETY: getuid/getgid only read the process's ids; they cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            return SocketError::Denied {
                path: path.display().to_string(),
                dir: dir.display().to_string(),
                uid,
                gid,
            };
        }
        SocketError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Where the plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    Path(PathBuf),
    /// A Linux abstract socket name (without the leading `@`).
    Abstract(String),
}

impl SocketSpec {
    /// Accepts `/path`, `unix:///path`, `@name` and `unix:///@name` (as EncryptionConfiguration
    /// writes them).
    pub fn parse(value: &str) -> Result<Self, SocketError> {
        let bad = |why| SocketError::BadAddress(value.to_string(), why);
        let rest = match value.strip_prefix("unix://") {
            Some(rest) => rest
                .strip_prefix("/@")
                .map(|n| format!("@{n}"))
                .unwrap_or_else(|| rest.to_string()),
            None => value.to_string(),
        };
        if let Some(name) = rest.strip_prefix('@') {
            if name.is_empty() || name.len() > 107 {
                return Err(bad("abstract socket name must be 1-107 bytes"));
            }
            return Ok(SocketSpec::Abstract(name.to_string()));
        }
        if rest.is_empty() {
            return Err(bad("empty path"));
        }
        if rest.len() > 107 {
            return Err(bad("path longer than 107 bytes, the unix socket limit"));
        }
        Ok(SocketSpec::Path(PathBuf::from(rest)))
    }
}

impl std::fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketSpec::Path(p) => write!(f, "{}", p.display()),
            SocketSpec::Abstract(n) => write!(f, "@{n}"),
        }
    }
}

/// A listening socket, and what is needed to remove exactly our own file at shutdown.
#[derive(Debug)]
pub struct BoundSocket {
    listener: UnixListener,
    guard: SocketGuard,
}

/// Identifies the socket file we created.
#[derive(Debug)]
pub struct SocketGuard {
    spec: SocketSpec,
    identity: Option<(u64, u64)>,
}

impl BoundSocket {
    pub fn spec(&self) -> &SocketSpec {
        &self.guard.spec
    }

    pub fn into_parts(self) -> (UnixListener, SocketGuard) {
        (self.listener, self.guard)
    }
}

impl SocketGuard {
    pub fn spec(&self) -> &SocketSpec {
        &self.spec
    }

    /// Removes the socket file if it is still the one we created.
    pub fn cleanup(&self) {
        if let (SocketSpec::Path(path), Some(id)) = (&self.spec, self.identity)
            && let Ok(meta) = fs::symlink_metadata(path)
            && (meta.dev(), meta.ino()) == id
        {
            let _ = fs::remove_file(path);
        }
    }
}

/// Who may open the socket file (a path socket; an abstract socket has no file, and only the
/// peer check protects it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// Permission bits of the socket file (`[server] socket_mode`): 0600 by default; 0660 with
    /// `group` to share it with apiservers of that group.
    pub mode: u32,
    /// Group of the socket file (`[server] socket_group`), and of the directories made for it.
    pub group: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        SocketAccess {
            mode: 0o600,
            group: None,
        }
    }
}

/// Binds the socket following the rules above, 0600. Must run inside a tokio runtime.
pub fn bind(spec: &SocketSpec) -> Result<BoundSocket, SocketError> {
    bind_with(spec, SocketAccess::default())
}

/// Binds the socket with the given file mode and group. Must run inside a tokio runtime.
pub fn bind_with(spec: &SocketSpec, access: SocketAccess) -> Result<BoundSocket, SocketError> {
    match spec {
        SocketSpec::Abstract(name) => bind_abstract(name).map(|listener| BoundSocket {
            listener,
            guard: SocketGuard {
                spec: spec.clone(),
                identity: None,
            },
        }),
        SocketSpec::Path(path) => bind_path(path, access).map(|(listener, identity)| BoundSocket {
            listener,
            guard: SocketGuard {
                spec: spec.clone(),
                identity: Some(identity),
            },
        }),
    }
}

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str) -> Result<UnixListener, SocketError> {
    use std::os::linux::net::SocketAddrExt;
    let shown = format!("@{name}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(io_err(Path::new(&shown)))?;
    let std_listener =
        std::os::unix::net::UnixListener::bind_addr(&addr).map_err(io_err(Path::new(&shown)))?;
    std_listener
        .set_nonblocking(true)
        .map_err(io_err(Path::new(&shown)))?;
    UnixListener::from_std(std_listener).map_err(io_err(Path::new(&shown)))
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(name: &str) -> Result<UnixListener, SocketError> {
    Err(SocketError::BadAddress(
        format!("@{name}"),
        "abstract sockets exist on Linux only",
    ))
}

fn bind_path(path: &Path, access: SocketAccess) -> Result<(UnixListener, (u64, u64)), SocketError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        // A group that shares the socket needs to search the directory too.
        let dir_mode = if access.group.is_some() { 0o750 } else { 0o700 };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(&dir)
            .map_err(io_err(&dir))?;
        if let Some(gid) = access.group {
            std::os::unix::fs::chown(&dir, None, Some(gid)).map_err(io_err(&dir))?;
        }
    }
    let dir_mode = fs::metadata(&dir)
        .map_err(io_err(&dir))?
        .permissions()
        .mode();
    if dir_mode & 0o002 != 0 && dir_mode & 0o1000 == 0 {
        return Err(SocketError::UnsafeDirectory(dir));
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            tracing::info!(socket = %path.display(), "removing stale socket");
            fs::remove_file(path).map_err(io_err(path))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    // The socket is created with the umask's mode: give it no more than `mode` from its
    // first instant (and no group access before its group is set).
    let first = if access.group.is_some() {
        access.mode & 0o700
    } else {
        access.mode
    };
    // SAFETY: umask only swaps the process file-mode mask; it cannot fail.
    let old = unsafe { libc::umask(!first & 0o777) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(io_err(path))?;
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err(path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(access.mode)).map_err(io_err(path))?;
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    Ok((listener, (meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_address_forms_of_encryption_configuration() {
        assert_eq!(
            SocketSpec::parse("/tmp/k.sock").unwrap(),
            SocketSpec::Path("/tmp/k.sock".into())
        );
        assert_eq!(
            SocketSpec::parse("unix:///var/run/kmsplugin/socket.sock").unwrap(),
            SocketSpec::Path("/var/run/kmsplugin/socket.sock".into())
        );
        assert_eq!(
            SocketSpec::parse("@kms").unwrap(),
            SocketSpec::Abstract("kms".into())
        );
        assert_eq!(
            SocketSpec::parse("unix:///@kms").unwrap(),
            SocketSpec::Abstract("kms".into())
        );
        assert!(SocketSpec::parse("").is_err());
        assert!(SocketSpec::parse("@").is_err());
        assert!(SocketSpec::parse(&format!("/{}", "a".repeat(120))).is_err());
    }

    #[tokio::test]
    async fn creates_0600_socket_and_parent_and_cleans_up_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/kms/socket.sock");
        let bound = bind(&SocketSpec::Path(path.clone())).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let (_listener, guard) = bound.into_parts();
        guard.cleanup();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn replaces_stale_socket_but_not_live_one_or_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // Stale: a socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind(&SocketSpec::Path(path.clone())).unwrap();
        // Live: a second bind must not steal it.
        assert!(matches!(
            bind(&SocketSpec::Path(path.clone())),
            Err(SocketError::InUse(_))
        ));
        drop(live);
        let file = dir.path().join("not-a-socket");
        fs::write(&file, b"keep me").unwrap();
        assert!(matches!(
            bind(&SocketSpec::Path(file.clone())),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
    }

    #[tokio::test]
    async fn refuses_world_writable_directory_without_sticky_bit() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            bind(&SocketSpec::Path(open.join("s.sock"))),
            Err(SocketError::UnsafeDirectory(_))
        ));
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(bind(&SocketSpec::Path(open.join("s.sock"))).is_ok());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn binds_abstract_sockets() {
        let name = format!("polykms-test-{}", std::process::id());
        let bound = bind(&SocketSpec::Abstract(name.clone())).unwrap();
        assert_eq!(bound.spec().to_string(), format!("@{name}"));
    }
}
