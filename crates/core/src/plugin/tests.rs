//! Plugin behaviour with the local backend and a scriptable test backend.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use polykms_backend::{KeyEncryptionBackend, KeyVersion};
use polykms_local::{LocalBackend, LocalConfig, generate_key_file};

use super::*;
use crate::keyring::NamedBackend;

/// A backend that counts calls and can be made slow or failing. Wraps by XOR with a byte, so
/// it needs no key material; the wrapped form records the aad to check binding.
#[derive(Debug, Default)]
struct TestBackend {
    version: Mutex<String>,
    fail: AtomicBool,
    delay_ms: AtomicUsize,
    wraps: AtomicUsize,
    unwraps: AtomicUsize,
    probes: AtomicUsize,
    max_plaintext: AtomicUsize,
    /// Wrap-only (an escrow key without its private half): `can_unwrap` says no.
    wrap_only: AtomicBool,
    /// What `key_lifecycle` answers, and the versions it was last asked about.
    lifecycle: Mutex<polykms_backend::KeyLifecycle>,
    lifecycle_asked: Mutex<Vec<KeyVersion>>,
}

impl TestBackend {
    fn new(version: &str) -> Arc<Self> {
        let b = TestBackend::default();
        *b.version.lock().unwrap() = version.into();
        b.max_plaintext.store(usize::MAX, Ordering::SeqCst);
        Arc::new(b)
    }

    async fn maybe_fail(&self) -> Result<(), BackendError> {
        let d = self.delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d as u64)).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(BackendError::unavailable("test backend is down"));
        }
        Ok(())
    }
}

#[async_trait]
impl KeyEncryptionBackend for TestBackend {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn max_plaintext_len(&self) -> usize {
        self.max_plaintext.load(Ordering::SeqCst)
    }

    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        Ok(KeyVersion::new(self.version.lock().unwrap().clone()))
    }

    async fn probe(&self) -> Result<KeyVersion, BackendError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        self.maybe_fail().await?;
        self.key_version().await
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        self.maybe_fail().await?;
        let mut ct: Vec<u8> = plaintext.expose().iter().map(|b| b ^ 0x5a).collect();
        ct.extend_from_slice(aad);
        Ok(WrappedKey::new(self.key_version().await?, ct))
    }

    async fn key_lifecycle(
        &self,
        in_use: &[KeyVersion],
    ) -> Result<polykms_backend::KeyLifecycle, BackendError> {
        *self.lifecycle_asked.lock().unwrap() = in_use.to_vec();
        Ok(self.lifecycle.lock().unwrap().clone())
    }

    fn can_unwrap(&self) -> bool {
        !self.wrap_only.load(Ordering::SeqCst)
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.maybe_fail().await?;
        let ct = &wrapped.ciphertext;
        if ct.len() < aad.len() || &ct[ct.len() - aad.len()..] != aad {
            return Err(BackendError::wrong_key("aad mismatch"));
        }
        Ok(SecretBytes::new(
            ct[..ct.len() - aad.len()]
                .iter()
                .map(|b| b ^ 0x5a)
                .collect(),
        ))
    }
}

fn local(dir: &std::path::Path, file: &str) -> Arc<dyn KeyEncryptionBackend> {
    let path = dir.join(file);
    if !path.exists() {
        generate_key_file(&path).unwrap();
    }
    Arc::new(
        LocalBackend::from_config(&LocalConfig {
            key_files: vec![path],
            generate_if_missing: false,
        })
        .unwrap(),
    )
}

fn named(name: &str, backend: Arc<dyn KeyEncryptionBackend>) -> NamedBackend {
    NamedBackend {
        name: name.into(),
        backend,
    }
}

fn fast_settings() -> PluginSettings {
    let mut s = PluginSettings::new("test-cluster");
    s.probe = ProbeSettings {
        healthy_interval: Duration::from_millis(200),
        unhealthy_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
    };
    s
}

async fn plugin(backends: Vec<NamedBackend>, with: &[&str]) -> Arc<Plugin> {
    let metrics = Arc::new(Metrics::new());
    let with: Vec<String> = with.iter().map(|s| s.to_string()).collect();
    let ring = Keyring::new(backends, &with, metrics.clone()).unwrap();
    Plugin::start(fast_settings(), ring, metrics).await
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(3)
}

fn seed(b: u8) -> SecretBytes {
    SecretBytes::copy_from(&[b; 32])
}

fn no_annotations() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::new()
}

/// Decrypt of what `encrypt` returned, as the apiserver sends it back.
async fn decrypt_of(p: &Arc<Plugin>, enc: &Encrypted) -> Result<Arc<Unwrapped>, CoreError> {
    p.decrypt(
        &enc.ciphertext,
        Some(&enc.key_id),
        &enc.annotations,
        deadline(),
    )
    .await
}

