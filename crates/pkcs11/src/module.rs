//! Loaded PKCS#11 libraries: each loaded and C_Initialize'd once per process (OS locking),
//! shared by every backend (and every reload) that names it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use polykms_backend::BackendError;

use crate::backoff::ReinitBackoff;
use crate::error::{self, Operation};

/// One PKCS#11 library, initialized.
pub(crate) struct Module {
    pub(crate) path: PathBuf,
    pub(crate) pkcs11: Pkcs11,
    /// Library description and version from C_GetInfo, for `describe`.
    pub(crate) info: String,
    /// Every call into the module holds this for reading; re-initialization holds it for
    /// writing, so that C_Finalize never runs while another thread is inside the module.
    calls: RwLock<()>,
    /// Counts re-initializations: session and object handles of an older generation are void.
    generation: AtomicU64,
    /// Spaces out re-initializations while a token stays missing.
    backoff: Mutex<ReinitBackoff>,
}

/// What became of a request to re-initialize the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reinit {
    /// Finalized and initialized again (or tried to: the old generation is void either way).
    Done,
    /// Another caller already did, since the generation seen.
    Newer,
    /// A call stayed inside the module longer than the patience given.
    Busy,
    /// Too soon after the last one; allowed from the instant given.
    Deferred(Instant),
}

static MODULES: LazyLock<Mutex<HashMap<PathBuf, Arc<Module>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A permit to call into the module, and the generation the calls belong to.
pub(crate) struct CallGuard<'a> {
    _calls: RwLockReadGuard<'a, ()>,
    pub(crate) generation: u64,
}

impl Module {
    /// The module at `path`, loading and initializing it on first use. Blocking.
    pub(crate) fn load(path: &Path) -> Result<Arc<Module>, BackendError> {
        // One library however it is named (a symlink and its target are one library to the
        // dynamic loader): two Modules for it could finalize it under each other's calls.
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(&key) {
            return Ok(m.clone());
        }
        let shown = path.display();
        if !path.is_file() {
            return Err(BackendError::config(format!(
                "module: {shown} is not a file"
            )));
        }
        let pkcs11 = Pkcs11::new(path).map_err(|e| match e {
            Error::LibraryLoading(err) => {
                BackendError::config(format!("module: cannot load {shown}: {err}"))
            }
            other => {
                BackendError::config(format!("module: {shown} is not a PKCS#11 library: {other}"))
            }
        })?;
        initialize(&pkcs11).map_err(|e| {
            prefixed(
                &format!("module {shown}"),
                &error::classify(Operation::Load, &e),
            )
        })?;
        let info = pkcs11
            .get_library_info()
            .map(|i| {
                format!(
                    "{} {}.{}",
                    i.library_description().trim(),
                    i.library_version().major(),
                    i.library_version().minor()
                )
            })
            .unwrap_or_else(|_| "unknown library".to_string());
        let module = Arc::new(Module {
            path: path.to_path_buf(),
            pkcs11,
            info,
            calls: RwLock::new(()),
            generation: AtomicU64::new(0),
            backoff: Mutex::new(ReinitBackoff::new()),
        });
        modules.insert(key, module.clone());
        Ok(module)
    }

    /// Enters the module for a call.
    pub(crate) fn enter(&self) -> CallGuard<'_> {
        let calls = self.calls.read().unwrap_or_else(|p| p.into_inner());
        CallGuard {
            _calls: calls,
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// How many times the module was finalized and initialized again since it was loaded.
    pub(crate) fn reinitializations(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Finalizes and initializes the module again, so that it enumerates its tokens afresh
    /// (SoftHSM2 and some vendors' libraries list tokens only in C_Initialize). Done only when
    /// the configured token cannot be found, never while a call is inside the module (it is
    /// skipped after `patience`, to be tried at the next probe), only once per generation
    /// `seen`, and, while tokens stay missing, at the backoff's pace (`now` is its clock):
    /// every backend naming the module loses its sessions each time.
    pub(crate) fn reinitialize(&self, seen: u64, patience: Duration, now: Instant) -> Reinit {
        if self.generation.load(Ordering::Acquire) != seen {
            return Reinit::Newer;
        }
        if let Err(next) = self.backoff().due(now) {
            return Reinit::Deferred(next);
        }
        let until = Instant::now() + patience;
        let _exclusive = loop {
            match self.calls.try_write() {
                Ok(guard) => break guard,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(TryLockError::WouldBlock) => return Reinit::Busy,
            }
        };
        // A racing caller that saw the same generation re-initialized meanwhile: one is enough.
        if self.generation.load(Ordering::Acquire) != seen {
            return Reinit::Newer;
        }
        self.backoff().record(now);
        tracing::warn!(module = %self.path.display(),
            "pkcs11: token not found; finalizing and initializing the module to enumerate tokens again");
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::warn!(error = %e, "pkcs11: C_Finalize failed");
        }
        let result = initialize(&self.pkcs11);
        // Even a failed C_Initialize voids every handle of the old generation.
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = result {
            tracing::warn!(error = %e, "pkcs11: C_Initialize failed");
        }
        Reinit::Done
    }

    /// A token that was missing is back: the next one to go missing is looked for at once.
    pub(crate) fn reset_backoff(&self) {
        self.backoff().reset();
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, ReinitBackoff> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn initialize(pkcs11: &Pkcs11) -> Result<(), Error> {
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library in this process initialized it: fine, it stays initialized.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn prefixed(prefix: &str, e: &BackendError) -> BackendError {
    BackendError::new(e.kind(), format!("{prefix}: {}", e.message()))
}
