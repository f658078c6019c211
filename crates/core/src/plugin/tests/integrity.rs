//! Envelope integrity through the plugin: version-2 commitments across wraps, no fall-through
//! after a failed commitment, legacy version-1 envelopes, per-backend plaintext bounds.

use super::*;

fn unwraps(t: &TestBackend) -> usize {
    t.unwraps.load(Ordering::SeqCst)
}

/// A plugin over two XOR test backends `a` and `b` (no integrity of their own: every altered
/// wrap still unwraps, to some other seed, so only the commitment can refuse it).
async fn two_xor() -> (Arc<TestBackend>, Arc<TestBackend>, Arc<Plugin>) {
    let (a, b) = (TestBackend::new("a1"), TestBackend::new("b1"));
    let p = plugin(
        vec![named("a", a.clone()), named("b", b.clone())],
        &["a", "b"],
    )
    .await;
    (a, b, p)
}

#[tokio::test]
async fn an_altered_wrap_is_refused_without_falling_through_to_the_next() {
    let (a, b, p) = two_xor().await;
    let enc = p.encrypt(seed(1), deadline()).await.unwrap();
    let env = Envelope::decode(&enc.ciphertext, &no_annotations()).unwrap();
    for (victim, len) in [
        (0, env.wraps[0].ciphertext.len()),
        (1, env.wraps[1].ciphertext.len()),
    ] {
        // Re-encode the same envelope with one wrap's first byte flipped, keeping the tag.
        let mut wraps = env.wraps.clone();
        wraps[victim].ciphertext[0] ^= 1;
        let (mut altered, _) = envelope::seal(&wraps, &seed(1)).unwrap();
        let tag_at = altered.len() - envelope::COMMITMENT_LEN;
        altered[tag_at..].copy_from_slice(&enc.ciphertext[tag_at..]);
        assert_eq!(len, wraps[victim].ciphertext.len());
        let (ua, ub) = (unwraps(&a), unwraps(&b));
        let err = p
            .decrypt(&altered, Some(&enc.key_id), &no_annotations(), deadline())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains("ciphertext was altered"), "{err}");
        // a (healthy, first in the envelope) unwrapped; its seed did not verify; b was never
        // asked for a second opinion.
        assert_eq!(
            (unwraps(&a) - ua, unwraps(&b) - ub),
            (1, 0),
            "wrap {victim}"
        );
    }
    // The intact envelope still decrypts.
    assert_eq!(decrypt_of(&p, &enc).await.unwrap().seed, seed(1));
}

#[tokio::test]
async fn a_wrap_swapped_for_a_wrap_of_another_seed_is_refused_by_every_node() {
    let (a, b, p) = two_xor().await;
    let enc = p.encrypt(seed(1), deadline()).await.unwrap();
    let env = Envelope::decode(&enc.ciphertext, &no_annotations()).unwrap();
    // An etcd writer who can use backend b wraps their own seed and puts it in place of b's
    // wrap, keeping the rest (they cannot compute a commitment under the real seed).
    let forged = b.wrap(&seed(66), &aad_for("test-cluster")).await.unwrap();
    let mut wraps = env.wraps.clone();
    wraps[1].ciphertext = forged.ciphertext;
    let (mut swapped, _) = envelope::seal(&wraps, &seed(66)).unwrap();
    let tag_at = swapped.len() - envelope::COMMITMENT_LEN;
    swapped[tag_at..].copy_from_slice(&enc.ciphertext[tag_at..]);
    let only_a = plugin(vec![named("a", a.clone())], &["a"]).await;
    let only_b = plugin(vec![named("b", b.clone())], &["b"]).await;
    for node in [&p, &only_a, &only_b] {
        let err = node
            .decrypt(&swapped, Some(&enc.key_id), &no_annotations(), deadline())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    }
}

#[tokio::test]
async fn any_wrap_decrypts_when_the_other_backend_is_down_or_gone() {
    let (a, b, p) = two_xor().await;
    let enc = p.encrypt(seed(3), deadline()).await.unwrap();
    a.fail.store(true, Ordering::SeqCst);
    assert_eq!(decrypt_of(&p, &enc).await.unwrap().seed, seed(3));
    a.fail.store(false, Ordering::SeqCst);
    let only_a = plugin(vec![named("a", a)], &["a"]).await;
    assert_eq!(decrypt_of(&only_a, &enc).await.unwrap().seed, seed(3));
    let only_b = plugin(vec![named("b", b)], &["b"]).await;
    assert_eq!(decrypt_of(&only_b, &enc).await.unwrap().seed, seed(3));
}

