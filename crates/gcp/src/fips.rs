//! What a FIPS build refuses at config load: Application Default Credentials of an external
//! account sourced from AWS. google-cloud-auth signs the AWS `GetCallerIdentity` request of
//! those credentials with RustCrypto's HMAC and SHA-256, outside the FIPS module; every other
//! credential type signs through the process-default rustls provider (the FIPS one) or not at
//! all. Only ADC can hold such credentials (`service_account` checks its file's type).

use std::path::{Path, PathBuf};

use polykms_backend::BackendError;

use crate::config::GcpAuth;

/// Refuses, when `fips`, ADC whose credentials file (`GOOGLE_APPLICATION_CREDENTIALS`, else
/// gcloud's well-known file under `HOME`, both read through `env`) is an AWS-sourced external
/// account. A missing or unreadable file is left for the client library to report.
pub(crate) fn check(
    auth: &GcpAuth,
    fips: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), BackendError> {
    if !fips || *auth != GcpAuth::Adc {
        return Ok(());
    }
    let Some(path) = adc_file(&env) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read(&path) else {
        return Ok(());
    };
    match aws_environment_id(&text) {
        Some(id) => Err(BackendError::config(format!(
            "auth: the application default credentials in {} are an external account sourced \
             from AWS (credential_source.environment_id = {id:?}); google-cloud-auth signs \
             those with a non-validated HMAC-SHA256, so a FIPS build refuses them: use \
             workload identity federation with an OIDC or file source, or a service account",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// The file ADC reads, as google-cloud-auth looks for it on Unix.
fn adc_file(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let home = env("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".config/gcloud/application_default_credentials.json"))
}

/// `credential_source.environment_id` of an `external_account` file when it names AWS. Never
/// returns anything else from the file (which may hold secrets).
fn aws_environment_id(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    if value.get("type")?.as_str()? != "external_account" {
        return None;
    }
    let id = value
        .get("credential_source")?
        .get("environment_id")?
        .as_str()?;
    id.to_ascii_lowercase()
        .starts_with("aws")
        .then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS_SOURCED: &str = r#"{"type":"external_account","audience":"//iam.googleapis.com/x",
        "subject_token_type":"urn:ietf:params:aws:token-type:aws4_request",
        "token_url":"https://sts.googleapis.com/v1/token",
        "credential_source":{"environment_id":"aws1",
            "regional_cred_verification_url":"https://sts.{region}.amazonaws.com"}}"#;
    const OIDC_FILE_SOURCED: &str = r#"{"type":"external_account","audience":"//iam.googleapis.com/x",
        "subject_token_type":"urn:ietf:params:oauth:token-type:jwt",
        "token_url":"https://sts.googleapis.com/v1/token",
        "credential_source":{"file":"/var/run/token"}}"#;

    fn adc_env(path: &Path) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| (name == "GOOGLE_APPLICATION_CREDENTIALS").then(|| path.display().to_string())
    }

    #[test]
    fn a_fips_build_refuses_aws_sourced_adc_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adc.json");
        std::fs::write(&path, AWS_SOURCED).unwrap();
        let err = check(&GcpAuth::Adc, true, adc_env(&path)).unwrap_err();
        assert!(err.message().starts_with("auth:"), "{err}");
        assert!(err.message().contains("\"aws1\""), "{err}");
        check(&GcpAuth::Adc, false, adc_env(&path)).unwrap();
    }

    #[test]
    fn gcloud_well_known_file_is_read_when_the_variable_is_unset() {
        let home = tempfile::tempdir().unwrap();
        let gcloud = home.path().join(".config/gcloud");
        std::fs::create_dir_all(&gcloud).unwrap();
        std::fs::write(
            gcloud.join("application_default_credentials.json"),
            AWS_SOURCED,
        )
        .unwrap();
        let env = |name: &str| (name == "HOME").then(|| home.path().display().to_string());
        check(&GcpAuth::Adc, true, env).unwrap_err();
        check(&GcpAuth::Adc, false, env).unwrap();
    }

    #[test]
    fn other_credentials_and_missing_files_pass_in_both_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adc.json");
        std::fs::write(&path, OIDC_FILE_SOURCED).unwrap();
        for fips in [true, false] {
            check(&GcpAuth::Adc, fips, adc_env(&path)).unwrap();
            check(&GcpAuth::Adc, fips, adc_env(&dir.path().join("missing"))).unwrap();
            check(&GcpAuth::Adc, fips, |_| None).unwrap();
            check(&GcpAuth::Anonymous, fips, adc_env(&path)).unwrap();
        }
    }
}
