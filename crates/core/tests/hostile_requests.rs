//! Hostile requests against the KMS services, called in process through their tonic traits
//! (what the server runs once a request is decoded): random field sizes from 0 to 4 MiB,
//! random annotations and `grpc-timeout` headers, mutated valid ciphertexts, and raw protobuf
//! bytes with invalid UTF-8 in string fields. Every call must end in an answer or an error
//! status of an expected code, never a panic, and must not allocate beyond a bound linear in
//! its input. Case counts are sized for CI; `PROPTEST_CASES=N` runs N cases per property.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use polykms_core::proto::v1beta1::key_management_service_server::KeyManagementService as V1;
use polykms_core::proto::v2::key_management_service_server::KeyManagementService as V2;
use polykms_core::proto::{v1beta1, v2};
use polykms_core::service_v1::KmsV1Beta1;
use polykms_core::service_v2::KmsV2;
use polykms_core::{Keyring, Metrics, NamedBackend, Plugin, PluginSettings};
use polykms_local::{LocalBackend, LocalConfig, generate_key_file};
use proptest::prelude::*;

mod common;
use common::PaddedBackend;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use prost::Message;
use tonic::{Code, Request, Status};

/// Counts this thread's live heap bytes and their peak, so a property can bound what one
/// call allocates. Per thread, so properties run in parallel; each runs its services on a
/// current-thread runtime, where the calls allocate.
struct CountingAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(by: isize) {
    // `try_with`: the counters may already be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + by;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` unchanged and only updates counters; the
// thread-local counters are `const`-initialised `Cell`s, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        grew(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Largest input a property sends in one field.
const MAX_FIELD: usize = 4 * 1024 * 1024;
/// What a call may allocate beyond a few copies of its input (an error message may quote a
/// field): copies of the ≤ 1 KiB envelope, the response, tonic's metadata, bookkeeping.
const ALLOCATION_SLACK: usize = 256 * 1024;

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fails the test with the reason and the start of the failing input (inputs reach 4 MiB).
fn check<T: std::fmt::Debug>(result: Result<(), TestError<T>>) {
    if let Err(e) = result {
        let shown = format!("{e:?}");
        let cut = shown
            .char_indices()
            .nth(2000)
            .map_or(shown.len(), |(i, _)| i);
        panic!("{} (input shortened)", &shown[..cut]);
    }
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// A plugin over `local` plus two padded backends, a valid v2 ciphertext (with annotations)
/// of `SEED`, and the runtime the services run on.
struct Fixture {
    rt: tokio::runtime::Runtime,
    v2: KmsV2,
    v1: KmsV1Beta1,
    valid: v2::EncryptResponse,
    _dir: tempfile::TempDir,
}

const SEED: [u8; 32] = [0x42; 32];

fn local_backend(dir: &std::path::Path, file: &str) -> LocalBackend {
    let path = dir.join(file);
    generate_key_file(&path).expect("a fresh temp dir takes a key file");
    LocalBackend::from_config(&LocalConfig {
        key_files: vec![path],
        generate_if_missing: false,
    })
    .expect("a freshly generated key file loads")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut backends = vec![NamedBackend {
        name: "local".into(),
        backend: Arc::new(local_backend(dir.path(), "local.key")),
    }];
    for name in ["padded-a", "padded-b"] {
        backends.push(NamedBackend {
            name: name.into(),
            backend: Arc::new(PaddedBackend {
                inner: local_backend(dir.path(), &format!("{name}.key")),
                pad: 600,
            }),
        });
    }
    let with: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
    // v1beta1 has no annotations: its service runs on the local backend alone.
    let single = vec![backends[0].clone()];
    let (v2, v1, valid) = rt.block_on(async {
        let start = |backends, with: Vec<String>| async move {
            let metrics = Arc::new(Metrics::new());
            let ring = Keyring::new(backends, &with, metrics.clone()).expect("a valid keyring");
            Plugin::start(PluginSettings::new("hostile"), ring, metrics).await
        };
        let v2 = KmsV2::new(start(backends, with).await);
        let v1 = KmsV1Beta1::new(start(single, vec!["local".into()]).await);
        let req = v2::EncryptRequest {
            plaintext: SEED.to_vec(),
            uid: "seed".into(),
        };
        let valid = v2
            .encrypt(Request::new(req))
            .await
            .expect("encrypt works")
            .into_inner();
        (v2, v1, valid)
    });
    assert!(
        !valid.annotations.is_empty(),
        "the fixture must exercise annotations"
    );
    Fixture {
        rt,
        v2,
        v1,
        valid,
        _dir: dir,
    }
}

/// Bytes of a random size up to 4 MiB (mostly small), filled from a random pattern.
fn blob() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        400 => 0usize..64,
        300 => 0usize..2048,
        20 => 0usize..70_000,
        1 => 0usize..=MAX_FIELD,
    ];
    (len, prop::collection::vec(any::<u8>(), 1..32)).prop_map(|(len, pattern)| {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = pattern.len().min(len - out.len());
            out.extend_from_slice(&pattern[..n]);
        }
        out
    })
}