#[tokio::test]
async fn encrypt_key_id_equals_status_key_id_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(vec![named("local", local(dir.path(), "a.key"))], &["local"]).await;
    let status = p.status();
    assert_eq!(status.healthz, "ok");
    assert_eq!(status.version, "v2");
    let enc = p.encrypt(seed(1), deadline()).await.unwrap();
    assert_eq!(enc.key_id, status.key_id);
    assert!(enc.ciphertext.len() <= 1024 && enc.annotations.is_empty());
    let out = decrypt_of(&p, &enc).await.unwrap();
    assert_eq!(out.seed, seed(1));
}

#[tokio::test]
async fn decrypt_rejects_bad_inputs_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(vec![named("local", local(dir.path(), "a.key"))], &["local"]).await;
    let enc = p.encrypt(seed(2), deadline()).await.unwrap();
    let kid = Some(enc.key_id.as_str());
    let mut tampered = enc.ciphertext.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (vec![], kid),
        (vec![0; 1025], kid),
        (enc.ciphertext.clone(), Some("")),
        (
            enc.ciphertext.clone(),
            Some("pk1-00000000000000000000000000000000"),
        ),
        (tampered, kid),
        (b"garbage".to_vec(), kid),
    ];
    for (ct, kid) in cases {
        let err = p
            .decrypt(&ct, kid, &no_annotations(), deadline())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    }
    let mut extra = no_annotations();
    extra.insert("x.polykms.io".into(), vec![1]);
    let err = p
        .decrypt(&enc.ciphertext, kid, &extra, deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for pt in [SecretBytes::new(vec![]), SecretBytes::new(vec![0; 257])] {
        assert_eq!(
            p.encrypt(pt, deadline()).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}

#[tokio::test]
async fn ciphertext_from_another_provider_name_does_not_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let key = local(dir.path(), "shared.key");
    let a = plugin(vec![named("local", key.clone())], &["local"]).await;
    let metrics = Arc::new(Metrics::new());
    let ring = Keyring::new(
        vec![named("local", key)],
        &["local".into()],
        metrics.clone(),
    )
    .unwrap();
    let b = Plugin::start(PluginSettings::new("other-cluster"), ring, metrics).await;
    let enc = a.encrypt(seed(3), deadline()).await.unwrap();
    let err = decrypt_of(&b, &enc).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn envelope_of_an_unconfigured_backend_is_failed_precondition_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = local(dir.path(), "a.key");
    let a = plugin(vec![named("old-store", key.clone())], &["old-store"]).await;
    let enc = a.encrypt(seed(4), deadline()).await.unwrap();
    let b = plugin(vec![named("new-store", key)], &["new-store"]).await;
    let err = decrypt_of(&b, &enc).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.to_string().contains("old-store"), "{err}");
}

#[tokio::test]
async fn migration_from_a_to_b_keeps_old_envelopes_decryptable() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (local(dir.path(), "a.key"), local(dir.path(), "b.key"));
    let p = plugin(vec![named("a", ka.clone()), named("b", kb.clone())], &["a"]).await;
    let old = p.encrypt(seed(5), deadline()).await.unwrap();
    let kid_a = p.status().key_id;
    let metrics = p.metrics().clone();
    p.reload(
        Keyring::new(
            vec![named("a", ka), named("b", kb.clone())],
            &["b".into()],
            metrics.clone(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let kid_b = p.status().key_id;
    assert_ne!(kid_a, kid_b);
    assert!(
        p.metrics()
            .encode()
            .contains("polykms_key_id_changes_total 1")
    );
    let new = p.encrypt(seed(6), deadline()).await.unwrap();
    assert_eq!(new.key_id, kid_b);
    assert_eq!(decrypt_of(&p, &old).await.unwrap().seed, seed(5));
    // Finally drop a: new envelopes still decrypt; old ones name a missing backend.
    p.reload(Keyring::new(vec![named("b", kb)], &["b".into()], metrics).unwrap())
        .await
        .unwrap();
    assert_eq!(decrypt_of(&p, &new).await.unwrap().seed, seed(6));
    let err = decrypt_of(&p, &old).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn multi_wrap_decrypts_through_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (local(dir.path(), "a.key"), local(dir.path(), "b.key"));
    let p = plugin(vec![named("a", ka), named("b", kb.clone())], &["a", "b"]).await;
    let enc = p.encrypt(seed(7), deadline()).await.unwrap();
    // A plugin that has only b (a's key files gone) still decrypts.
    let only_b = plugin(vec![named("b", kb)], &["b"]).await;
    let out = decrypt_of(&only_b, &enc).await.unwrap();
    assert_eq!(out.seed, seed(7));
}

#[tokio::test]
async fn multi_wrap_encrypt_fails_if_any_backend_fails() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestBackend::new("t1");
    let p = plugin(
        vec![
            named("a", local(dir.path(), "a.key")),
            named("t", t.clone()),
        ],
        &["a", "t"],
    )
    .await;
    t.fail.store(true, Ordering::SeqCst);
    let err = p.encrypt(seed(8), deadline()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.to_string().contains("backend t"));
}

#[tokio::test]
async fn concurrent_decrypts_of_four_envelopes_make_four_unwraps() {
    let t = TestBackend::new("v1");
    let p = plugin(vec![named("t", t.clone())], &["t"]).await;
    let mut envs = Vec::new();
    for i in 0..4 {
        envs.push(p.encrypt(seed(i), deadline()).await.unwrap());
    }
    t.delay_ms.store(100, Ordering::SeqCst);
    let before = t.unwraps.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let p = p.clone();
        let e = envs[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            p.decrypt(&e.ciphertext, Some(&e.key_id), &e.annotations, deadline())
                .await
                .map(|u| u.seed.expose().to_vec())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), vec![(i % 4) as u8; 32]);
    }
    assert_eq!(t.unwraps.load(Ordering::SeqCst) - before, 4);
    assert!(
        p.metrics()
            .encode()
            .contains("polykms_decrypt_coalesced_total 60")
    );
}

