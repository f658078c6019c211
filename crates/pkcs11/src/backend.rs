//! `Pkcs11Backend`: the async face of `Hsm`. Each call takes one of `max_sessions` permits,
//! then runs on a blocking thread; the caller's deadline bounds the wait (a hung module call
//! keeps its permit and its thread, never an async worker).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use polykms_backend::{
    BackendError, ErrorKind, KeyEncryptionBackend, KeyLifecycle, KeyVersion, SecretBytes,
    WrappedKey,
};
use tokio::sync::Semaphore;

use crate::binding;
use crate::config::{Pkcs11Config, WrapMechanism};
use crate::hsm::Hsm;
use crate::lifecycle;
use crate::module::Module;
use crate::pin::{PinGate, read_pin_file};

/// Largest seed wrapped with AES-GCM: far above a DEK seed, and within what HSMs accept in one
/// C_Encrypt.
const MAX_GCM_PLAINTEXT: usize = 1024;
/// Largest generic secret made for C_WrapKey (seed plus AAD digest); HSMs bound the length of
/// generic secret objects, commonly at 512 bytes or more.
const MAX_WRAPPED_SECRET: usize = 512;

/// How long start-up may spend loading the module and logging in.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// AES key objects on a PKCS#11 token.
pub struct Pkcs11Backend {
    hsm: Arc<Hsm>,
    permits: Arc<Semaphore>,
    config: Pkcs11Config,
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.config.module)
            .field("token", &self.hsm.selector().to_string())
            .field("key_label", &self.config.key_label)
            .field("mechanism", &self.config.mechanism.as_str())
            .field("max_sessions", &self.config.max_sessions)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Validates the config, reads the PIN, loads the module and logs in once. Fails (kind
    /// `Config`) on bad settings, an unreadable or too-open pin file or a module that does not
    /// load, and (kind `Unauthorized`) when the token refuses the PIN. A token that is absent
    /// now is not an error: health reports it until it appears.
    pub async fn connect(config: &Pkcs11Config) -> Result<Self, BackendError> {
        let selector = config.validate()?;
        let pin = read_pin_file(&config.pin_file)?;
        let path = config.module.clone();
        let module = tokio::time::timeout(
            START_TIMEOUT,
            tokio::task::spawn_blocking(move || Module::load(&path)),
        )
        .await
        .map_err(|_| {
            BackendError::timeout(format!(
                "module: {} did not initialize within {START_TIMEOUT:?}",
                config.module.display()
            ))
        })?
        .map_err(|e| BackendError::internal(format!("loading the module: {e}")))??;
        let hsm = Arc::new(Hsm::new(
            module,
            selector,
            PinGate::new(pin),
            config.key_label.clone(),
            config.mechanism,
        ));
        let backend = Pkcs11Backend {
            hsm,
            permits: Arc::new(Semaphore::new(config.max_sessions)),
            config: config.clone(),
        };
        // One login now: a wrong PIN is a clean start-up error, not a stream of failed probes.
        match tokio::time::timeout(START_TIMEOUT, backend.blocking(|h| h.start())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == ErrorKind::Unauthorized => return Err(e),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pkcs11: token not usable at start; health reports it")
            }
            Err(_) => tracing::warn!(
                "pkcs11: the module did not answer within {START_TIMEOUT:?} at start; health reports it"
            ),
        }
        Ok(backend)
    }

    /// Runs `f` on a blocking thread once a session permit is free.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Hsm) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BackendError::internal("the session permits were closed"))?;
        let hsm = self.hsm.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&hsm)
        })
        .await
        .map_err(|e| BackendError::internal(format!("a module call panicked: {e}")))?
    }

    /// How many times this backend's module was finalized and initialized again to enumerate
    /// tokens since it was loaded (process-wide: every backend naming the module shares it).
    /// While a token stays missing this grows with the logarithm of the time, not per probe.
    pub fn module_reinitializations(&self) -> u64 {
        self.hsm.module.reinitializations()
    }

    #[cfg(test)]
    pub(crate) fn hsm(&self) -> &Hsm {
        &self.hsm
    }
}

#[async_trait]
impl KeyEncryptionBackend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn max_plaintext_len(&self) -> usize {
        match self.config.mechanism {
            WrapMechanism::AesGcm => MAX_GCM_PLAINTEXT,
            WrapMechanism::AesKeyWrapPad => MAX_WRAPPED_SECRET - binding::DIGEST_LEN,
        }
    }

    /// The full health probe; the trait's `probe` is this.
    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        self.blocking(|h| h.probe()).await
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        let seed = plaintext.clone();
        let aad = aad.to_vec();
        self.blocking(move |h| h.wrap(&seed, &aad)).await
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let wrapped = wrapped.clone();
        let aad = aad.to_vec();
        self.blocking(move |h| h.unwrap(&wrapped, &aad)).await
    }

    /// CKA_END_DATE of the key objects the probe just listed (no call into the module).
    async fn key_lifecycle(&self, in_use: &[KeyVersion]) -> Result<KeyLifecycle, BackendError> {
        let set = self.hsm.listed_keys().ok_or_else(|| {
            BackendError::unavailable(
                "the key objects were not listed yet (no probe reached the token)",
            )
        })?;
        Ok(lifecycle::findings(
            &set,
            in_use,
            SystemTime::now(),
            self.config.end_date_warning,
        ))
    }

    fn describe(&self) -> String {
        let token = match self.hsm.found_token() {
            Some(t) => t.to_string(),
            None => format!("{} (not found yet)", self.hsm.selector()),
        };
        format!(
            "pkcs11 module {} ({}); {token}; mechanism {}; key_label {:?}; max_sessions {}",
            self.config.module.display(),
            self.hsm.module.info,
            self.config.mechanism.as_str(),
            self.config.key_label,
            self.config.max_sessions
        )
    }
}