/// A string of a random size up to 4 MiB, any Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        400 => prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
        100 => "[a-z0-9-]{0,70}",
        10 => (0usize..70_000 / 4, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        1 => (0usize..MAX_FIELD / 4, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
    ]
}

fn annotations() -> impl Strategy<Value = HashMap<String, Vec<u8>>> {
    let key = prop_oneof![
        "wrap-[0-9]{1,2}\\.polykms\\.io",
        "[a-z]{1,8}\\.[a-z]{2,5}",
        prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
    ];
    prop::collection::hash_map(key, blob(), 0..6)
}

/// A `grpc-timeout` header: absent, well-formed (tiny to huge) or junk.
fn timeout() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        2 => (0u32..100_000_000, prop::sample::select(vec!['H', 'M', 'S', 'm', 'u', 'n']))
            .prop_map(|(n, u)| Some(format!("{n}{u}"))),
        1 => "[ -~]{0,12}".prop_map(Some),
    ]
}

fn with_timeout<T>(msg: T, timeout: &Option<String>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = timeout.as_deref().and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert("grpc-timeout", t);
    }
    req
}

/// Whether a call with this header may run out of time (then Unavailable or DeadlineExceeded
/// are honest answers): a parsed timeout under a second.
fn short_deadline(timeout: &Option<String>) -> bool {
    timeout
        .as_deref()
        .and_then(polykms_core::grpc_timeout::parse)
        .is_some_and(|d| d < std::time::Duration::from_secs(1))
}

/// Runs one call, checking its allocations stay within `input` bytes plus slack.
fn call<T>(fx: &Fixture, input: usize, f: impl Future<Output = T>) -> Result<T, TestCaseError> {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = fx.rt.block_on(f);
    let grown = PEAK.with(Cell::get).saturating_sub(before).max(0) as usize;
    prop_assert!(
        grown <= 16 * input + ALLOCATION_SLACK,
        "a call with {input} input bytes allocated {grown} bytes"
    );
    Ok(out)
}

fn expect_code(status: &Status, allowed: &[Code]) -> Result<(), TestCaseError> {
    prop_assert!(allowed.contains(&status.code()), "unexpected {status:?}");
    Ok(())
}

fn map_bytes(m: &HashMap<String, Vec<u8>>) -> usize {
    m.iter().map(|(k, v)| k.len() + v.len()).sum()
}

#[test]
fn v2_random_requests_get_answers_or_clean_errors() {
    let fx = fixture();
    type Enc = (Vec<u8>, String);
    type Dec = (Vec<u8>, String, String, HashMap<String, Vec<u8>>);
    let encrypt =
        (blob(), text(), timeout()).prop_map(|(p, u, t)| (None::<Dec>, Some::<Enc>((p, u)), t));
    let decrypt = (blob(), text(), text(), annotations(), timeout())
        .prop_map(|(c, u, k, a, t)| (Some::<Dec>((c, u, k, a)), None::<Enc>, t));
    check(
        runner(30_000).run(&prop_oneof![encrypt, decrypt], |(dec, enc, t)| {
            let mut allowed = vec![Code::InvalidArgument, Code::FailedPrecondition];
            if short_deadline(&t) {
                allowed.extend([Code::Unavailable, Code::DeadlineExceeded]);
            }
            if let Some((plaintext, uid)) = enc {
                let size = plaintext.len() + uid.len();
                let ok_size = (1..=256).contains(&plaintext.len());
                let req = with_timeout(v2::EncryptRequest { plaintext, uid }, &t);
                match call(&fx, size, fx.v2.encrypt(req))? {
                    Ok(r) => prop_assert!(ok_size && r.get_ref().key_id == fx.valid.key_id),
                    Err(s) => expect_code(&s, &allowed)?,
                }
            }
            if let Some((ciphertext, uid, key_id, annotations)) = dec {
                let size = ciphertext.len() + uid.len() + key_id.len() + map_bytes(&annotations);
                let msg = v2::DecryptRequest {
                    ciphertext,
                    uid,
                    key_id,
                    annotations,
                };
                match call(&fx, size, fx.v2.decrypt(with_timeout(msg, &t)))? {
                    Ok(r) => prop_assert_eq!(r.into_inner().plaintext, SEED.to_vec()),
                    Err(s) => expect_code(&s, &allowed)?,
                }
            }
            let status = call(&fx, 0, fx.v2.status(with_timeout(v2::StatusRequest {}, &t)))?;
            prop_assert_eq!(
                status.map(|s| s.into_inner().healthz).ok(),
                Some("ok".to_string())
            );
            Ok(())
        }),
    );
}

