//! Process hardening: no new privileges, no core dumps (they would hold keys), optional
//! locked memory.

use crate::config::SecurityConfig;

pub fn apply(config: &SecurityConfig) {
    // Always: nothing this process runs (a backend SDK, a PKCS#11 module) can gain privileges
    // through a setuid binary or file capabilities; Landlock requires it too.
    // SAFETY: a plain prctl with constant arguments; failure is reported through errno.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not set no_new_privs");
    }
    if config.disable_core_dumps {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls with valid arguments; failure is reported through errno.
        let ok = unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &zero) == 0
                && libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
        };
        if ok {
            tracing::debug!("core dumps disabled");
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not disable core dumps");
        }
    }
    if config.lock_memory {
        // SAFETY: mlockall only changes this process's paging; failure is reported through errno.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
            tracing::info!("memory locked");
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lock memory (needs CAP_IPC_LOCK or RLIMIT_MEMLOCK)");
        }
    }
}
