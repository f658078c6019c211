//! `type = "aws"` settings and the parsed form of the configured key reference.

use std::collections::BTreeMap;

use polykms_backend::{BackendError, crypto};
use polykms_net::NetworkConfig;
use serde::Deserialize;

use crate::context::{AAD_KEY, AAD_KEY_BASE64};
use crate::key::KeyRef;

/// Default per-call timeout: long enough for a cross-region call, short enough that a dead
/// endpoint is reported well within the apiserver's KMS deadline.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default TCP/TLS connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default attempts per call made by the SDK's standard retry strategy (1 = no SDK retry).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;

/// `type = "aws"` settings. Credentials never appear here: they come from the SDK's default
/// chain (environment, shared profile, web identity / IRSA, ECS / EC2 metadata).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The KMS key: key ARN, key id, alias ARN or `alias/name`.
    pub key: String,
    /// AWS region; defaults to the SDK's region chain, then to the region of a key ARN.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL override (VPC endpoint, emulator in tests). A FIPS VPC endpoint is named
    /// here in full; `use_fips_endpoint` cannot be combined with it.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Send KMS calls to AWS' FIPS endpoint (`kms-fips.<region>.amazonaws.com`): the SDK's
    /// `use_fips` on the KMS client (STS, which has FIPS endpoints in US regions only, follows
    /// AWS_USE_FIPS_ENDPOINT). Any build; default false.
    #[serde(default)]
    pub use_fips_endpoint: bool,
    /// Named profile from the shared config files, instead of `AWS_PROFILE`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Role to assume (STS AssumeRole) with the default-chain credentials.
    #[serde(default)]
    pub assume_role_arn: Option<String>,
    /// External id required by the role's trust policy, if any. Not a secret by AWS' design.
    #[serde(default)]
    pub assume_role_external_id: Option<String>,
    /// Session name for the assumed role (appears in CloudTrail).
    #[serde(default)]
    pub assume_role_session_name: Option<String>,
    /// Extra EncryptionContext pairs, merged with the plugin's AAD. Changing them later makes
    /// existing ciphertexts undecryptable: set them once.
    #[serde(default)]
    pub encryption_context: BTreeMap<String, String>,
    /// Overall deadline of one KMS call, SDK retries included, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// TCP/TLS connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Attempts per call by the SDK (throttling, 5xx, network); core retries on top of this.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// `proxy`, `no_proxy`, `proxy_credentials_file` and `ca_file` (extra trusted roots),
    /// applied to KMS, STS and the credential providers alike.
    #[serde(flatten)]
    pub network: NetworkConfig,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

impl polykms_backend::ConfigFiles for AwsConfig {
    /// Only the network files: credentials come from the SDK's chain, not from named files.
    fn file_paths_mut(&mut self) -> Vec<&mut std::path::PathBuf> {
        self.network.file_paths_mut()
    }
}

impl AwsConfig {
    /// A config for `key` with every optional field at its default.
    pub fn new(key: impl Into<String>) -> Self {
        AwsConfig {
            key: key.into(),
            region: None,
            endpoint: None,
            use_fips_endpoint: false,
            profile: None,
            assume_role_arn: None,
            assume_role_external_id: None,
            assume_role_session_name: None,
            encryption_context: BTreeMap::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            network: NetworkConfig::default(),
        }
    }

    /// Checks every field that can be checked without the network; errors name the field.
    pub(crate) fn validate(&self) -> Result<KeyRef, BackendError> {
        self.validate_for(crypto::FIPS_BUILD)
    }