/// One edit of a valid Decrypt request.
fn mutated_decrypt(valid: &v2::EncryptResponse) -> impl Strategy<Value = v2::DecryptRequest> {
    let base = v2::DecryptRequest {
        ciphertext: valid.ciphertext.clone(),
        uid: "mutant".into(),
        key_id: valid.key_id.clone(),
        annotations: valid.annotations.clone(),
    };
    let keys: Vec<String> = valid.annotations.keys().cloned().collect();
    let edits = prop::collection::vec(
        (
            0u8..7,
            any::<usize>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..8),
        ),
        1..4,
    );
    edits.prop_map(move |edits| {
        let mut r = base.clone();
        for (what, i, b, extra) in edits {
            let ct = &mut r.ciphertext;
            let n = ct.len().max(1);
            match what {
                0 if !ct.is_empty() => ct[i % n] ^= b | 1,
                1 => ct.truncate(i % n),
                2 => {
                    let at = i % (ct.len() + 1);
                    ct.splice(at..at, extra);
                }
                3 if !r.key_id.is_empty() => {
                    let mut k = r.key_id.clone().into_bytes();
                    let at = i % k.len();
                    k[at] = b'0' + (b % 10);
                    r.key_id = String::from_utf8_lossy(&k).into_owned();
                }
                4 => {
                    let key = &keys[i % keys.len()];
                    if let Some(v) = r.annotations.get_mut(key) {
                        let at = i % v.len().max(1);
                        if let Some(byte) = v.get_mut(at) {
                            *byte ^= b | 1;
                        }
                    }
                }
                5 => {
                    r.annotations.remove(&keys[i % keys.len()]);
                }
                _ => {
                    r.annotations
                        .insert(format!("wrap-{}.polykms.io", i % 10), extra);
                }
            }
        }
        r
    })
}

#[test]
fn v2_mutated_ciphertexts_never_decrypt_to_another_plaintext() {
    let fx = fixture();
    check(runner(100_000).run(&mutated_decrypt(&fx.valid), |req| {
        // key_id covers every wrap's backend and key version; annotation keys must match
        // the envelope exactly. Edits of wrapped bytes (inline or in an annotation) may
        // still decrypt through another, intact wrap: any one wrap suffices by design.
        let same_structure = req.key_id == fx.valid.key_id
            && req.annotations.len() == fx.valid.annotations.len()
            && req
                .annotations
                .keys()
                .all(|k| fx.valid.annotations.contains_key(k));
        match call(&fx, 4096, fx.v2.decrypt(Request::new(req)))? {
            Ok(r) => {
                prop_assert!(
                    same_structure,
                    "an edit of key_id or annotation keys decrypted"
                );
                prop_assert_eq!(r.into_inner().plaintext, SEED.to_vec());
            }
            Err(s) => expect_code(&s, &[Code::InvalidArgument])?,
        }
        Ok(())
    }));
}

