//! Which paths the sandbox allows, and how: computed from the config, the process environment
//! and a fixed list of system files, the same way at start and for every reload.
//!
//! A file the config names is allowed through its directory, not alone: a mounted Secret or
//! ConfigMap replaces its files by swapping the `..data` symlink (a new inode, which a rule on
//! the old file would not cover), and a rotation adds a key file next to the current one. A
//! file whose directory is `/` or a top-level directory (`/etc`, `/tmp`) is allowed alone
//! instead, so that naming `/etc/k.key` does not open all of `/etc`.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::backends::BackendSettings;
use crate::config::Config;

/// What a rule lets the process do beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub read: bool,
    pub exec: bool,
    /// Create, write, truncate, rename and remove files and directories.
    pub write: bool,
    /// Create and remove unix sockets.
    pub socket: bool,
}

impl Grant {
    pub const READ: Grant = Grant {
        read: true,
        exec: false,
        write: false,
        socket: false,
    };
    pub const READ_EXEC: Grant = Grant {
        exec: true,
        ..Grant::READ
    };
    pub const READ_WRITE: Grant = Grant {
        write: true,
        ..Grant::READ
    };
    pub const SOCKET: Grant = Grant {
        read: false,
        exec: false,
        write: false,
        socket: true,
    };

    /// Whether `self` allows everything `other` does.
    pub fn covers(self, other: Grant) -> bool {
        (self.read || !other.read)
            && (self.exec || !other.exec)
            && (self.write || !other.write)
            && (self.socket || !other.socket)
    }
}

/// One path the process needs, why, and whether it may be absent (a file an SDK reads only
/// when it exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub path: PathBuf,
    pub grant: Grant,
    pub why: String,
    pub optional: bool,
}

/// The process environment, as a function so that tests pass a snapshot.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Certificate stores of the common distributions (rustls-native-certs, OpenSSL in PKCS#11
/// modules) and the resolver's files (glibc's getaddrinfo).
const SYSTEM_READ: [&str; 18] = [
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    // Where /etc/ssl/certs links point for locally added CAs (Debian), the trust sources
    // (Fedora, RHEL) and the extracted bundles (SUSE).
    "/usr/local/share/ca-certificates",
    "/usr/share/pki",
    "/var/lib/ca-certificates",
    "/usr/lib/ssl",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    // The dynamic loader's index, for a PKCS#11 module's dependencies.
    "/etc/ld.so.cache",
    // The runtime and glibc read the CPU count, the process's own limits and cgroup.
    "/sys/devices/system/cpu",
    "/proc/self",
    "/dev/urandom",
];

/// Shared libraries: a dlopen'ed PKCS#11 module and what it links.
const SYSTEM_LIBRARIES: [&str; 4] = ["/lib", "/lib64", "/usr/lib", "/usr/lib64"];

/// Everything `serve` needs with `config`, loaded from `config_path`.
pub fn for_start(config: &Config, config_path: &Path, env: Env) -> Vec<Need> {
    let mut out = Vec::new();
    for p in SYSTEM_READ {
        out.push(optional(
            p,
            Grant::READ,
            "system TLS roots, resolver and runtime files",
        ));
    }
    for p in SYSTEM_LIBRARIES {
        out.push(optional(p, Grant::READ_EXEC, "shared libraries"));
    }
    out.push(optional("/dev/null", Grant::READ_WRITE, "/dev/null"));
    if let Some(file) = env("SSL_CERT_FILE") {
        named_file(
            &mut out,
            Path::new(&file),
            Grant::READ,
            "SSL_CERT_FILE",
            true,
        );
    }
    if let Some(dirs) = env("SSL_CERT_DIR") {
        for dir in std::env::split_paths(&dirs) {
            out.push(optional(dir, Grant::READ, "SSL_CERT_DIR"));
        }
    }
    named_file(
        &mut out,
        config_path,
        Grant::READ,
        "the config file (reload and watch_config)",
        false,
    );
    let server = &config.server;
    if let Ok(polykms_core::SocketSpec::Path(socket)) =
        polykms_core::SocketSpec::parse(&server.socket)
    {
        let dir = parent(&absolute(&socket));
        out.push(required(
            dir,
            Grant::SOCKET,
            "server.socket (created and removed there)",
        ));
    }
    if server
        .socket_group
        .as_ref()
        .is_some_and(|g| g.parse::<u32>().is_err())
    {
        out.push(required(
            "/etc/group",
            Grant::READ,
            "server.socket_group names a group",
        ));
    }
    for p in &server.sandbox_read_paths {
        out.push(required(p, Grant::READ_EXEC, "server.sandbox_read_paths"));
    }
    out.extend(for_backends(config, env));
    out
}