    /// `validate` for a FIPS build (`fips`) or not, so both branches are tested in every build.
    pub(crate) fn validate_for(&self, fips: bool) -> Result<KeyRef, BackendError> {
        let key = KeyRef::parse(&self.key)?;
        self.check_fips(fips)?;
        if let Some(region) = &self.region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(BackendError::config(format!(
                "region: {region:?} is not a region name"
            )));
        }
        if let (Some(region), Some(key_region)) = (self.region.as_deref(), key.region())
            && region != key_region
        {
            return Err(BackendError::config(format!(
                "key: the ARN is in region {key_region} but region = {region:?}"
            )));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(BackendError::config(format!(
                "endpoint: {endpoint:?} must be an http:// or https:// URL"
            )));
        }
        if self.use_fips_endpoint && self.endpoint.is_some() {
            // The SDK's endpoint rules refuse FIPS with a custom URL ("FIPS and custom endpoint
            // are not supported") on every call; say so now.
            return Err(BackendError::config(
                "use_fips_endpoint: cannot be combined with endpoint (the AWS SDK does not apply \
                 FIPS to a custom endpoint URL); to use a FIPS VPC endpoint, name it in endpoint \
                 and leave use_fips_endpoint unset",
            ));
        }
        if let Some(role) = &self.assume_role_arn {
            if !role.starts_with("arn:") || !role.contains(":role/") {
                return Err(BackendError::config(format!(
                    "assume_role_arn: {role:?} is not an IAM role ARN"
                )));
            }
        } else if self.assume_role_external_id.is_some() || self.assume_role_session_name.is_some()
        {
            return Err(BackendError::config(
                "assume_role_external_id / assume_role_session_name need assume_role_arn",
            ));
        }
        for (k, v) in &self.encryption_context {
            if k.is_empty() || v.is_empty() {
                return Err(BackendError::config(
                    "encryption_context: keys and values must not be empty",
                ));
            }
            if k == AAD_KEY || k == AAD_KEY_BASE64 {
                return Err(BackendError::config(format!(
                    "encryption_context: {k:?} is reserved for the plugin's AAD"
                )));
            }
            if k.to_ascii_lowercase().starts_with("aws:") {
                return Err(BackendError::config(format!(
                    "encryption_context: {k:?} uses the reserved aws: prefix"
                )));
            }
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(BackendError::config(
                "timeout_ms / connect_timeout_ms must be > 0",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(BackendError::config(
                "max_attempts: must be between 1 and 10",
            ));
        }
        Ok(key)
    }

    /// Settings a FIPS build cannot honour. STS AssumeRole requests are signed by the SDK's
    /// credentials provider with `aws-sigv4` (RustCrypto HMAC/SHA-256, outside the validated
    /// module), not by polykms' signer, so `assume_role_arn` is refused there.
    /// A shared-config profile that assumes a role (`role_arn` + `source_profile` or
    /// `credential_source`) is refused for the same reason, naming the profile and its file.
    pub(crate) fn check_fips(&self, fips: bool) -> Result<(), BackendError> {
        self.check_fips_with(fips, |var| std::env::var(var).ok())
    }

    fn check_fips_with(
        &self,
        fips: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), BackendError> {
        const INSTEAD: &str = "use IRSA / EKS Pod Identity / web identity (AWS_ROLE_ARN + \
             AWS_WEB_IDENTITY_TOKEN_FILE, an unsigned STS call) or the instance/task role instead";
        if !fips {
            return Ok(());
        }
        if self.assume_role_arn.is_some() {
            return Err(BackendError::config(format!(
                "assume_role_arn: not available in the FIPS build: the SDK signs STS AssumeRole \
                 outside the FIPS module; {INSTEAD}"
            )));
        }
        if let Some(found) = crate::profile_role::signed_role_profile(self.profile.as_deref(), env)
        {
            return Err(BackendError::config(format!(
                "profile: the shared-config profile \"{}\" in {} assumes a role (role_arn), which \
                 the SDK signs outside the FIPS module; not available in the FIPS build; {INSTEAD}",
                found.profile,
                found.file.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polykms_backend::ErrorKind;

    #[test]
    fn a_fips_build_refuses_a_profile_that_assumes_a_role_and_names_it() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[profile ops]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = default\n",
        )
        .unwrap();
        let env = |var: &str| (var == "HOME").then(|| home.path().display().to_string());
        let mut cfg = AwsConfig::new(ARN);
        cfg.profile = Some("ops".into());
        let err = cfg.check_fips_with(true, env).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().starts_with("profile:"), "{err}");
        assert!(
            err.message().contains("\"ops\"") && err.message().contains(".aws/config"),
            "{err}"
        );
        assert!(cfg.check_fips_with(false, env).is_ok());
        cfg.profile = Some("other".into());
        assert!(cfg.check_fips_with(true, env).is_ok());
    }

    type Mutation = Box<dyn Fn(&mut AwsConfig)>;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn parse(toml_text: &str) -> Result<AwsConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&format!("key = {ARN:?}\n")).unwrap();
        assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(c.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert!(c.encryption_context.is_empty());
        assert!(
            matches!(c.validate().unwrap(), KeyRef::KeyArn { ref region, .. } if region == "eu-west-1")
        );
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
            key = "alias/kube-secrets"
            region = "eu-west-1"
            endpoint = "https://vpce-0123.kms.eu-west-1.vpce.amazonaws.com"
            assume_role_arn = "arn:aws:iam::111122223333:role/polykms"
            assume_role_external_id = "cluster-a"
            assume_role_session_name = "polykms-node-1"
            encryption_context = { cluster = "prod-1" }
            timeout_ms = 3000
            connect_timeout_ms = 500
            max_attempts = 3
            "#,
        )
        .unwrap();
        // assume_role_arn is a FIPS-build refusal (fips_build_refuses_assume_role_arn...).
        assert_eq!(
            c.validate_for(false).unwrap(),
            KeyRef::AliasName("alias/kube-secrets".into())
        );
        assert_eq!(
            c.encryption_context.get("cluster").map(String::as_str),
            Some("prod-1")
        );
    }

    #[test]
    fn use_fips_endpoint_defaults_to_false_and_parses() {
        assert!(
            !parse(&format!("key = {ARN:?}\n"))
                .unwrap()
                .use_fips_endpoint
        );
        let c = parse(&format!("key = {ARN:?}\nuse_fips_endpoint = true\n")).unwrap();
        assert!(c.use_fips_endpoint);
        c.validate_for(false).unwrap();
        c.validate_for(true).unwrap();
    }

    #[test]
    fn use_fips_endpoint_with_an_endpoint_override_is_refused_naming_both() {
        let mut c = AwsConfig::new(ARN);
        c.use_fips_endpoint = true;
        c.endpoint = Some("https://vpce-0123.kms-fips.eu-west-1.vpce.amazonaws.com".into());
        let err = c.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().starts_with("use_fips_endpoint:"), "{err}");
        assert!(err.message().contains("endpoint"), "{err}");
        c.use_fips_endpoint = false;
        c.validate().unwrap();
    }