/// A version-1 envelope of `s` wrapped by `a` and `b`, as polykms wrote them before version 2.
async fn legacy_envelope(a: &TestBackend, b: &TestBackend, s: u8) -> Vec<u8> {
    let aad = envelope::wrap_aad("test-cluster", envelope::FORMAT_V1);
    let mut wraps = Vec::new();
    for (name, backend) in [("a", a), ("b", b)] {
        let w = backend.wrap(&seed(s), &aad).await.unwrap();
        wraps.push(Wrap {
            backend: name.into(),
            key_version: w.key_version.as_str().into(),
            ciphertext: w.ciphertext,
        });
    }
    envelope::encode_v1(&wraps).unwrap().0
}

#[tokio::test]
async fn legacy_multi_wrap_envelopes_decrypt_and_are_counted() {
    let (a, b, p) = two_xor().await;
    let legacy = legacy_envelope(&a, &b, 4).await;
    let other = legacy_envelope(&a, &b, 5).await;
    for (ct, s) in [(&legacy, 4), (&legacy, 4), (&other, 5)] {
        let out = p
            .decrypt(ct, None, &no_annotations(), deadline())
            .await
            .unwrap();
        assert_eq!(out.seed, seed(s));
    }
    assert!(
        p.metrics()
            .encode()
            .contains("polykms_legacy_envelopes_total 3"),
        "{}",
        p.metrics().encode()
    );
    // A version-3 envelope is not legacy.
    let enc = p.encrypt(seed(6), deadline()).await.unwrap();
    decrypt_of(&p, &enc).await.unwrap();
    assert!(
        p.metrics()
            .encode()
            .contains("polykms_legacy_envelopes_total 3")
    );
}

#[tokio::test]
async fn legacy_multi_wrap_envelopes_can_be_refused() {
    let (a, b) = (TestBackend::new("a1"), TestBackend::new("b1"));
    let metrics = Arc::new(Metrics::new());
    let ring = Keyring::new(
        vec![named("a", a.clone()), named("b", b.clone())],
        &["a".into(), "b".into()],
        metrics.clone(),
    )
    .unwrap();
    let mut settings = fast_settings();
    settings.accept_legacy_multi_wrap = false;
    let p = Plugin::start(settings, ring, metrics).await;
    let legacy = legacy_envelope(&a, &b, 4).await;
    let before = (unwraps(&a), unwraps(&b));
    let err = p
        .decrypt(&legacy, None, &no_annotations(), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.to_string().contains("accept_legacy_multi_wrap"),
        "{err}"
    );
    assert_eq!((unwraps(&a), unwraps(&b)), before);
    // Version-2 envelopes are unaffected.
    let enc = p.encrypt(seed(2), deadline()).await.unwrap();
    assert_eq!(decrypt_of(&p, &enc).await.unwrap().seed, seed(2));
}