#[test]
fn v1beta1_random_requests_get_answers_or_clean_errors() {
    let fx = fixture();
    let version = prop_oneof![3 => Just("v1beta1".to_string()), 1 => text()];
    check(
        runner(50_000).run(&(version, blob(), 0u8..3), |(version, bytes, method)| {
            let size = version.len() + bytes.len();
            let right_version = version == "v1beta1";
            let result = match method {
                0 => call(
                    &fx,
                    size,
                    fx.v1
                        .version(Request::new(v1beta1::VersionRequest { version })),
                )?
                .map(|_| true),
                1 => {
                    let msg = v1beta1::EncryptRequest {
                        version,
                        plain: bytes.clone(),
                    };
                    let enc = call(&fx, size, fx.v1.encrypt(Request::new(msg)))?;
                    enc.map(|r| {
                        (1..=256).contains(&bytes.len()) && !r.into_inner().cipher.is_empty()
                    })
                }
                _ => {
                    let msg = v1beta1::DecryptRequest {
                        version,
                        cipher: bytes,
                    };
                    call(&fx, size, fx.v1.decrypt(Request::new(msg)))?.map(|_| false)
                }
            };
            match result {
                // Only a right version with a 1-256 byte seed encrypts; random bytes never decrypt.
                Ok(valid) => prop_assert!(right_version && (method == 0 || valid)),
                Err(s) => expect_code(&s, &[Code::InvalidArgument, Code::FailedPrecondition])?,
            }
            Ok(())
        }),
    );
}

/// Protobuf wire bytes built field by field: any field number and wire type, lengths that
/// lie, and invalid UTF-8 where strings belong.
fn raw_message() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        1u32..6,
        0u8..6,
        prop_oneof![blob(), Just(vec![0xff, 0xfe, 0xc0])],
        any::<u64>(),
    );
    prop::collection::vec(field, 0..6).prop_map(|fields| {
        let mut out = Vec::new();
        for (number, wire, payload, n) in fields {
            prost::encoding::encode_key(number, wire_type(wire), &mut out);
            match wire {
                0 => prost::encoding::encode_varint(n, &mut out),
                1 => out.extend_from_slice(&n.to_le_bytes()),
                5 => out.extend_from_slice(&n.to_le_bytes()[..4]),
                2 => {
                    prost::encoding::encode_varint(payload.len() as u64, &mut out);
                    out.extend_from_slice(&payload);
                }
                // A length that claims more than follows.
                _ => prost::encoding::encode_varint(n | 1 << 40, &mut out),
            }
        }
        out
    })
}

fn wire_type(w: u8) -> prost::encoding::WireType {
    use prost::encoding::WireType::*;
    [
        Varint,
        SixtyFourBit,
        LengthDelimited,
        StartGroup,
        LengthDelimited,
        ThirtyTwoBit,
    ][w as usize]
}

#[test]
fn raw_protobuf_requests_decode_to_errors_or_clean_answers() {
    let fx = fixture();
    let allowed = [Code::InvalidArgument, Code::FailedPrecondition];
    check(runner(80_000).run(&raw_message(), |bytes| {
        let size = bytes.len();
        if let Ok(m) = v2::DecryptRequest::decode(bytes.as_slice())
            && let Err(s) = call(&fx, size, fx.v2.decrypt(Request::new(m)))?
        {
            expect_code(&s, &allowed)?;
        }
        if let Ok(m) = v2::EncryptRequest::decode(bytes.as_slice())
            && let Err(s) = call(&fx, size, fx.v2.encrypt(Request::new(m)))?
        {
            expect_code(&s, &allowed)?;
        }
        if let Ok(m) = v1beta1::DecryptRequest::decode(bytes.as_slice())
            && let Err(s) = call(&fx, size, fx.v1.decrypt(Request::new(m)))?
        {
            expect_code(&s, &allowed)?;
        }
        Ok(())
    }));
}

#[test]
fn invalid_utf8_in_string_fields_is_a_decode_error() {
    // uid (2) and key_id (3) of DecryptRequest, uid of EncryptRequest, version of v1beta1.
    for (field, bytes) in [(2u8, [0xffu8, 0xfe]), (3, [0xc3, 0x28])] {
        let raw = [field << 3 | 2, 2, bytes[0], bytes[1]];
        assert!(
            v2::DecryptRequest::decode(&raw[..]).is_err(),
            "field {field}"
        );
    }
    assert!(v2::EncryptRequest::decode(&[0x12, 1, 0x80][..]).is_err());
    assert!(v1beta1::DecryptRequest::decode(&[0x0a, 1, 0xff][..]).is_err());
}
