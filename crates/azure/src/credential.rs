//! Entra ID credentials: the SDK's for workload identity, managed identity and client
//! secret, and our own for a bearer token kept in a file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::{Error as AzureError, ErrorKind as AzureKind};
use azure_core::http::ClientOptions;
use azure_core::time::{Duration, OffsetDateTime};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use polykms_backend::{BackendError, SensitiveString};

use crate::config::AzureAuth;

/// How long a token read from a file is cached before the file is read again. The SDK
/// refreshes tokens 5 minutes before `expires_on`, so this is 5 min + the re-read period.
const TOKEN_FILE_RECHECK: Duration = Duration::seconds(5 * 60 + 30);

/// Builds the credential for `auth`; `client_options` carries the transport (CA file,
/// timeouts) and the authority host. Unreadable secret files are `Config` errors.
/// The credential the Key Vault client uses, and the token file one when that is it (for
/// its expiry).
#[derive(Debug)]
pub(crate) struct Credentials {
    pub credential: Arc<dyn TokenCredential>,
    pub token_file: Option<Arc<TokenFileCredential>>,
}

impl Credentials {
    fn sdk(credential: Arc<dyn TokenCredential>) -> Self {
        Credentials {
            credential,
            token_file: None,
        }
    }
}

pub(crate) fn build(
    auth: &AzureAuth,
    client_options: ClientOptions,
) -> Result<Credentials, BackendError> {
    let sdk_err = |field: &str, e: AzureError| BackendError::config(format!("auth.{field}: {e}"));
    match auth {
        AzureAuth::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: client_id.clone(),
                tenant_id: tenant_id.clone(),
                token_file_path: token_file.clone(),
            };
            let cred =
                WorkloadIdentityCredential::new(Some(options)).map_err(|e| sdk_err("method", e))?;
            Ok(Credentials::sdk(cred))
        }
        AzureAuth::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options,
            };
            let cred = ManagedIdentityCredential::new(Some(options))
                .map_err(|e| sdk_err("client_id", e))?;
            Ok(Credentials::sdk(cred))
        }
        AzureAuth::ClientSecret {
            tenant_id,
            client_id,
            client_secret_file,
        } => {
            let secret = read_secret_file(client_secret_file)
                .map_err(|why| BackendError::config(format!("auth.client_secret_file: {why}")))?;
            let cred = ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(secret.expose().to_owned()),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| sdk_err("tenant_id", e))?;
            Ok(Credentials::sdk(cred))
        }
        AzureAuth::TokenFile { token_file } => {
            let cred = Arc::new(TokenFileCredential::new(token_file.clone()));
            cred.read()
                .map_err(|why| BackendError::config(format!("auth.token_file: {why}")))?;
            Ok(Credentials {
                credential: cred.clone(),
                token_file: Some(cred),
            })
        }
    }
}

/// Reads a secret file, trimming the trailing newline editors and `echo` add.
fn read_secret_file(path: &Path) -> Result<SensitiveString, String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = SensitiveString::new(raw.trim());
    drop(SensitiveString::new(raw));
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value)
}

/// A bearer token issued elsewhere (a sidecar, a CI job, the test fake), kept in a file that
/// may be replaced at any time. The file is read again at least every 30 s and after every
/// 401, so a rotated token is picked up without a restart.
pub(crate) struct TokenFileCredential {
    path: PathBuf,
    expiry: Mutex<Option<SystemTime>>,
}

impl fmt::Debug for TokenFileCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFileCredential")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TokenFileCredential {
    pub(crate) fn new(path: PathBuf) -> Self {
        TokenFileCredential {
            path,
            expiry: Mutex::new(None),
        }
    }

    /// Expiry (`exp` claim) of the token last read, when it is a JWT.
    pub(crate) fn expiry(&self) -> Option<SystemTime> {
        *self
            .expiry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads and remembers the token; the error text names the file, never the token.
    fn read(&self) -> Result<(SensitiveString, Option<OffsetDateTime>), String> {
        let token = read_secret_file(&self.path)?;
        let exp = jwt_expiry(token.expose());
        *self
            .expiry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = exp.map(SystemTime::from);
        Ok((token, exp))
    }
}

#[async_trait]
impl TokenCredential for TokenFileCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let (token, exp) = self
            .read()
            .map_err(|why| AzureError::with_message(AzureKind::Credential, why))?;
        let recheck = OffsetDateTime::now_utc() + TOKEN_FILE_RECHECK;
        let expires_on = exp.map_or(recheck, |exp| exp.min(recheck));
        tracing::debug!(path = %self.path.display(), "read bearer token from file");
        Ok(AccessToken::new(
            Secret::new(token.expose().to_owned()),
            expires_on,
        ))
    }
}

/// The `exp` claim of a JWT, read without verifying it (the vault verifies; we only want to
/// know when to re-read the file and what to report as credential expiry).
fn jwt_expiry(token: &str) -> Option<OffsetDateTime> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    OffsetDateTime::from_unix_timestamp(exp).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!("eyJhbGciOiJub25lIn0.{}.sig", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn jwt_expiry_reads_the_exp_claim() {
        let exp = jwt_expiry(&jwt(
            r#"{"aud":"https://vault.azure.net","exp":1900000000}"#,
        ))
        .unwrap();
        assert_eq!(exp.unix_timestamp(), 1_900_000_000);
        assert!(jwt_expiry("opaque-token").is_none());
        assert!(jwt_expiry(&jwt(r#"{"aud":"x"}"#)).is_none());
    }

    #[tokio::test]
    async fn token_file_is_read_again_on_every_request_for_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n").unwrap();
        let cred = TokenFileCredential::new(path.clone());
        let t1 = cred
            .get_token(&["https://vault.azure.net/.default"], None)
            .await
            .unwrap();
        assert_eq!(t1.token.secret(), "first-token");
        // Opaque tokens are re-read at least every 30 s: 5 min refresh window + 30 s.
        assert!(t1.expires_on <= OffsetDateTime::now_utc() + TOKEN_FILE_RECHECK);
        let second = jwt(r#"{"exp":1900000000}"#);
        std::fs::write(&path, &second).unwrap();
        let t2 = cred.get_token(&["s"], None).await.unwrap();
        assert_eq!(t2.token.secret(), second);
        let want = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000);
        assert_eq!(cred.expiry(), Some(want));
    }

    #[tokio::test]
    async fn missing_or_empty_token_file_is_a_credential_error_without_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let cred = TokenFileCredential::new(path.clone());
        let err = cred.get_token(&["s"], None).await.unwrap_err();
        assert!(matches!(err.kind(), AzureKind::Credential));
        std::fs::write(&path, "  \n").unwrap();
        let err = cred.get_token(&["s"], None).await.unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn build_reports_unreadable_secret_files_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let auth = AzureAuth::TokenFile {
            token_file: missing.clone(),
        };
        let err = build(&auth, ClientOptions::default()).unwrap_err();
        assert!(err.message().starts_with("auth.token_file"), "{err}");
        let auth = AzureAuth::ClientSecret {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "c".into(),
            client_secret_file: missing,
        };
        let err = build(&auth, ClientOptions::default()).unwrap_err();
        assert!(
            err.message().starts_with("auth.client_secret_file"),
            "{err}"
        );
    }

    #[test]
    fn client_secret_credential_debug_has_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "super-secret-value\n").unwrap();
        let auth = AzureAuth::ClientSecret {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "app".into(),
            client_secret_file: file,
        };
        let built = build(&auth, ClientOptions::default()).unwrap();
        assert!(built.token_file.is_none());
        assert!(!format!("{:?}", built.credential).contains("super-secret"));
    }
}