#[tokio::test]
async fn a_plaintext_over_a_backends_bound_is_refused_before_any_call() {
    let (a, b, p) = two_xor().await;
    b.max_plaintext.store(16, Ordering::SeqCst);
    let err = p.encrypt(seed(1), deadline()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let msg = err.to_string();
    assert!(
        msg.contains("backend b") && msg.contains("at most 16"),
        "{msg}"
    );
    assert_eq!(
        (
            a.wraps.load(Ordering::SeqCst),
            b.wraps.load(Ordering::SeqCst)
        ),
        (0, 0)
    );
    let small = SecretBytes::copy_from(&[7; 16]);
    let enc = p.encrypt(small.clone(), deadline()).await.unwrap();
    assert_eq!(decrypt_of(&p, &enc).await.unwrap().seed, small);
}

/// `enc` rewritten as a version-1 envelope: the commitment cut off and the format byte set
/// to 1, as an etcd writer can.
fn downgraded(ciphertext: &[u8]) -> Vec<u8> {
    let mut out = ciphertext[..ciphertext.len() - envelope::COMMITMENT_LEN].to_vec();
    out[2] = envelope::FORMAT_V1;
    out
}

#[tokio::test]
async fn a_downgraded_envelope_unwraps_on_no_node() {
    let (a, b, p) = two_xor().await;
    let enc = p.encrypt(seed(7), deadline()).await.unwrap();
    assert_eq!(enc.ciphertext[2], envelope::FORMAT_V3);
    let only_a = plugin(vec![named("a", a.clone())], &["a"]).await;
    let only_b = plugin(vec![named("b", b.clone())], &["b"]).await;
    let v1 = downgraded(&enc.ciphertext);
    // Also to version 2: the commitment kept, the format byte set to 2.
    let mut v2 = enc.ciphertext.clone();
    v2[2] = envelope::FORMAT_V2;
    for (what, ct) in [("to v1", &v1), ("to v2", &v2)] {
        for (node, n) in [(&p, "a+b"), (&only_a, "a"), (&only_b, "b")] {
            let err = node
                .decrypt(ct, Some(&enc.key_id), &no_annotations(), deadline())
                .await
                .expect_err(&format!("{what} at node {n}"));
            assert_eq!(
                err.code(),
                tonic::Code::InvalidArgument,
                "{what} {n}: {err}"
            );
        }
    }
}

#[tokio::test]
async fn a_downgrade_with_a_wrap_spliced_from_another_envelope_unwraps_on_no_node() {
    let (a, b, p) = two_xor().await;
    let first = p.encrypt(seed(8), deadline()).await.unwrap();
    let second = p.encrypt(seed(9), deadline()).await.unwrap();
    let one = Envelope::decode(&first.ciphertext, &no_annotations()).unwrap();
    let two = Envelope::decode(&second.ciphertext, &no_annotations()).unwrap();
    // Same backends and key versions, so the same key_id: a's wrap of seed 8, b's of seed 9.
    let spliced = vec![one.wraps[0].clone(), two.wraps[1].clone()];
    let (ct, _) = envelope::encode_v1(&spliced).unwrap();
    let only_a = plugin(vec![named("a", a.clone())], &["a"]).await;
    let only_b = plugin(vec![named("b", b.clone())], &["b"]).await;
    for (node, n) in [(&p, "a+b"), (&only_a, "a"), (&only_b, "b")] {
        let err = node
            .decrypt(&ct, Some(&first.key_id), &no_annotations(), deadline())
            .await
            .expect_err(&format!("spliced at node {n}"));
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{n}: {err}");
    }
}

#[tokio::test]
async fn version_2_envelopes_decrypt_with_the_aad_they_were_made_with() {
    let (a, b, p) = two_xor().await;
    let aad = envelope::wrap_aad("test-cluster", envelope::FORMAT_V2);
    let mut wraps = Vec::new();
    for (name, backend) in [("a", &a), ("b", &b)] {
        let w = backend.wrap(&seed(10), &aad).await.unwrap();
        wraps.push(Wrap {
            backend: name.into(),
            key_version: w.key_version.as_str().into(),
            ciphertext: w.ciphertext,
        });
    }
    let (ct, _) = envelope::seal_v2(&wraps, &seed(10)).unwrap();
    let out = p
        .decrypt(&ct, None, &no_annotations(), deadline())
        .await
        .unwrap();
    assert_eq!(out.seed, seed(10));
}

#[tokio::test]
async fn wraps_of_a_wrap_only_backend_are_skipped_and_named_when_nothing_else_can_unwrap() {
    let (a, b, p) = two_xor().await;
    let enc = p.encrypt(seed(11), deadline()).await.unwrap();
    b.wrap_only.store(true, Ordering::SeqCst);
    // a unwraps; b is never called.
    let before = unwraps(&b);
    assert_eq!(decrypt_of(&p, &enc).await.unwrap().seed, seed(11));
    assert_eq!(unwraps(&b), before);
    // A node holding only the wrap-only backend refuses cleanly, naming it.
    let only_b = plugin(vec![named("b", b.clone())], &["b"]).await;
    let err = decrypt_of(&only_b, &enc).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("[\"b\"]"), "{err}");
    assert_eq!(unwraps(&b), before);
    // With its private key back, it unwraps.
    b.wrap_only.store(false, Ordering::SeqCst);
    assert_eq!(decrypt_of(&only_b, &enc).await.unwrap().seed, seed(11));
    drop(a);
}
