//! Optional bounded cache of unwrapped seeds (off by default).
//!
//! The apiserver already caches DEKs; this helps when several apiservers or restarts ask for
//! the same seed within the TTL. Entries hold `SecretBytes`, zeroized when evicted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Size and lifetime of the unwrap cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub capacity: usize,
    pub ttl: Duration,
}

type Entries<T> = HashMap<[u8; 32], (T, Instant)>;

/// Unwrapped seeds by request digest, bounded in count and age.
#[derive(Debug)]
pub struct UnwrapCache<T> {
    settings: CacheSettings,
    entries: Mutex<Entries<T>>,
}

impl<T: Clone> UnwrapCache<T> {
    pub fn new(settings: CacheSettings) -> Self {
        UnwrapCache {
            settings,
            entries: Mutex::new(HashMap::with_capacity(settings.capacity.min(4096))),
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<T> {
        let mut map = self.entries.lock().expect("cache lock is never poisoned");
        match map.get(key) {
            Some((value, at)) if at.elapsed() < self.settings.ttl => Some(value.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: [u8; 32], value: T) {
        if self.settings.capacity == 0 {
            return;
        }
        let mut map = self.entries.lock().expect("cache lock is never poisoned");
        if map.len() >= self.settings.capacity && !map.contains_key(&key) {
            let ttl = self.settings.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.settings.capacity {
                // Still full: drop the oldest entry.
                if let Some(oldest) = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(key, (value, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .expect("cache lock is never poisoned")
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use polykms_backend::SecretBytes;

    use super::*;

    fn secret(b: u8) -> Arc<SecretBytes> {
        Arc::new(SecretBytes::copy_from(&[b; 32]))
    }

    #[test]
    fn bounded_by_capacity_evicting_oldest() {
        let c = UnwrapCache::new(CacheSettings {
            capacity: 2,
            ttl: Duration::from_secs(60),
        });
        c.insert([1; 32], secret(1));
        c.insert([2; 32], secret(2));
        c.insert([3; 32], secret(3));
        assert_eq!(c.len(), 2);
        assert!(c.get(&[1; 32]).is_none());
        assert_eq!(c.get(&[3; 32]).unwrap().expose(), &[3; 32]);
    }

    #[test]
    fn entries_expire_after_ttl() {
        let c = UnwrapCache::new(CacheSettings {
            capacity: 8,
            ttl: Duration::from_millis(20),
        });
        c.insert([1; 32], secret(1));
        assert!(c.get(&[1; 32]).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.get(&[1; 32]).is_none());
        assert!(c.is_empty());
    }
}
