//! `type = "kmip"` settings: where the KMIP server is, how polykms authenticates, which key.

use std::path::PathBuf;
use std::time::Duration;

use polykms_backend::BackendError;
use serde::Deserialize;

use crate::protocol::ProtocolVersion;

/// The IANA port for KMIP over TLS.
pub const DEFAULT_PORT: u16 = 5696;
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const MAX_TIMEOUT_MS: u64 = 120_000;
/// The versions polykms can speak, newest first (1.x TTLV encodings only).
pub const SUPPORTED_VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::new(1, 4),
    ProtocolVersion::new(1, 3),
    ProtocolVersion::new(1, 2),
];

/// `type = "kmip"` settings: an AES key on a KMIP server, used through Encrypt/Decrypt.
///
/// Credentials are never inline: the client key, username and password come from files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmipConfig {
    /// `host:port` of the server (TLS always; port 5696 when omitted).
    pub endpoint: String,
    /// PEM CA bundle trusted for the server certificate: the only roots trusted when set
    /// (the system roots are trusted when it is not).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Trust the system roots as well as `ca_file` (for a server whose certificate comes from
    /// a public CA or the host's own).
    #[serde(default)]
    pub also_trust_system_roots: bool,
    /// PEM client certificate (chain) for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name expected in the server certificate when `endpoint` names the server otherwise.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// KMIP Name of the key: the Active symmetric key with this name activated most recently.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Unique Identifier of one key object, pinned (no rotation by name).
    #[serde(default)]
    pub key_uid: Option<String>,
    /// File holding the username of a KMIP Credential (Username and Password).
    #[serde(default)]
    pub username_file: Option<PathBuf>,
    /// File holding the password of that Credential.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Highest protocol version to negotiate: "1.2", "1.3" or "1.4".
    #[serde(default = "default_kmip_version")]
    pub kmip_version: String,
    /// Per-request timeout in milliseconds (connection, TLS handshake and answer).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_kmip_version() -> String {
    "1.4".into()
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl polykms_backend::ConfigFiles for KmipConfig {
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        [
            &mut self.ca_file,
            &mut self.client_cert_file,
            &mut self.client_key_file,
            &mut self.username_file,
            &mut self.password_file,
        ]
        .into_iter()
        .filter_map(Option::as_mut)
        .collect()
    }
}

/// How the key is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    Name(String),
    Uid(String),
}

/// The host and port of `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `host:port`, with IPv6 hosts in brackets.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What `validate` found: everything the backend needs that is not a file.
#[derive(Debug, Clone)]
pub struct Validated {
    pub endpoint: Endpoint,
    pub selector: KeySelector,
    /// Versions offered in Discover Versions, preferred first.
    pub offered: Vec<ProtocolVersion>,
    pub timeout: Duration,
}

