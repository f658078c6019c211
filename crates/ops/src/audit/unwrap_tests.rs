use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::audit::census::tests::{envelope, id};
use crate::audit::dek::KmsApi;

/// Opens envelopes that hold a wrap under a key version it has; counts calls and the most
/// calls in flight at once.
#[derive(Default)]
struct FakeOpener {
    has: BTreeSet<KeyVersionId>,
    opened: Mutex<Vec<Vec<u8>>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeOpener {
    fn with(has: &[KeyVersionId]) -> Self {
        FakeOpener {
            has: has.iter().cloned().collect(),
            ..FakeOpener::default()
        }
    }
}

impl EnvelopeOpener for FakeOpener {
    fn open<'a>(&'a self, dek: &'a StoredDek) -> BoxFuture<'a, Result<(), UnwrapFailure>> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.opened
                .lock()
                .expect("no test panics while holding it")
                .push(dek.ciphertext.clone());
            let envelope =
                polykms_core::envelope::Envelope::decode(&dek.ciphertext, &dek.annotations)
                    .map_err(|e| UnwrapFailure {
                        kind: "invalid_envelope".into(),
                        message: e.to_string(),
                    })?;
            // Any one wrap is enough, as Decrypt tries each.
            if envelope
                .wraps
                .iter()
                .any(|w| self.has.contains(&id(&w.backend, &w.key_version)))
            {
                Ok(())
            } else {
                Err(UnwrapFailure {
                    kind: "key_unavailable".into(),
                    message: format!("backend {}: key version gone", envelope.wraps[0].backend),
                })
            }
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime builds in tests")
}

const FAST: UnwrapSettings = UnwrapSettings {
    qps: 0.0,
    concurrency: 4,
};

/// Objects under key k1 (KMS v2: 7 objects, one envelope) and k2 (3 objects, one envelope).
fn two_key_versions() -> Census {
    let (k1, k2) = (envelope(&[("local", "k1")]), envelope(&[("local", "k2")]));
    let mut c = Census::keeping_requests();
    for i in 0..7 {
        c.add(
            format!("/registry/secrets/app/old-{i}").as_bytes(),
            k1.clone(),
            "secrets",
        );
    }
    for i in 0..3 {
        c.add(
            format!("/registry/secrets/app/new-{i}").as_bytes(),
            k2.clone(),
            "secrets",
        );
    }
    c
}

#[test]
fn each_distinct_envelope_is_unwrapped_once_and_every_object_is_readable_with_both_keys() {
    let census = two_key_versions();
    let opener = FakeOpener::with(&[id("local", "k1"), id("local", "k2")]);
    let report = runtime()
        .block_on(unwrap_all(&census, &opener, FAST))
        .expect("valid settings");
    assert!(report.passed(), "{report:?}");
    assert_eq!((report.dek_envelopes, report.unwrap_calls), (2, 2));
    assert_eq!(report.readable_objects, 10);
    assert_eq!(opener.opened.lock().expect("not poisoned").len(), 2);
}

#[test]
fn without_the_older_key_its_objects_are_listed_by_key_version_with_counts_and_names() {
    let census = two_key_versions();
    let opener = FakeOpener::with(&[id("local", "k2")]);
    let report = runtime()
        .block_on(unwrap_all(&census, &opener, FAST))
        .expect("valid settings");
    assert!(!report.passed());
    assert_eq!((report.readable_objects, report.unreadable_objects), (3, 7));
    let [group] = report.unreadable.as_slice() else {
        panic!("one group: {:?}", report.unreadable);
    };
    assert_eq!(group.key_versions, [id("local", "k1")]);
    assert_eq!((group.objects, group.dek_envelopes), (7, 1));
    assert_eq!(group.reasons["key_unavailable"], 1);
    assert_eq!(group.first_objects.len(), FIRST_OBJECTS);
    assert_eq!(group.first_objects[0], "/registry/secrets/app/old-0");
    let table = report.to_table();
    assert!(
        table.contains("UNREADABLE under local k1: 7 object(s)"),
        "{table}"
    );
    assert!(table.contains("... and 2 more"), "{table}");
    assert!(table.contains("key version gone"), "{table}");
}

#[test]
fn an_envelope_with_several_wraps_is_readable_through_any_one() {
    let mut census = Census::keeping_requests();
    census.add(
        b"/k/1",
        envelope(&[("aws", "v1"), ("vault", "3")]),
        "secrets",
    );
    let opener = FakeOpener::with(&[id("vault", "3")]);
    let report = runtime()
        .block_on(unwrap_all(&census, &opener, FAST))
        .expect("valid settings");
    assert!(report.passed(), "{report:?}");
}

#[test]
fn kms_v1_values_are_unwrapped_one_per_object_within_qps_and_concurrency() {
    let mut census = Census::keeping_requests();
    for i in 0..6 {
        let mut dek = envelope(&[("local", "k1")]);
        dek.api = KmsApi::V1;
        dek.key_id = None;
        census.add(format!("/k/{i}").as_bytes(), dek, "secrets");
    }
    let opener = FakeOpener::with(&[id("local", "k1")]);
    let started = Instant::now();
    let settings = UnwrapSettings {
        qps: 20.0,
        concurrency: 2,
    };
    let report = runtime()
        .block_on(unwrap_all(&census, &opener, settings))
        .expect("valid settings");
    // Six calls 50 ms apart: the last starts 250 ms after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((report.unwrap_calls, report.readable_objects), (6, 6));
    assert!(opener.max_in_flight.load(Ordering::SeqCst) <= 2);
}

#[test]
fn deks_that_are_not_polykms_envelopes_are_unreadable_without_a_call() {
    let mut census = Census::keeping_requests();
    let foreign = StoredDek {
        api: KmsApi::V2,
        ciphertext: b"\x0a\x20vault:v1:abc".to_vec(),
        annotations: Default::default(),
        key_id: Some("vault-key".into()),
    };
    census.add(b"/k/foreign", foreign, "secrets");
    let opener = FakeOpener::default();
    let report = runtime()
        .block_on(unwrap_all(&census, &opener, FAST))
        .expect("valid settings");
    assert_eq!((report.unwrap_calls, report.unreadable_objects), (0, 1));
    assert!(report.unreadable[0].key_versions.is_empty());
    assert_eq!(report.unreadable[0].reasons["not_polykms"], 1);
    assert!(report.to_table().contains("(not polykms envelopes)"));
}

#[test]
fn nothing_to_unwrap_does_not_pass() {
    let report = runtime()
        .block_on(unwrap_all(
            &Census::keeping_requests(),
            &FakeOpener::default(),
            FAST,
        ))
        .expect("valid settings");
    assert!(!report.passed());
}

#[test]
fn bad_rates_are_config_errors_naming_the_flag() {
    for (settings, flag) in [
        (
            UnwrapSettings {
                qps: -1.0,
                concurrency: 1,
            },
            "--qps",
        ),
        (
            UnwrapSettings {
                qps: f64::NAN,
                concurrency: 1,
            },
            "--qps",
        ),
        (
            UnwrapSettings {
                qps: 1e-300,
                concurrency: 1,
            },
            "--qps",
        ),
        (
            UnwrapSettings {
                qps: 5.0,
                concurrency: 0,
            },
            "--concurrency",
        ),
    ] {
        match settings.validate() {
            Err(AuditError::Config(m)) => assert!(m.contains(flag), "{m}"),
            other => panic!("{settings:?}: {other:?}"),
        }
    }
    assert!(
        UnwrapSettings {
            qps: 0.0,
            concurrency: 1
        }
        .validate()
        .is_ok()
    );
}
