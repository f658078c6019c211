//! Logged-in sessions kept open between calls, each with the module generation it was opened
//! in: a session of an older generation is never used, nor closed, again.

use std::sync::Mutex;

use cryptoki::session::Session;

struct IdleSession {
    session: Session,
    generation: u64,
}

impl IdleSession {
    /// Drops the session without C_CloseSession. Only for a session of an older generation:
    /// its handle died with that generation and may now name another backend's session, which
    /// closing it would close.
    fn forget(self) {
        std::mem::forget(self.session);
    }
}

/// The idle sessions of one backend.
#[derive(Default)]
pub(crate) struct IdleSessions {
    idle: Mutex<Vec<IdleSession>>,
}

impl IdleSessions {
    /// An idle session of `generation`, forgetting those of older ones on the way.
    pub(crate) fn take(&self, generation: u64) -> Option<Session> {
        let mut idle = self.lock();
        while let Some(s) = idle.pop() {
            if s.generation == generation {
                return Some(s.session);
            }
            s.forget();
        }
        None
    }

    pub(crate) fn give_back(&self, session: Session, generation: u64) {
        self.lock().push(IdleSession {
            session,
            generation,
        });
    }

    /// Empties the pool: closes the sessions of `current`, forgets the rest. The caller holds
    /// the module (entered in generation `current`), so that no re-initialization runs under
    /// C_CloseSession.
    pub(crate) fn close(&self, current: u64) {
        for s in std::mem::take(&mut *self.lock()) {
            if s.generation == current {
                drop(s.session);
            } else {
                s.forget();
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The module's handles of the idle sessions.
    #[cfg(test)]
    pub(crate) fn handles(&self) -> Vec<std::os::raw::c_ulong> {
        self.lock().iter().map(|s| s.session.handle()).collect()
    }

    /// Whether every idle session is still a live session of the module; the caller holds
    /// the module.
    #[cfg(test)]
    pub(crate) fn all_answer(&self) -> bool {
        self.lock()
            .iter()
            .all(|s| s.session.get_session_info().is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleSession>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