impl KmipConfig {
    /// Checks everything that can be checked without the network; errors name the field.
    pub fn validate(&self) -> Result<Validated, BackendError> {
        let endpoint = parse_endpoint(&self.endpoint)?;
        let selector = match (&self.key_name, &self.key_uid) {
            (Some(n), None) if !n.trim().is_empty() => KeySelector::Name(n.clone()),
            (None, Some(u)) if !u.trim().is_empty() => KeySelector::Uid(u.clone()),
            (Some(_), Some(_)) | (None, None) => {
                return Err(BackendError::config("key_name, key_uid: set exactly one"));
            }
            _ => {
                return Err(BackendError::config("key_name, key_uid: must not be empty"));
            }
        };
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(BackendError::config(
                "client_cert_file, client_key_file: set both or neither",
            ));
        }
        if self.client_cert_file.is_none() && self.username_file.is_none() {
            return Err(BackendError::config(
                "client_cert_file, client_key_file: KMIP servers authenticate clients by TLS \
                 certificate; set both (or username_file for a server that takes a Credential)",
            ));
        }
        if self.password_file.is_some() && self.username_file.is_none() {
            return Err(BackendError::config("password_file: needs username_file"));
        }
        if self.also_trust_system_roots && self.ca_file.is_none() {
            return Err(BackendError::config(
                "also_trust_system_roots: needs ca_file (without ca_file the system roots are \
                 the ones trusted)",
            ));
        }
        if let Some(name) = &self.tls_server_name
            && (name.is_empty() || name.contains(['/', ':', ' ']))
        {
            return Err(BackendError::config("tls_server_name: not a DNS name"));
        }
        let cap = SUPPORTED_VERSIONS
            .iter()
            .position(|v| v.to_string() == self.kmip_version.trim())
            .ok_or_else(|| {
                BackendError::config(format!(
                    "kmip_version: {:?} is not one of \"1.4\", \"1.3\", \"1.2\"",
                    self.kmip_version
                ))
            })?;
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(BackendError::config(format!(
                "timeout_ms: must be between 1 and {MAX_TIMEOUT_MS}"
            )));
        }
        Ok(Validated {
            endpoint,
            selector,
            offered: SUPPORTED_VERSIONS[cap..].to_vec(),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

fn parse_endpoint(text: &str) -> Result<Endpoint, BackendError> {
    let text = text.trim();
    let bad = |why: &str| BackendError::config(format!("endpoint: {text:?} {why}"));
    if text.contains("://") {
        return Err(bad(
            "is a URL; give host:port (KMIP runs over TLS, no scheme)",
        ));
    }
    if text.is_empty() || text.contains(['/', ' ', '@', '?', '#']) {
        return Err(bad("is not host:port"));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("has no closing ]"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or_else(|| bad("is not host:port"))?),
            ),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(bad("is an IPv6 address without brackets"));
            }
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("has an invalid port"))?,
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        endpoint = "kmip.corp:5696"
        ca_file = "/etc/polykms/kmip-ca.pem"
        client_cert_file = "/etc/polykms/kmip-client.pem"
        client_key_file = "/etc/polykms/kmip-client.key"
        key_name = "kube-kek"
    "#;

    fn parse(extra: &str) -> KmipConfig {
        toml::from_str(&format!("{BASE}\n{extra}")).unwrap()
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let c = parse("");
        let v = c.validate().unwrap();
        assert_eq!(
            v.endpoint,
            Endpoint {
                host: "kmip.corp".into(),
                port: 5696
            }
        );
        assert_eq!(v.selector, KeySelector::Name("kube-kek".into()));
        assert_eq!(v.offered, SUPPORTED_VERSIONS.to_vec());
        assert_eq!(v.timeout, Duration::from_secs(5));
        // ca_file alone is trusted unless the system roots are asked for.
        assert!(!c.also_trust_system_roots);
        assert!(parse("also_trust_system_roots = true").also_trust_system_roots);
    }

    #[test]
    fn kmip_version_caps_what_is_offered() {
        let v = parse("kmip_version = \"1.3\"").validate().unwrap();
        assert_eq!(
            v.offered,
            vec![ProtocolVersion::new(1, 3), ProtocolVersion::new(1, 2)]
        );
        let e = parse("kmip_version = \"2.0\"").validate().unwrap_err();
        assert!(e.message().starts_with("kmip_version"), "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = toml::from_str::<KmipConfig>(&format!("{BASE}\npassword = \"x\"")).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        // The network keys of the HTTP backends do not apply to raw TLS.
        assert!(
            toml::from_str::<KmipConfig>(&format!("{BASE}\nproxy = \"http://p:3128\"")).is_err()
        );
    }

    fn invalid(f: impl FnOnce(&mut KmipConfig)) -> String {
        let mut c = parse("");
        f(&mut c);
        c.validate().unwrap_err().message().to_owned()
    }

    #[test]
    fn invalid_settings_name_their_field() {
        assert!(invalid(|c| c.key_uid = Some("7".into())).starts_with("key_name, key_uid"));
        assert!(invalid(|c| c.key_name = None).starts_with("key_name, key_uid"));
        assert!(invalid(|c| c.key_name = Some(" ".into())).contains("empty"));
        assert!(invalid(|c| c.client_key_file = None).contains("both"));
        assert!(
            invalid(|c| {
                c.client_cert_file = None;
                c.client_key_file = None;
            })
            .contains("certificate")
        );
        assert!(invalid(|c| c.password_file = Some("/p".into())).starts_with("password_file"));
        assert!(
            invalid(|c| {
                c.ca_file = None;
                c.also_trust_system_roots = true;
            })
            .starts_with("also_trust_system_roots")
        );
        assert!(invalid(|c| c.timeout_ms = 0).starts_with("timeout_ms"));
        assert!(invalid(|c| c.tls_server_name = Some("a b".into())).starts_with("tls_server_name"));
        for bad in [
            "https://kmip.corp:5696",
            "kmip.corp:0",
            "kmip.corp:x",
            "",
            "::1:5696",
            "[::1",
            "kmip.corp/path",
        ] {
            let e = invalid(|c| c.endpoint = bad.into());
            assert!(e.starts_with("endpoint"), "{bad}: {e}");
        }
    }

    #[test]
    fn endpoints_take_names_ipv4_ipv6_and_a_default_port() {
        for (text, host, port) in [
            ("kmip.corp", "kmip.corp", 5696),
            ("127.0.0.1:15696", "127.0.0.1", 15696),
            ("[::1]:5697", "::1", 5697),
            ("[::1]", "::1", 5696),
        ] {
            let e = parse_endpoint(text).unwrap();
            assert_eq!((e.host.as_str(), e.port), (host, port), "{text}");
        }
        assert_eq!(
            parse_endpoint("[::1]:5697").unwrap().address(),
            "[::1]:5697"
        );
    }

    #[test]
    fn username_alone_is_enough_without_a_client_certificate() {
        let mut c = parse("username_file = \"/u\"\npassword_file = \"/p\"");
        c.client_cert_file = None;
        c.client_key_file = None;
        c.validate().unwrap();
    }
}
