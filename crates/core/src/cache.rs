//! Bounded, short-lived cache of unwrapped seeds (on by default: 1024 entries, 30 s).
//!
//! When an apiserver starts it reads every Secret, and many of them share a DEK seed: the
//! concurrent Decrypts of one seed are joined by the single-flight coalescer, and this cache
//! answers the ones that arrive just after the first finished, so a restart costs one backend
//! call per seed rather than one per object. Entries hold `SecretBytes` (zeroized when dropped)
//! and expire a fixed TTL after the backend unwrapped them, however often they are read, which
//! bounds how long a revoked key keeps decrypting; `purge_expired` drops them on a timer even
//! when nobody asks, and the plugin clears the cache when a reload replaces the backends.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock (the real one unless a test pauses it).
use tokio::time::Instant;

/// Size and lifetime of the unwrap cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub capacity: usize,
    pub ttl: Duration,
}

#[derive(Debug)]
struct Entries<T> {
    values: HashMap<[u8; 32], (T, Instant)>,
    /// Keys by insertion time, oldest first: insertion time is expiry order, so expired and
    /// evicted entries both come off the front.
    order: VecDeque<([u8; 32], Instant)>,
    /// Bumped by `clear`: an unwrap that started before it must not insert after it.
    generation: u64,
}

/// Unwrapped seeds by request digest, bounded in count and age.
#[derive(Debug)]
pub struct UnwrapCache<T> {
    settings: CacheSettings,
    entries: Mutex<Entries<T>>,
}

impl<T: Clone> UnwrapCache<T> {
    pub fn new(settings: CacheSettings) -> Self {
        let reserve = settings.capacity.min(4096);
        UnwrapCache {
            settings,
            entries: Mutex::new(Entries {
                values: HashMap::with_capacity(reserve),
                order: VecDeque::with_capacity(reserve),
                generation: 0,
            }),
        }
    }

    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<T> {
        let mut entries = self.lock();
        let (value, at) = entries.values.get(key)?;
        if at.elapsed() < self.settings.ttl {
            return Some(value.clone());
        }
        // Expired; entries expire in insertion order, so this one goes with all older ones.
        self.drop_expired(&mut entries, Instant::now());
        None
    }

    /// The current generation; take it before unwrapping, give it to `insert`.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Adds an entry unless the cache was cleared since `generation` was taken; a key already
    /// present keeps its first value and expiry.
    pub fn insert(&self, key: [u8; 32], value: T, generation: u64) {
        if self.settings.capacity == 0 || self.settings.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.generation != generation {
            return;
        }
        self.drop_expired(&mut entries, now);
        if entries.values.contains_key(&key) {
            return;
        }
        while entries.values.len() >= self.settings.capacity {
            match entries.order.pop_front() {
                Some((oldest, _)) => {
                    entries.values.remove(&oldest);
                }
                None => break,
            }
        }
        entries.values.insert(key, (value, now));
        entries.order.push_back((key, now));
    }

    /// Drops every entry older than the TTL; returns how many remain.
    pub fn purge_expired(&self) -> usize {
        let mut entries = self.lock();
        self.drop_expired(&mut entries, Instant::now());
        entries.values.len()
    }

    /// Drops every entry, and refuses inserts of unwraps that started before.
    pub fn clear(&self) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.values.clear();
        entries.order.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        // A panic while holding the lock leaves the map consistent (no partial updates).
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_expired(&self, entries: &mut Entries<T>, now: Instant) {
        while let Some(&(key, at)) = entries.order.front() {
            if now.saturating_duration_since(at) < self.settings.ttl {
                break;
            }
            entries.order.pop_front();
            entries.values.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use polykms_backend::SecretBytes;
    use tokio::time::advance;

    use super::*;

    fn secret(b: u8) -> Arc<SecretBytes> {
        Arc::new(SecretBytes::copy_from(&[b; 32]))
    }

    fn cache(capacity: usize, ttl: Duration) -> UnwrapCache<Arc<SecretBytes>> {
        UnwrapCache::new(CacheSettings { capacity, ttl })
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bounded_by_capacity_evicting_oldest() {
        let c = cache(2, Duration::from_secs(60));
        c.insert([1; 32], secret(1), 0);
        c.insert([2; 32], secret(2), 0);
        c.insert([3; 32], secret(3), 0);
        assert_eq!(c.len(), 2);
        assert!(c.get(&[1; 32]).is_none());
        assert_eq!(c.get(&[3; 32]).unwrap().expose(), &[3; 32]);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_ttl() {
        let c = cache(8, 20 * MS);
        c.insert([1; 32], secret(1), 0);
        advance(19 * MS).await;
        assert!(c.get(&[1; 32]).is_some());
        advance(MS).await;
        assert!(c.get(&[1; 32]).is_none());
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_purged_without_being_asked_for() {
        let c = cache(8, 30 * MS);
        c.insert([1; 32], secret(1), 0);
        advance(40 * MS).await;
        c.insert([2; 32], secret(2), 0);
        // [1] expired and went when [2] was added; [2] goes once it expires too.
        assert_eq!(c.len(), 1);
        assert_eq!(c.purge_expired(), 1);
        advance(30 * MS).await;
        assert_eq!(c.purge_expired(), 0);
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_keeps_its_first_expiry_however_often_it_is_read_or_added() {
        let c = cache(8, 60 * MS);
        c.insert([1; 32], secret(1), 0);
        advance(35 * MS).await;
        assert!(c.get(&[1; 32]).is_some());
        c.insert([1; 32], secret(9), 0);
        assert_eq!(c.get(&[1; 32]).unwrap().expose(), &[1; 32]);
        advance(35 * MS).await;
        assert!(
            c.get(&[1; 32]).is_none(),
            "read and re-added, but older than the TTL"
        );
    }

    #[test]
    fn eviction_follows_insertion_order_and_clear_empties() {
        let c = cache(3, Duration::from_secs(60));
        for k in 1..=5u8 {
            c.insert([k; 32], secret(k), 0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&[2; 32]).is_none());
        assert!(c.get(&[3; 32]).is_some());
        assert!(c.get(&[5; 32]).is_some());
        c.clear();
        assert!(c.is_empty());
        assert!(c.get(&[5; 32]).is_none());
    }

    #[test]
    fn an_unwrap_started_before_a_clear_is_not_cached_after_it() {
        let c = cache(8, Duration::from_secs(60));
        let before = c.generation();
        c.clear();
        c.insert([1; 32], secret(1), before);
        assert!(c.get(&[1; 32]).is_none());
        c.insert([1; 32], secret(1), c.generation());
        assert!(c.get(&[1; 32]).is_some());
    }

    #[test]
    fn zero_capacity_or_ttl_caches_nothing() {
        for (capacity, ttl) in [(0, Duration::from_secs(60)), (8, Duration::ZERO)] {
            let c = cache(capacity, ttl);
            c.insert([1; 32], secret(1), 0);
            assert!(c.get(&[1; 32]).is_none());
            assert!(c.is_empty());
        }
    }
}
