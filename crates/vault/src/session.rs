//! The current Vault token, kept valid: renewal at ~2/3 of its TTL (jittered), re-login when
//! renewal fails or max_ttl nears, re-read of a changed token file, one re-login on 403.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use polykms_backend::crypto::jitter;
use polykms_backend::{BackendError, ErrorKind};
use vaultrs::client::{Client as _, VaultClient};
use vaultrs::error::ClientError;

use crate::auth::{Authenticator, FileStamp, Grant};
use crate::client::HttpSetup;
use crate::error::classify;

/// A token this close to expiry is treated as expired.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// How often a token file is checked for changes, and non-expiring tokens revisited.
const FILE_POLL: Duration = Duration::from_secs(10);
const IDLE_POLL: Duration = Duration::from_secs(300);
/// Bounds of the back-off between failed logins.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A logged-in client: the token's grant and a vaultrs client that sends it.
pub(crate) struct Active {
    pub client: VaultClient,
    pub grant: Grant,
    /// Bumped on every login, so concurrent 403s trigger one re-login, not many.
    pub generation: u64,
}

/// Holds the current token and replaces it before it expires.
pub(crate) struct Session {
    setup: HttpSetup,
    auth: Authenticator,
    current: ArcSwapOption<Active>,
    login_lock: tokio::sync::Mutex<u64>,
    failures: AtomicU32,
}

impl Session {
    pub fn new(setup: HttpSetup, auth: Authenticator) -> Self {
        Session {
            setup,
            auth,
            current: ArcSwapOption::empty(),
            login_lock: tokio::sync::Mutex::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// Name of the auth method.
    pub fn method(&self) -> &'static str {
        self.auth.method()
    }

    /// Wall-clock expiry of the current token; `None` if none yet or it never expires.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.current
            .load()
            .as_ref()
            .and_then(|a| a.grant.expires_at())
    }

    /// A client with a token that is not expired, logging in if needed.
    pub async fn active(&self) -> Result<Arc<Active>, BackendError> {
        match self.current.load_full() {
            Some(a) if !a.grant.expired_within(EXPIRY_MARGIN) => Ok(a),
            seen => self.relogin(seen.map(|a| a.generation)).await,
        }
    }

