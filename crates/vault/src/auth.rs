//! Getting a Vault token: reading credentials (files re-read on each login) and logging in.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use polykms_backend::{BackendError, SensitiveString};
use vaultrs::api::AuthInfo;
use vaultrs::client::Client as _;

use crate::client::{HttpSetup, read_file};
use crate::config::AuthConfig;
use crate::error::classify;

/// A token and what Vault said about its lifetime.
#[derive(Debug)]
pub(crate) struct Grant {
    pub token: SensitiveString,
    /// Lifetime at issue or last renewal; `None` for tokens that never expire (e.g. root).
    pub ttl: Option<Duration>,
    /// Lifetime when first issued: a renewal granting much less means max_ttl is near.
    pub initial_ttl: Option<Duration>,
    pub renewable: bool,
    /// When `ttl` started counting (monotonic, for scheduling).
    pub since: Instant,
    /// When `ttl` started counting (wall clock, for `credential_expiry`).
    pub since_wall: SystemTime,
    /// For file tokens: the file's stamp when read, to notice changes.
    pub source_stamp: Option<FileStamp>,
}

impl Grant {
    fn new(token: SensitiveString, ttl_secs: u64, renewable: bool) -> Self {
        let ttl = (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs));
        Grant {
            token,
            ttl,
            initial_ttl: ttl,
            renewable,
            since: Instant::now(),
            since_wall: SystemTime::now(),
            source_stamp: None,
        }
    }

    fn from_auth(info: AuthInfo) -> Self {
        Grant::new(
            SensitiveString::new(info.client_token),
            info.lease_duration,
            info.renewable,
        )
    }

    /// Applies a successful renewal.
    pub fn renewed(&mut self, lease_secs: u64) {
        self.ttl = (lease_secs > 0).then(|| Duration::from_secs(lease_secs));
        self.since = Instant::now();
        self.since_wall = SystemTime::now();
    }

    /// Wall-clock expiry, if the token expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.ttl.map(|ttl| self.since_wall + ttl)
    }

    /// Whether the token is expired or about to be (within `margin`).
    pub fn expired_within(&self, margin: Duration) -> bool {
        self.ttl
            .is_some_and(|ttl| self.since.elapsed() + margin >= ttl)
    }
}

/// Modification time and length of a file: enough to notice a rewritten token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

/// How this backend obtains tokens; built from `AuthConfig`.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    config: AuthConfig,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        Authenticator { config }
    }

    /// Short name of the method.
    pub fn method(&self) -> &'static str {
        self.config.method_name()
    }

    /// The token file, for the token method with `token_file`.
    pub fn token_file(&self) -> Option<&Path> {
        match &self.config {
            AuthConfig::Token {
                token_file: Some(path),
                ..
            } => Some(path),
            _ => None,
        }
    }

    /// Reads every credential once, so a missing or empty file is a config error at startup.
    pub fn preflight(&self) -> Result<(), BackendError> {
        match &self.config {
            AuthConfig::Token { .. } => self.static_token().map(drop),
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => {
                read_secret("auth.role_id_file", role_id_file)?;
                read_secret("auth.secret_id_file", secret_id_file).map(drop)
            }
            AuthConfig::Kubernetes { token_file, .. } | AuthConfig::Jwt { token_file, .. } => {
                read_secret("auth.token_file", token_file).map(drop)
            }
            AuthConfig::Cert { .. } => Ok(()),
        }
    }

    /// Logs in (or, for the token method, re-reads the token and looks it up).
    pub async fn login(&self, setup: &HttpSetup) -> Result<Grant, BackendError> {
        let anonymous = setup.client(None);
        let info = match &self.config {
            AuthConfig::Token { .. } => return self.look_up_static_token(setup).await,
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role_id = read_secret("auth.role_id_file", role_id_file)?;
                let secret_id = read_secret("auth.secret_id_file", secret_id_file)?;
                vaultrs::auth::approle::login(
                    &anonymous,
                    mount,
                    role_id.expose(),
                    secret_id.expose(),
                )
                .await
                .map_err(|e| classify("approle login", &e))?
            }
            AuthConfig::Kubernetes {
                role,
                token_file,
                mount,
            } => {
                let jwt = read_secret("auth.token_file", token_file)?;
                vaultrs::auth::kubernetes::login(&anonymous, mount, role, jwt.expose())
                    .await
                    .map_err(|e| classify("kubernetes login", &e))?
            }
            AuthConfig::Jwt {
                role,
                token_file,
                mount,
            } => {
                let jwt = read_secret("auth.token_file", token_file)?;
                vaultrs::auth::oidc::login(&anonymous, mount, jwt.expose(), Some(role.clone()))
                    .await
                    .map_err(|e| classify("jwt login", &e))?
            }
            AuthConfig::Cert { mount } => vaultrs::auth::cert::login(&anonymous, mount, "")
                .await
                .map_err(|e| classify("cert login", &e))?,
        };
        let grant = Grant::from_auth(info);
        check_header_safe("login answer", &grant.token)?;
        Ok(grant)
    }

    /// Token method: the token plus its TTL from `lookup-self`.
    async fn look_up_static_token(&self, setup: &HttpSetup) -> Result<Grant, BackendError> {
        let stamp = self.token_file().and_then(FileStamp::of);
        let token = self.static_token()?;
        let looked_up = setup
            .client(Some(&token))
            .lookup()
            .await
            .map_err(|e| classify("token lookup-self", &e))?;
        let renewable = looked_up.renewable.unwrap_or(false);
        let mut grant = Grant::new(token, looked_up.ttl, renewable);
        grant.initial_ttl = (looked_up.creation_ttl > 0)
            .then(|| Duration::from_secs(looked_up.creation_ttl))
            .or(grant.ttl);
        grant.source_stamp = stamp;
        Ok(grant)
    }

    /// The configured token, read now from its file or env var.
    fn static_token(&self) -> Result<SensitiveString, BackendError> {
        let token = match &self.config {
            AuthConfig::Token {
                token_file: Some(path),
                ..
            } => read_secret("auth.token_file", path)?,
            AuthConfig::Token {
                token_env: Some(var),
                ..
            } => {
                let value = std::env::var(var).map_err(|_| {
                    BackendError::config(format!("auth.token_env: ${var} is not set or not UTF-8"))
                })?;
                let token = SensitiveString::new(value.trim());
                if token.is_empty() {
                    return Err(BackendError::config(format!(
                        "auth.token_env: ${var} is empty"
                    )));
                }
                token
            }
            _ => {
                return Err(BackendError::internal(
                    "static_token called for a login method",
                ));
            }
        };
        check_header_safe("auth token", &token)?;
        Ok(token)
    }
}