/// What the backends of `config` need: checked again for every reload.
pub fn for_backends(config: &Config, env: Env) -> Vec<Need> {
    let mut out = Vec::new();
    let home = env("HOME").map(PathBuf::from);
    let mut kinds: Vec<&str> = Vec::new();
    for (i, b) in config.backends.iter().enumerate() {
        let who = format!("backends[{i}] ({})", b.name);
        // Paths are resolved already; this returns them, per backend.
        let mut settings = b.settings.clone();
        for file in settings.resolve_paths(Path::new("")) {
            named_file(
                &mut out,
                &file,
                Grant::READ,
                &format!("a file {who} names"),
                false,
            );
        }
        backend_specific(&mut out, &b.settings, &who, env);
        if !kinds.contains(&b.settings.kind()) {
            kinds.push(b.settings.kind());
        }
    }
    // Files each cloud SDK reads by environment or in the home directory.
    let sdk_files: &[(&str, &[&str], &[&str])] = &[
        (
            "aws",
            &[
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_SHARED_CREDENTIALS_FILE",
                "AWS_CONFIG_FILE",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            ],
            &[".aws"],
        ),
        (
            "gcp",
            &["GOOGLE_APPLICATION_CREDENTIALS"],
            &[".config/gcloud"],
        ),
        (
            "azure",
            &[
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_CLIENT_CERTIFICATE_PATH",
            ],
            &[],
        ),
    ];
    for (kind, vars, home_dirs) in sdk_files {
        if !kinds.contains(kind) {
            continue;
        }
        for var in *vars {
            if let Some(file) = env(var) {
                let file = PathBuf::from(file);
                named_file(&mut out, &file, Grant::READ, var, true);
                if *var == "GOOGLE_APPLICATION_CREDENTIALS"
                    && let Some(source) = credential_source_file(&file)
                {
                    named_file(
                        &mut out,
                        &source,
                        Grant::READ,
                        "credential_source.file",
                        true,
                    );
                }
            }
        }
        for dir in *home_dirs {
            if let Some(home) = &home {
                out.push(optional(
                    home.join(dir),
                    Grant::READ,
                    "the SDK's home directory files",
                ));
            }
        }
    }
    out
}

#[allow(unused_variables)]
fn backend_specific(out: &mut Vec<Need>, settings: &BackendSettings, who: &str, env: Env) {
    match settings {
        BackendSettings::Local(c) => {
            // `generate_if_missing` writes the first key file (and its directories) at start.
            if let Some(first) = c.key_files.first()
                && c.generate_if_missing
                && !first.exists()
            {
                let dir = nearest_existing(&parent(&absolute(first)));
                out.push(required(
                    dir,
                    Grant::READ_WRITE,
                    &format!("{who} generate_if_missing"),
                ));
            }
        }
        #[cfg(feature = "pkcs11")]
        BackendSettings::Pkcs11(c) => {
            if c.module.is_absolute() {
                named_file(
                    out,
                    &c.module,
                    Grant::READ_EXEC,
                    &format!("{who} module"),
                    false,
                );
            }
            softhsm(out, &c.module, env);
        }
        // Unreachable in a local-only build, where Local is the only variant.
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// SoftHSM2 reads its config file (SOFTHSM2_CONF) and reads and writes its token directory
/// (object and lock files).
#[cfg(feature = "pkcs11")]
fn softhsm(out: &mut Vec<Need>, module: &Path, env: Env) {
    let named = module
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("softhsm"));
    let confs: Vec<PathBuf> = match env("SOFTHSM2_CONF") {
        Some(conf) => vec![conf.into()],
        None if named => vec![
            "/etc/softhsm/softhsm2.conf".into(),
            "/etc/softhsm2.conf".into(),
        ],
        None => return,
    };
    for conf in confs {
        named_file(out, &conf, Grant::READ, "SOFTHSM2_CONF", true);
        let dir = std::fs::read_to_string(&conf)
            .ok()
            .and_then(|text| softhsm_token_dir(&text))
            .unwrap_or_else(|| "/var/lib/softhsm/tokens".into());
        out.push(optional(
            dir,
            Grant::READ_WRITE,
            "SoftHSM2's token directory",
        ));
    }
}

/// `directories.tokendir` of a softhsm2.conf.
#[cfg(feature = "pkcs11")]
pub fn softhsm_token_dir(conf: &str) -> Option<PathBuf> {
    conf.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "directories.tokendir" && !line.trim_start().starts_with('#'))
            .then(|| PathBuf::from(value.trim()))
    })
}

/// The file an external-account ADC file (workload identity federation) reads its subject
/// token from.
fn credential_source_file(adc: &Path) -> Option<PathBuf> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(adc).ok()?);
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let file = json.pointer("/credential_source/file")?.as_str()?;
    Some(PathBuf::from(file))
}

/// A named file: its directory (or itself, see the module doc), and the same for the file a
/// symlink points to.
fn named_file(out: &mut Vec<Need>, file: &Path, grant: Grant, why: &str, optional: bool) {
    let file = absolute(file);
    let real = std::fs::canonicalize(&file).ok().filter(|r| *r != file);
    for f in std::iter::once(file).chain(real) {
        out.push(Need {
            path: scope_of(&f),
            grant,
            why: why.to_string(),
            optional,
        });
    }
}

/// The directory a named file is allowed through: its own, unless that is `/` or directly
/// beneath it.
pub fn scope_of(file: &Path) -> PathBuf {
    let dir = parent(file);
    let depth = dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    if depth >= 2 { dir } else { file.to_path_buf() }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("/"),
    }
}

fn nearest_existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn optional(path: impl Into<PathBuf>, grant: Grant, why: &str) -> Need {
    Need {
        path: path.into(),
        grant,
        why: why.into(),
        optional: true,
    }
}

fn required(path: impl Into<PathBuf>, grant: Grant, why: &str) -> Need {
    Need {
        optional: false,
        ..optional(path, grant, why)
    }
}