    #[test]
    fn fips_build_refuses_assume_role_arn_and_names_the_alternative() {
        let mut c = AwsConfig::new(ARN);
        c.assume_role_arn = Some("arn:aws:iam::111122223333:role/polykms".into());
        c.validate_for(false).unwrap();
        let err = c.validate_for(true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().starts_with("assume_role_arn:"), "{err}");
        assert!(err.message().contains("FIPS"), "{err}");
        assert!(
            err.message().contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
            "{err}"
        );
        // Without the role, a FIPS build accepts the same config.
        c.assume_role_arn = None;
        c.validate_for(true).unwrap();
    }

    #[test]
    fn validate_follows_the_build() {
        let mut c = AwsConfig::new(ARN);
        c.assume_role_arn = Some("arn:aws:iam::111122223333:role/polykms".into());
        assert_eq!(c.validate().is_err(), crypto::FIPS_BUILD);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = parse("key = \"alias/a\"\naccess_key_id = \"AKIA...\"\n").unwrap_err();
        assert!(err.to_string().contains("access_key_id"), "{err}");
    }

    #[test]
    fn debug_shows_no_credentials_because_there_are_none() {
        // The config has no secret fields at all; Debug is safe to print whole.
        let c = AwsConfig::new(ARN);
        let shown = format!("{c:?}");
        assert!(shown.contains(ARN));
        assert!(!shown.to_lowercase().contains("secret_access"));
    }

    #[test]
    fn invalid_fields_are_config_errors_naming_the_field() {
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|c| c.region = Some("us-east-1".into())), "key:"),
            (Box::new(|c| c.region = Some("eu west".into())), "region:"),
            (
                Box::new(|c| c.endpoint = Some("kms.local:443".into())),
                "endpoint:",
            ),
            (
                Box::new(|c| c.assume_role_arn = Some("polykms".into())),
                "assume_role_arn:",
            ),
            (
                Box::new(|c| c.assume_role_external_id = Some("x".into())),
                "assume_role_external_id",
            ),
            (
                Box::new(|c| {
                    c.encryption_context.insert(AAD_KEY.into(), "x".into());
                }),
                "encryption_context:",
            ),
            (
                Box::new(|c| {
                    c.encryption_context.insert("aws:x".into(), "y".into());
                }),
                "encryption_context:",
            ),
            (
                Box::new(|c| {
                    c.encryption_context.insert("k".into(), String::new());
                }),
                "encryption_context:",
            ),
            (Box::new(|c| c.timeout_ms = 0), "timeout_ms"),
            (Box::new(|c| c.max_attempts = 0), "max_attempts:"),
        ];
        for (mutate, field) in cases {
            let mut c = AwsConfig::new(ARN);
            mutate(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().starts_with(field), "{field}: {err}");
        }
    }
}
