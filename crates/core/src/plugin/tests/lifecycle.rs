//! Key lifecycle: what the key store says of a backend's keys reaches health, Status and
//! metrics; a key set to go away that still works warns without turning Status unhealthy.

use std::time::{SystemTime, UNIX_EPOCH};

use polykms_backend::{KeyLifecycle, LifecycleFinding, LifecycleState};

use super::*;

fn scripted(t: &TestBackend, findings: Vec<LifecycleFinding>) {
    *t.lifecycle.lock().unwrap() = KeyLifecycle::of(findings);
}

async fn wait_for(p: &Arc<Plugin>, what: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let text = p.metrics().encode();
        if what(&text) || Instant::now() > until {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_key_that_cannot_wrap_makes_status_unhealthy_saying_why_and_what_undoes_it() {
    let a = TestBackend::new("a1");
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    scripted(
        &a,
        vec![
            LifecycleFinding::new(
                LifecycleState::PendingDeletion,
                "key-a",
                "CancelKeyDeletion",
            )
            .blocking()
            .at(at),
        ],
    );
    let p = plugin(vec![named("a", a.clone())], &["a"]).await;
    let status = p.status();
    assert_ne!(status.healthz, "ok");
    assert!(
        status.healthz.contains("scheduled for deletion")
            && status.healthz.contains("CancelKeyDeletion"),
        "{}",
        status.healthz
    );
    let text = p.metrics().encode();
    assert!(
        text.contains("polykms_key_lifecycle{backend=\"a\",state=\"pending_deletion\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("polykms_key_lifecycle{backend=\"a\",state=\"ok\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("polykms_key_deletion_timestamp_seconds{backend=\"a\"} 1800000000"),
        "{text}"
    );
    // Cancelled: healthy again within a probe interval, the timestamp gone.
    scripted(&a, vec![]);
    let text = wait_for(&p, |t| {
        t.contains("polykms_key_lifecycle{backend=\"a\",state=\"ok\"} 1")
    })
    .await;
    assert!(
        !text.contains("polykms_key_deletion_timestamp_seconds{"),
        "{text}"
    );
    let until = Instant::now() + Duration::from_secs(5);
    while p.status().healthz != "ok" && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.status().healthz, "ok");
}

#[tokio::test]
async fn a_key_set_to_go_away_that_still_works_warns_without_changing_status() {
    let a = TestBackend::new("a1");
    let soon = SystemTime::now() + Duration::from_secs(86_400);
    scripted(
        &a,
        vec![
            LifecycleFinding::new(
                LifecycleState::DeletionAllowed,
                "transit/k",
                "deletion_allowed=false",
            ),
            LifecycleFinding::new(LifecycleState::Expiring, "key-a", "extend exp").at(soon),
        ],
    );
    let p = plugin(vec![named("a", a.clone())], &["a"]).await;
    assert_eq!(p.status().healthz, "ok");
    let text = p.metrics().encode();
    for state in ["deletion_allowed", "expiring"] {
        assert!(
            text.contains(&format!(
                "polykms_key_lifecycle{{backend=\"a\",state=\"{state}\"}} 1"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("polykms_key_lifecycle{backend=\"a\",state=\"disabled\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("polykms_key_deletion_timestamp_seconds{backend=\"a\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn lifecycle_reads_cover_the_older_versions_decrypts_use_across_a_reload() {
    let a = TestBackend::new("a1");
    let p = plugin(vec![named("a", a.clone())], &["a"]).await;
    let old = p.encrypt(seed(1), deadline()).await.unwrap();
    *a.version.lock().unwrap() = "a2".into();
    let newer = p.encrypt(seed(2), deadline()).await.unwrap();
    decrypt_of(&p, &old).await.unwrap();
    decrypt_of(&p, &newer).await.unwrap();
    // A reload to a keyring with the same backend name keeps the versions in view.
    let metrics = p.metrics().clone();
    let ring = Keyring::new(vec![named("a", a.clone())], &["a".into()], metrics).unwrap();
    p.reload(ring).await.unwrap();
    let asked: Vec<String> = a
        .lifecycle_asked
        .lock()
        .unwrap()
        .iter()
        .map(|v| v.as_str().to_string())
        .collect();
    assert_eq!(asked, vec!["a1".to_string(), "a2".to_string()]);
}