/// Reads a one-line secret file, trimmed; empty is an error. The error names field and path.
pub(crate) fn read_secret(field: &str, path: &Path) -> Result<SensitiveString, BackendError> {
    let raw = zeroize::Zeroizing::new(read_file(field, path)?);
    let text = std::str::from_utf8(&raw)
        .map_err(|_| BackendError::config(format!("{field} {}: not UTF-8", path.display())))?;
    let value = SensitiveString::new(text.trim());
    if value.is_empty() {
        return Err(BackendError::config(format!(
            "{field} {}: file is empty",
            path.display()
        )));
    }
    Ok(value)
}

/// Tokens go into an HTTP header; vaultrs would panic on characters a header cannot carry.
fn check_header_safe(what: &str, token: &SensitiveString) -> Result<(), BackendError> {
    if token.expose().bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(BackendError::config(format!(
            "{what}: token has characters not allowed in a header"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_trimmed_and_empty_ones_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "  s.abcdef\n").unwrap();
        assert_eq!(
            read_secret("auth.token_file", &p).unwrap().expose(),
            "s.abcdef"
        );
        std::fs::write(&p, "\n").unwrap();
        let err = read_secret("auth.token_file", &p).unwrap_err();
        assert!(err.message().starts_with("auth.token_file"), "{err}");
        assert!(!err.message().contains("s.abcdef"));
        let missing = read_secret("auth.secret_id_file", &dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.kind(), polykms_backend::ErrorKind::Config);
    }

    #[test]
    fn tokens_that_cannot_be_a_header_are_rejected_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "s.ab cd").unwrap();
        let auth = Authenticator::new(AuthConfig::Token {
            token_file: Some(p),
            token_env: None,
        });
        let err = auth.preflight().unwrap_err();
        assert!(!err.message().contains("ab cd"), "{err}");
    }

    #[test]
    fn grant_expiry_follows_ttl() {
        let mut g = Grant::new(SensitiveString::new("t"), 10, true);
        assert!(!g.expired_within(Duration::from_secs(1)));
        assert!(g.expired_within(Duration::from_secs(11)));
        assert!(g.expires_at().is_some());
        g.renewed(0);
        assert!(g.expires_at().is_none());
        assert!(!g.expired_within(Duration::from_secs(1_000_000)));
        assert!(format!("{g:?}").contains("[REDACTED]"));
    }

    #[test]
    fn file_stamp_notices_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "a").unwrap();
        let before = FileStamp::of(&p);
        std::fs::write(&p, "abc").unwrap();
        assert_ne!(before, FileStamp::of(&p));
    }
}
