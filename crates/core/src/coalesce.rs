//! Single-flight for Decrypt: concurrent calls for the same envelope share one backend unwrap.
//!
//! At apiserver start every Secret read may ask for the same few seeds at once, and the
//! apiserver does not de-duplicate them. Every caller holds the same shared future, so a
//! caller that gives up does not cancel it for the others; its result goes to every waiter and
//! is then forgotten (a failure is never cached).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::CoreError;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type InFlight<T> = Shared<BoxFuture<'static, Result<T, CoreError>>>;

/// Identical in-flight unwraps, by a digest of the envelope and its annotations. `T` is what
/// every waiter receives (cheap to clone: an `Arc`).
#[derive(Debug, Clone)]
pub struct Coalescer<T: Clone> {
    inflight: Arc<Mutex<HashMap<[u8; 32], InFlight<T>>>>,
}

impl<T: Clone> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            inflight: Arc::default(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// Runs `unwrap` for `key` unless an identical one is in flight, in which case it waits for
    /// that one. Returns the result and whether it was shared.
    ///
    /// The first caller drives the unwrap on its own task (no spawn, no cross-thread wake-up on
    /// the common path); callers that join hold the same shared future, so if the first caller
    /// goes away, the others keep driving it to the end.
    pub async fn run<F>(&self, key: [u8; 32], unwrap: F) -> (Result<T, CoreError>, bool)
    where
        F: std::future::Future<Output = Result<T, CoreError>> + Send + 'static,
    {
        let (shared, joined) = {
            let mut map = self
                .inflight
                .lock()
                .expect("coalescer lock is never poisoned");
            match map.get(&key) {
                Some(existing) => (existing.clone(), true),
                None => {
                    let shared = unwrap.boxed().shared();
                    map.insert(key, shared.clone());
                    (shared, false)
                }
            }
        };
        if joined {
            return (shared.await, true);
        }
        // Removes the entry when the first caller finishes or is cancelled; a failure is
        // forgotten with it.
        let _leader = Leader {
            coalescer: self,
            key,
            shared: shared.clone(),
        };
        (shared.await, false)
    }

    /// Unwraps in flight now (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.inflight
            .lock()
            .expect("coalescer lock is never poisoned")
            .len()
    }
}

/// The first caller of an unwrap: on drop, forgets the in-flight entry it created (and only
/// that one: a newer unwrap for the same key may have replaced it).
struct Leader<'a, T: Clone> {
    coalescer: &'a Coalescer<T>,
    key: [u8; 32],
    shared: InFlight<T>,
}

impl<T: Clone> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        let mut map = self
            .coalescer
            .inflight
            .lock()
            .expect("coalescer lock is never poisoned");
        if map.get(&self.key).is_some_and(|f| f.ptr_eq(&self.shared)) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use polykms_backend::SecretBytes;

    use super::*;

    #[tokio::test]
    async fn concurrent_identical_calls_share_one_unwrap() {
        let c: Coalescer<Arc<SecretBytes>> = Coalescer::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let c = c.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                let key = [(i % 4) as u8; 32];
                c.run(key, async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Arc::new(SecretBytes::copy_from(&[key[0]; 32])))
                })
                .await
            }));
        }
        let mut joined = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            let (r, j) = t.await.unwrap();
            assert_eq!(r.unwrap().expose(), &[(i % 4) as u8; 32]);
            joined += j as usize;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(joined, 36);
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let c: Coalescer<Arc<SecretBytes>> = Coalescer::default();
        let (r, _) = c
            .run([1; 32], async {
                Err(CoreError::InvalidRequest("boom".into()))
            })
            .await;
        assert!(r.is_err());
        let (r, joined) = c
            .run([1; 32], async {
                Ok(Arc::new(SecretBytes::copy_from(b"ok")))
            })
            .await;
        assert!(r.is_ok());
        assert!(!joined);
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_cancel_the_shared_unwrap() {
        let c: Coalescer<Arc<SecretBytes>> = Coalescer::default();
        let first = {
            let c = c.clone();
            tokio::spawn(async move {
                c.run([2; 32], async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Arc::new(SecretBytes::copy_from(b"seed")))
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = {
            let c = c.clone();
            tokio::spawn(async move {
                c.run([2; 32], async {
                    Err(CoreError::InvalidRequest("not run".into()))
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let (r, joined) = second.await.unwrap();
        assert!(joined);
        assert_eq!(r.unwrap().expose(), b"seed");
    }
}