#[tokio::test]
async fn status_never_calls_the_backend() {
    let t = TestBackend::new("v1");
    let p = plugin(vec![named("t", t.clone())], &["t"]).await;
    let calls = |t: &TestBackend| {
        t.probes.load(Ordering::SeqCst)
            + t.wraps.load(Ordering::SeqCst)
            + t.unwraps.load(Ordering::SeqCst)
    };
    // Make probes slow so that none lands inside the loop by chance.
    t.delay_ms.store(0, Ordering::SeqCst);
    let before = calls(&t);
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        assert_eq!(p.status().healthz, "ok");
    }
    let spent = started.elapsed();
    // Probers run every 200 ms; allow only the probes that time could hold.
    let allowed = (spent.as_millis() / 180) as usize + 1;
    assert!(
        calls(&t) - before <= allowed,
        "{} calls in {spent:?}",
        calls(&t) - before
    );
    assert_eq!(
        t.wraps.load(Ordering::SeqCst) + t.unwraps.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn failing_backend_turns_status_unhealthy_and_back() {
    let t = TestBackend::new("v1");
    let p = plugin(vec![named("t", t.clone())], &["t"]).await;
    let kid = p.status().key_id;
    t.fail.store(true, Ordering::SeqCst);
    wait_for(|| p.status().healthz != "ok", Duration::from_secs(2)).await;
    let s = p.status();
    assert!(s.healthz.contains("test backend is down"), "{}", s.healthz);
    assert_eq!(s.key_id, kid, "an outage must not change key_id");
    assert!(!p.ready());
    t.fail.store(false, Ordering::SeqCst);
    // Unhealthy interval is 50 ms.
    wait_for(|| p.status().healthz == "ok", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn remote_rotation_changes_key_id_within_a_probe_interval() {
    let t = TestBackend::new("v1");
    let p = plugin(vec![named("t", t.clone())], &["t"]).await;
    let old = p.encrypt(seed(9), deadline()).await.unwrap();
    *t.version.lock().unwrap() = "v2".into();
    wait_for(|| p.status().key_id != old.key_id, Duration::from_secs(2)).await;
    let new = p.encrypt(seed(10), deadline()).await.unwrap();
    assert_eq!(new.key_id, p.status().key_id);
    assert_eq!(decrypt_of(&p, &old).await.unwrap().seed, seed(9));
    assert!(
        p.metrics()
            .encode()
            .contains("polykms_key_id_changes_total 1")
    );
}

#[tokio::test]
async fn retryable_errors_are_retried_within_the_deadline_then_reported_unavailable() {
    let t = TestBackend::new("v1");
    let p = plugin(vec![named("t", t.clone())], &["t"]).await;
    let enc = p.encrypt(seed(11), deadline()).await.unwrap();
    t.fail.store(true, Ordering::SeqCst);
    let before = t.unwraps.load(Ordering::SeqCst);
    let short = Instant::now() + Duration::from_millis(400);
    let started = std::time::Instant::now();
    let err = p
        .decrypt(&enc.ciphertext, Some(&enc.key_id), &no_annotations(), short)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "took {:?}",
        started.elapsed()
    );
    assert!(t.unwraps.load(Ordering::SeqCst) - before >= 2, "retried");
}

#[tokio::test]
async fn a_hanging_backend_fails_within_the_deadline() {
    let t = TestBackend::new("v1");
    let p = plugin(vec![named("t", t.clone())], &["t"]).await;
    let enc = p.encrypt(seed(12), deadline()).await.unwrap();
    t.delay_ms.store(10_000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = p
        .decrypt(
            &enc.ciphertext,
            Some(&enc.key_id),
            &no_annotations(),
            Instant::now() + Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

#[tokio::test]
async fn non_retryable_errors_are_not_retried() {
    let t = TestBackend::new("v1");
    let p = plugin(vec![named("t", t.clone())], &["t"]).await;
    let enc = p.encrypt(seed(13), deadline()).await.unwrap();
    let env = Envelope::decode(&enc.ciphertext, &no_annotations()).unwrap();
    let mut w = env.wraps[0].clone();
    w.ciphertext.push(b'!'); // breaks the aad suffix: WrongKey
    let (ct, _) = envelope::seal(&[w], &seed(13)).unwrap();
    let before = t.unwraps.load(Ordering::SeqCst);
    let err = p
        .decrypt(&ct, None, &no_annotations(), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(t.unwraps.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test]
async fn reload_with_unhealthy_encrypt_backend_is_rejected_and_old_config_stays() {
    let t = TestBackend::new("v1");
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(vec![named("local", local(dir.path(), "a.key"))], &["local"]).await;
    let kid = p.status().key_id;
    t.fail.store(true, Ordering::SeqCst);
    let ring = Keyring::new(vec![named("t", t)], &["t".into()], p.metrics().clone()).unwrap();
    assert!(p.reload(ring).await.is_err());
    assert_eq!(p.status().key_id, kid);
    assert_eq!(p.status().healthz, "ok");
    assert!(
        p.metrics()
            .encode()
            .contains("polykms_config_reloads_total{outcome=\"failure\"} 1")
    );
}

#[tokio::test]
async fn unwrap_cache_answers_repeat_decrypts_without_the_backend() {
    let t = TestBackend::new("v1");
    let metrics = Arc::new(Metrics::new());
    let ring = Keyring::new(vec![named("t", t.clone())], &["t".into()], metrics.clone()).unwrap();
    let mut settings = fast_settings();
    settings.unwrap_cache = Some(CacheSettings {
        capacity: 16,
        ttl: Duration::from_secs(60),
    });
    let p = Plugin::start(settings, ring, metrics).await;
    let enc = p.encrypt(seed(14), deadline()).await.unwrap();
    for _ in 0..5 {
        decrypt_of(&p, &enc).await.unwrap();
    }
    assert_eq!(t.unwraps.load(Ordering::SeqCst), 1);
}

async fn cached_plugin(t: &Arc<TestBackend>, ttl: Duration) -> Arc<Plugin> {
    let metrics = Arc::new(Metrics::new());
    let ring = Keyring::new(vec![named("t", t.clone())], &["t".into()], metrics.clone()).unwrap();
    let mut settings = fast_settings();
    settings.unwrap_cache = Some(CacheSettings { capacity: 16, ttl });
    Plugin::start(settings, ring, metrics).await
}

#[tokio::test]
async fn a_reload_empties_the_unwrap_cache() {
    let (t, other) = (TestBackend::new("v1"), TestBackend::new("v1"));
    let p = cached_plugin(&t, Duration::from_secs(60)).await;
    let enc = p.encrypt(seed(15), deadline()).await.unwrap();
    decrypt_of(&p, &enc).await.unwrap();
    decrypt_of(&p, &enc).await.unwrap();
    assert_eq!(t.unwraps.load(Ordering::SeqCst), 1);

    // The backend that wrapped `enc` is removed: its cached seed must not decrypt any more.
    let ring = Keyring::new(
        vec![named("other", other)],
        &["other".into()],
        p.metrics().clone(),
    )
    .unwrap();
    p.reload(ring).await.unwrap();
    let err = decrypt_of(&p, &enc).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(t.unwraps.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cached_seeds_expire_and_are_purged_in_the_background() {
    let t = TestBackend::new("v1");
    let p = cached_plugin(&t, Duration::from_secs(1)).await;
    let enc = p.encrypt(seed(16), deadline()).await.unwrap();
    decrypt_of(&p, &enc).await.unwrap();
    assert_eq!(p.cached_seeds(), 1);
    // Nobody asks again; the purge timer alone empties the cache.
    wait_for(|| p.cached_seeds() == 0, Duration::from_secs(20)).await;
    decrypt_of(&p, &enc).await.unwrap();
    assert_eq!(t.unwraps.load(Ordering::SeqCst), 2);
}

async fn wait_for(mut cond: impl FnMut() -> bool, limit: Duration) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

mod integrity;
mod lifecycle;