    /// Logs in unless someone else already replaced generation `seen` meanwhile.
    async fn relogin(&self, seen: Option<u64>) -> Result<Arc<Active>, BackendError> {
        let mut generation = self.login_lock.lock().await;
        if let Some(current) = self.current.load_full()
            && Some(current.generation) != seen
            && !current.grant.expired_within(EXPIRY_MARGIN)
        {
            return Ok(current);
        }
        let grant = match self.auth.login(&self.setup).await {
            Ok(grant) => grant,
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.failures.store(0, Ordering::Relaxed);
        *generation += 1;
        tracing::info!(
            method = self.auth.method(),
            ttl_secs = grant.ttl.map(|t| t.as_secs()),
            renewable = grant.renewable,
            "vault: obtained token"
        );
        let active = Arc::new(Active {
            client: self.setup.client(Some(&grant.token)),
            grant,
            generation: *generation,
        });
        self.current.store(Some(active.clone()));
        Ok(active)
    }

    /// Runs `call` with the current token; on 401/403 logs in again once and retries once.
    pub async fn call<T, F, Fut>(&self, op: &str, call: F) -> Result<T, BackendError>
    where
        F: Fn(Arc<Active>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let active = self.active().await?;
        let generation = active.generation;
        match call(active).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let err = classify(op, &e);
                if err.kind() != ErrorKind::Unauthorized {
                    return Err(err);
                }
                tracing::debug!(op, "vault: permission denied; logging in again once");
                let fresh = self.relogin(Some(generation)).await?;
                call(fresh).await.map_err(|e| classify(op, &e))
            }
        }
    }

    /// One maintenance step; returns how long to sleep before the next.
    async fn maintain_once(&self) -> Duration {
        let Some(active) = self.current.load_full() else {
            return self.login_or_back_off().await;
        };
        if let Some(path) = self.auth.token_file()
            && FileStamp::of(path) != active.grant.source_stamp
        {
            tracing::info!(file = %path.display(), "vault: token file changed; re-reading");
            return self.forced_login(active.generation).await;
        }
        let Some(ttl) = active.grant.ttl else {
            return if self.auth.token_file().is_some() {
                FILE_POLL
            } else {
                IDLE_POLL
            };
        };
        let due = renew_point(ttl);
        let elapsed = active.grant.since.elapsed();
        if elapsed < due {
            let wait = due - elapsed;
            return if self.auth.token_file().is_some() {
                wait.min(FILE_POLL)
            } else {
                wait
            };
        }
        if active.grant.renewable {
            match self.renew(&active).await {
                Ok(wait) => return wait,
                Err(e) => {
                    tracing::warn!(error = %e, "vault: token renewal failed; logging in again")
                }
            }
        }
        self.forced_login(active.generation).await
    }

    /// renew-self; if the new lease is cut short by max_ttl, the next step logs in instead.
    async fn renew(&self, active: &Active) -> Result<Duration, BackendError> {
        let info = active
            .client
            .renew(None)
            .await
            .map_err(|e| classify("token renew-self", &e))?;
        let mut grant = Grant {
            token: active.grant.token.clone(),
            ttl: active.grant.ttl,
            initial_ttl: active.grant.initial_ttl,
            renewable: info.renewable,
            since: active.grant.since,
            since_wall: active.grant.since_wall,
            source_stamp: active.grant.source_stamp,
        };
        grant.renewed(info.lease_duration);
        let near_max_ttl = match (grant.ttl, grant.initial_ttl) {
            (Some(now), Some(initial)) => now < initial / 2,
            _ => false,
        };
        if near_max_ttl {
            // Renewing again would not extend it: log in at 2/3 of what is left.
            grant.renewable = false;
        }
        tracing::debug!(
            ttl_secs = grant.ttl.map(|t| t.as_secs()),
            "vault: token renewed"
        );
        let wait = grant.ttl.map_or(IDLE_POLL, renew_point);
        let renewed = Active {
            client: self.setup.client(Some(&grant.token)),
            grant,
            generation: active.generation,
        };
        // Under the lock so a concurrent re-login is not overwritten by an older token.
        let _guard = self.login_lock.lock().await;
        if self.current.load().as_ref().map(|a| a.generation) == Some(active.generation) {
            self.current.store(Some(Arc::new(renewed)));
        }
        Ok(wait)
    }

    async fn forced_login(&self, seen: u64) -> Duration {
        match self.relogin(Some(seen)).await {
            Ok(active) => next_wake(&active),
            Err(e) => {
                tracing::warn!(error = %e, "vault: login failed; will retry");
                self.back_off()
            }
        }
    }

    async fn login_or_back_off(&self) -> Duration {
        match self.relogin(None).await {
            Ok(active) => next_wake(&active),
            Err(e) => {
                tracing::warn!(error = %e, "vault: login failed; will retry");
                self.back_off()
            }
        }
    }

    /// Jittered exponential back-off after `failures` failed logins.
    fn back_off(&self) -> Duration {
        let n = self.failures.load(Ordering::Relaxed).clamp(1, 6);
        let base = (RETRY_MIN * 2u32.pow(n - 1)).min(RETRY_MAX);
        jitter(base, 0.5, 1.0)
    }
}

/// When to act on a token with lifetime `ttl`: ~2/3 of it, jittered down by up to 10 %.
fn renew_point(ttl: Duration) -> Duration {
    jitter(ttl * 2 / 3, 0.9, 1.0)
}

fn next_wake(active: &Active) -> Duration {
    active
        .grant
        .ttl
        .map_or(IDLE_POLL, renew_point)
        .max(Duration::from_millis(200))
}

/// Keeps the session's token fresh until the session is dropped.
pub(crate) fn spawn_maintenance(session: &Arc<Session>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Session> = Arc::downgrade(session);
    tokio::spawn(async move {
        loop {
            let Some(session) = weak.upgrade() else {
                return;
            };
            let wait = session.maintain_once().await;
            drop(session);
            tokio::time::sleep(wait).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_happens_around_two_thirds_of_the_ttl() {
        for _ in 0..100 {
            let at = renew_point(Duration::from_secs(30));
            assert!(
                at <= Duration::from_secs(20) && at >= Duration::from_secs(18),
                "{at:?}"
            );
        }
    }
}
