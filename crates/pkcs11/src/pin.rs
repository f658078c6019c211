//! The user PIN: read from `pin_file`, kept zeroized, presented to the token at most once
//! after a refusal (retrying a wrong PIN can lock the token).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use polykms_backend::{BackendError, read_private_file};

use crate::error::{self, Operation};

/// Reads a PIN file: its content less one trailing line end. Refuses files that group or
/// others may read, empty files and PINs that are not UTF-8.
pub(crate) fn read_pin_file(path: &Path) -> Result<AuthPin, BackendError> {
    let shown = path.display();
    let raw = read_private_file(path, "pin_file:")?;
    let mut end = raw.len();
    if raw[..end].ends_with(b"\n") {
        end -= 1;
        if raw[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    if end == 0 {
        return Err(BackendError::config(format!("pin_file: {shown}: is empty")));
    }
    let text = std::str::from_utf8(&raw[..end])
        .map_err(|_| BackendError::config(format!("pin_file: {shown}: the PIN is not UTF-8")))?;
    Ok(AuthPin::from(text))
}

/// Logs sessions in, once per token insertion, and never again after the token refused the
/// PIN: the refusal is kept and returned to every later caller until a reload reads the
/// pin file again (a new backend).
pub(crate) struct PinGate {
    pin: AuthPin,
    refused: Mutex<Option<BackendError>>,
    attempts: AtomicU32,
}

impl PinGate {
    pub(crate) fn new(pin: AuthPin) -> Self {
        PinGate {
            pin,
            refused: Mutex::new(None),
            attempts: AtomicU32::new(0),
        }
    }

    /// The refusal, if the token refused the PIN.
    pub(crate) fn refusal(&self) -> Option<BackendError> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times C_Login was called.
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Logs the application in through `session` unless it already is. `logged_in` asks the
    /// session again after taking the lock: another thread may have logged in meanwhile
    /// (PKCS#11 login state is per token, not per session).
    pub(crate) fn login(
        &self,
        session: &Session,
        token: &str,
        logged_in: impl Fn(&Session) -> Result<bool, Error>,
    ) -> Result<(), BackendError> {
        // Held across C_Login: concurrent sessions make one attempt between them.
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = refused.as_ref() {
            return Err(e.clone());
        }
        if logged_in(session).map_err(|e| error::classify(Operation::Login, &e))? {
            return Ok(());
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(Error::Pkcs11(rv, _)) if error::pin_refused(rv) => {
                let e = BackendError::unauthorized(format!(
                    "{token} refused the user PIN from pin_file ({}); polykms will not try it \
                     again (a wrong PIN can lock the token): fix pin_file and reload",
                    error::rv_name(rv)
                ));
                *refused = Some(e.clone());
                Err(e)
            }
            Err(e) => Err(error::classify(Operation::Login, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use secrecy::ExposeSecret;

    fn expose(p: &AuthPin) -> &str {
        p.expose_secret()
    }

    fn write(dir: &tempfile::TempDir, content: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.path().join("pin");
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn pin_file_loses_one_line_end_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            expose(&read_pin_file(&write(&dir, b"1234\n", 0o600)).unwrap()),
            "1234"
        );
        assert_eq!(
            expose(&read_pin_file(&write(&dir, b"12 34\r\n", 0o400)).unwrap()),
            "12 34"
        );
        assert_eq!(
            expose(&read_pin_file(&write(&dir, b"1234", 0o600)).unwrap()),
            "1234"
        );
    }

    #[test]
    fn readable_empty_or_missing_pin_files_are_config_errors_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let open = read_pin_file(&write(&dir, b"1234\n", 0o640)).unwrap_err();
        assert!(open.message().starts_with("pin_file"), "{open}");
        assert!(open.message().contains("chmod 600"), "{open}");
        assert!(!open.message().contains("1234"));
        let empty = read_pin_file(&write(&dir, b"\n", 0o600)).unwrap_err();
        assert!(empty.message().contains("empty"), "{empty}");
        let missing = read_pin_file(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.kind(), polykms_backend::ErrorKind::Config);
    }
}
