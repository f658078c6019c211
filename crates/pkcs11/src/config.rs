//! `type = "pkcs11"` settings: which module, which token, which key objects.

use std::path::PathBuf;
use std::time::Duration;

use polykms_backend::BackendError;
use serde::Deserialize;

/// Most sessions one backend keeps open: HSMs limit sessions per application, often to a few
/// hundred shared by every client of the partition.
const MAX_SESSIONS: usize = 256;

/// `type = "pkcs11"` settings: AES key objects on a token reached through a vendor's PKCS#11
/// library. The user PIN is read from `pin_file`, never inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 library (loaded with dlopen at start).
    pub module: PathBuf,
    /// Token by label (set exactly one of `token_label`, `slot_id`, `token_serial`).
    #[serde(default)]
    pub token_label: Option<String>,
    /// Token by slot id.
    #[serde(default)]
    pub slot_id: Option<u64>,
    /// Token by serial number.
    #[serde(default)]
    pub token_serial: Option<String>,
    /// File holding the user PIN (mode 0600 or stricter); re-read on reload.
    pub pin_file: PathBuf,
    /// CKA_LABEL of the AES key object(s); the one with the greatest CKA_ID wraps.
    pub key_label: String,
    /// How seeds are wrapped.
    #[serde(default)]
    pub mechanism: WrapMechanism,
    /// Most sessions open at once (each a concurrent call into the module).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// How long before the current key object's CKA_END_DATE polykms warns (`30d` by default).
    #[serde(default = "default_end_date_warning", with = "humantime_serde")]
    pub end_date_warning: Duration,
}

impl polykms_backend::ConfigFiles for Pkcs11Config {
    /// `pin_file`. Not `module`: the library is taken as written (it must name a file; give
    /// the absolute path vendors document), and it is loaded once per process.
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.pin_file]
    }
}

/// `mechanism = "…"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WrapMechanism {
    /// CKM_AES_GCM: 96-bit random IV, 128-bit tag, the plugin's AAD as GCM AAD.
    #[default]
    AesGcm,
    /// AES key wrap with padding (RFC 5649) through C_WrapKey / C_UnwrapKey; the AAD is bound
    /// by a digest inside the wrapped value.
    AesKeyWrapPad,
}

impl WrapMechanism {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WrapMechanism::AesGcm => "aes-gcm",
            WrapMechanism::AesKeyWrapPad => "aes-key-wrap-pad",
        }
    }
}

fn default_max_sessions() -> usize {
    8
}

fn default_end_date_warning() -> Duration {
    crate::lifecycle::DEFAULT_END_DATE_WARNING
}

/// How the token is found among the module's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSelector {
    Label(String),
    Slot(u64),
    Serial(String),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "token_label {l:?}"),
            TokenSelector::Slot(s) => write!(f, "slot_id {s}"),
            TokenSelector::Serial(s) => write!(f, "token_serial {s:?}"),
        }
    }
}

impl Pkcs11Config {
    /// Checks everything that can be checked without loading the module; errors name the field.
    pub(crate) fn validate(&self) -> Result<TokenSelector, BackendError> {
        if self.module.as_os_str().is_empty() {
            return Err(BackendError::config(
                "module: must name the PKCS#11 library",
            ));
        }
        let selector = match (&self.token_label, self.slot_id, &self.token_serial) {
            (Some(l), None, None) => TokenSelector::Label(check_label("token_label", l, 32)?),
            (None, Some(s), None) => TokenSelector::Slot(s),
            (None, None, Some(s)) => TokenSelector::Serial(check_label("token_serial", s, 16)?),
            _ => {
                return Err(BackendError::config(
                    "token_label, slot_id, token_serial: set exactly one",
                ));
            }
        };
        if self.key_label.is_empty() {
            return Err(BackendError::config("key_label: must not be empty"));
        }
        if self.key_label.chars().any(char::is_control) {
            return Err(BackendError::config(
                "key_label: must not contain control characters",
            ));
        }
        if self.max_sessions == 0 || self.max_sessions > MAX_SESSIONS {
            return Err(BackendError::config(format!(
                "max_sessions: must be between 1 and {MAX_SESSIONS}"
            )));
        }
        Ok(selector)
    }
}

/// Token labels are 32 bytes and serials 16, blank-padded, in CK_TOKEN_INFO.
fn check_label(field: &str, value: &str, max: usize) -> Result<String, BackendError> {
    let trimmed = value.trim_end();
    if trimmed.is_empty() || trimmed.len() > max || trimmed.chars().any(char::is_control) {
        return Err(BackendError::config(format!(
            "{field}: {value:?} is not a valid value (1 to {max} bytes, no control characters)"
        )));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pkcs11Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    const BASE: &str = r#"
        module = "/usr/lib/softhsm/libsofthsm2.so"
        pin_file = "/etc/polykms/hsm-pin"
        key_label = "kube-kek"
    "#;

    #[test]
    fn issue_example_parses_with_defaults() {
        let c = parse(&format!("{BASE}\ntoken_label = \"kube-kek\"")).unwrap();
        assert_eq!(c.mechanism, WrapMechanism::AesGcm);
        assert_eq!(c.max_sessions, 8);
        assert_eq!(c.end_date_warning, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(
            c.validate().unwrap(),
            TokenSelector::Label("kube-kek".into())
        );
        let kw = parse(&format!(
            "{BASE}\nslot_id = 0\nmechanism = \"aes-key-wrap-pad\"\nmax_sessions = 4\n\
             end_date_warning = \"2w\""
        ))
        .unwrap();
        assert_eq!(kw.end_date_warning, Duration::from_secs(14 * 24 * 3600));
        assert_eq!(kw.mechanism, WrapMechanism::AesKeyWrapPad);
        assert_eq!(kw.validate().unwrap(), TokenSelector::Slot(0));
    }

    #[test]
    fn unknown_fields_and_mechanisms_are_rejected() {
        let pin = parse(&format!("{BASE}\ntoken_label = \"t\"\npin = \"1234\""));
        assert!(pin.unwrap_err().contains("unknown field"));
        let mech = parse(&format!(
            "{BASE}\ntoken_label = \"t\"\nmechanism = \"aes-cbc\""
        ));
        assert!(mech.is_err());
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let none = parse(BASE).unwrap().validate().unwrap_err();
        assert!(none.message().contains("exactly one"), "{none}");
        let two = parse(&format!("{BASE}\ntoken_label = \"t\"\nslot_id = 1"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(two.message().contains("exactly one"), "{two}");
        let long = parse(&format!("{BASE}\ntoken_label = \"{}\"", "x".repeat(33)))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(long.message().starts_with("token_label"), "{long}");
        let mut c = parse(&format!("{BASE}\ntoken_serial = \"abc\"")).unwrap();
        c.max_sessions = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .message()
                .starts_with("max_sessions")
        );
        c.max_sessions = 1;
        c.key_label = String::new();
        assert!(c.validate().unwrap_err().message().starts_with("key_label"));
    }
}
