//! The backend against a real SoftHSM2 (integration/servers/softhsm.sh). Skipped when the
//! env file is not sourced, unless `POLYKMS_REQUIRE_INTEGRATION=1`.
//!
//! Tests that make, delete or re-create tokens each use a token of their own; they run one at
//! a time because a token made after the module was initialized is found by re-initializing
//! the module, which every backend of the process shares.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};

use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes};

use crate::{Pkcs11Backend, Pkcs11Config, WrapMechanism};

mod lifecycle;
mod shared_module;

static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

struct Env {
    module: PathBuf,
    token_label: String,
    pin_file: PathBuf,
    key_label: String,
}

fn env(test: &str) -> Option<Env> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("SOFTHSM2_CONF"),
        get("POLYKMS_PKCS11_MODULE"),
        get("POLYKMS_PKCS11_TOKEN_LABEL"),
        get("POLYKMS_PKCS11_PIN_FILE"),
        get("POLYKMS_PKCS11_KEY_LABEL"),
    ) {
        (Some(_), Some(module), Some(token_label), Some(pin_file), Some(key_label)) => Some(Env {
            module: module.into(),
            token_label,
            pin_file: pin_file.into(),
            key_label,
        }),
        _ if std::env::var("POLYKMS_REQUIRE_INTEGRATION").as_deref() == Ok("1") => panic!(
            "{test}: POLYKMS_REQUIRE_INTEGRATION=1 but integration/.run/softhsm.env is not sourced"
        ),
        _ => {
            eprintln!(
                "{test}: skipped (source integration/.run/softhsm.env after softhsm.sh start)"
            );
            None
        }
    }
}

fn config(env: &Env, token_label: &str, pin_file: &Path) -> Pkcs11Config {
    Pkcs11Config {
        module: env.module.clone(),
        token_label: Some(token_label.to_string()),
        slot_id: None,
        token_serial: None,
        pin_file: pin_file.to_path_buf(),
        key_label: env.key_label.clone(),
        mechanism: WrapMechanism::AesGcm,
        max_sessions: 8,
        end_date_warning: crate::lifecycle::DEFAULT_END_DATE_WARNING,
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a SoftHSM2 tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b).unwrap();
    hex::encode(b)
}

/// A token of the test's own, with its PIN in a 0600 file.
struct OwnToken {
    label: String,
    pin: String,
    so_pin: String,
    dir: tempfile::TempDir,
    module: PathBuf,
}

impl OwnToken {
    fn create(env: &Env) -> OwnToken {
        static N: AtomicU32 = AtomicU32::new(0);
        let label = format!(
            "t{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            &random_hex(3)
        );
        let token = OwnToken {
            label,
            pin: random_hex(8),
            so_pin: random_hex(8),
            dir: tempfile::tempdir().unwrap(),
            module: env.module.clone(),
        };
        token.init();
        write_pin(&token.pin_file(), &token.pin);
        token
    }

    fn init(&self) {
        run(Command::new("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            &self.label,
            "--so-pin",
            &self.so_pin,
            "--pin",
            &self.pin,
        ]));
    }

    fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    /// A backend on this token, with the suite's config.
    async fn backend(&self, env: &Env) -> Pkcs11Backend {
        Pkcs11Backend::connect(&config(env, &self.label, &self.pin_file()))
            .await
            .expect("a backend on the test's own token")
    }

    fn tool(&self) -> Command {
        let mut c = Command::new("pkcs11-tool");
        c.arg("--module").arg(&self.module).args([
            "--token-label",
            &self.label,
            "--login",
            "--pin",
            &self.pin,
        ]);
        c
    }

    fn keygen(&self, label: &str, id: &str) {
        run(self.tool().args([
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            label,
            "--id",
            id,
        ]));
    }

    fn delete_key(&self, label: &str, id: &str) {
        run(self.tool().args([
            "--delete-object",
            "--type",
            "secrkey",
            "--label",
            label,
            "--id",
            id,
        ]));
    }

    fn delete(&self) {
        run(Command::new("softhsm2-util").args(["--delete-token", "--token", &self.label]));
    }
}

impl Drop for OwnToken {
    fn drop(&mut self) {
        drop(
            Command::new("softhsm2-util")
                .args(["--delete-token", "--token", &self.label])
                .output(),
        );
    }
}

fn write_pin(path: &Path, pin: &str) {
    std::fs::write(path, format!("{pin}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn seed(n: u8) -> SecretBytes {
    SecretBytes::copy_from(&[n; 32])
}

/// Probes until the backend answers (a re-enumeration of tokens takes one probe), at most
/// three times.
async fn probe_until_ok(b: &Pkcs11Backend) -> polykms_backend::KeyVersion {
    let mut last = None;
    for _ in 0..3 {
        match b.probe().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
    }
    panic!("probe never succeeded: {last:?}");
}

#[tokio::test]
async fn round_trip_binds_the_aad_and_describes_the_token() {
    let Some(env) = env("round_trip_binds_the_aad_and_describes_the_token") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    for mechanism in [WrapMechanism::AesGcm, WrapMechanism::AesKeyWrapPad] {
        let mut cfg = config(&env, &env.token_label, &env.pin_file);
        cfg.mechanism = mechanism;
        let b = Pkcs11Backend::connect(&cfg).await.unwrap();
        let version = b.probe().await.unwrap();
        assert_eq!(version.as_str(), format!("{}:01", env.key_label));
        let w = b.wrap(&seed(7), b"polykms:v2:cluster-a").await.unwrap();
        assert_eq!(w.key_version, version);
        assert_eq!(
            b.unwrap(&w, b"polykms:v2:cluster-a").await.unwrap(),
            seed(7)
        );
        // Another provider name (AAD) does not decrypt.
        let other = b.unwrap(&w, b"polykms:v2:cluster-b").await.unwrap_err();
        assert_eq!(other.kind(), ErrorKind::WrongKey, "{mechanism:?}: {other}");
        // Nor does a tampered ciphertext.
        let mut tampered = w.clone();
        let last = tampered.ciphertext.len() - 1;
        tampered.ciphertext[last] ^= 1;
        let t = b
            .unwrap(&tampered, b"polykms:v2:cluster-a")
            .await
            .unwrap_err();
        assert_eq!(t.kind(), ErrorKind::WrongKey, "{mechanism:?}: {t}");
        // The advertised bound is one the token accepts.
        let longest = SecretBytes::new(vec![9u8; b.max_plaintext_len()]);
        let w = b.wrap(&longest, b"aad").await.unwrap();
        assert_eq!(b.unwrap(&w, b"aad").await.unwrap(), longest);
        let shown = b.describe();
        for part in [
            env.module.to_str().unwrap(),
            &format!("token label {:?}", env.token_label),
            "serial",
            "slot",
            mechanism.as_str(),
        ] {
            assert!(shown.contains(part), "{part} not in {shown}");
        }
    }
}

#[tokio::test]
async fn a_key_object_with_a_higher_id_rotates_and_old_wraps_still_unwrap() {
    let Some(env) = env("a_key_object_with_a_higher_id_rotates") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let b = token.backend(&env).await;
    let v1 = probe_until_ok(&b).await;
    let old = b.wrap(&seed(1), b"aad").await.unwrap();

    // Numerically greater although it sorts lower as a string of bytes of another length.
    token.keygen(&env.key_label, "0100");
    token.keygen(&env.key_label, "ff");
    let v2 = b.probe().await.unwrap();
    assert_ne!(v1, v2);
    assert_eq!(v2.as_str(), format!("{}:0100", env.key_label));
    let new = b.wrap(&seed(2), b"aad").await.unwrap();
    assert_eq!(new.key_version, v2);
    assert_eq!(b.unwrap(&old, b"aad").await.unwrap(), seed(1));
    assert_eq!(b.unwrap(&new, b"aad").await.unwrap(), seed(2));

    // Deleting the old key object: its wraps fail naming the version, the rest carries on.
    token.delete_key(&env.key_label, "01");
    let gone = b.unwrap(&old, b"aad").await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::KeyUnavailable, "{gone}");
    assert!(gone.message().contains(v1.as_str()), "{gone}");
    assert_eq!(b.probe().await.unwrap(), v2);
}

#[tokio::test]
async fn ids_that_are_the_same_number_fail_probe_and_wrap_naming_both() {
    let Some(env) = env("ids_that_are_the_same_number") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let b = token.backend(&env).await;
    probe_until_ok(&b).await;

    // Other bytes, same number: which one is greatest would depend on the listing order.
    token.keygen(&env.key_label, "0001");
    let probe = b.probe().await.unwrap_err();
    let fresh = token.backend(&env).await;
    let wrap = fresh.wrap(&seed(1), b"aad").await.unwrap_err();
    for e in [probe, wrap] {
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(!e.is_retryable(), "{e}");
        assert!(e.message().contains("\"01\""), "{e}");
        assert!(e.message().contains("\"0001\""), "{e}");
    }

    token.delete_key(&env.key_label, "0001");
    assert_eq!(
        b.probe().await.unwrap().as_str(),
        format!("{}:01", env.key_label)
    );
}

#[tokio::test]
async fn deleting_the_wrapping_key_makes_probe_fail_with_key_unavailable() {
    let Some(env) = env("deleting_the_wrapping_key") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let b = token.backend(&env).await;
    probe_until_ok(&b).await;
    let w = b.wrap(&seed(3), b"aad").await.unwrap();
    token.delete_key(&env.key_label, "01");
    let probe = b.probe().await.unwrap_err();
    assert_eq!(probe.kind(), ErrorKind::KeyUnavailable, "{probe}");
    assert!(!probe.is_retryable());
    let unwrap = b.unwrap(&w, b"aad").await.unwrap_err();
    assert_eq!(unwrap.kind(), ErrorKind::KeyUnavailable, "{unwrap}");
    let wrap = b.wrap(&seed(3), b"aad").await.unwrap_err();
    assert_eq!(wrap.kind(), ErrorKind::KeyUnavailable, "{wrap}");
}

#[tokio::test]
async fn a_wrong_pin_is_a_clean_error_after_a_single_login_attempt() {
    let Some(env) = env("a_wrong_pin_is_a_clean_error") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let wrong = token.dir.path().join("wrong-pin");
    write_pin(&wrong, "not-the-pin");
    let cfg = config(&env, &token.label, &wrong);

    let err = Pkcs11Backend::connect(&cfg).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.is_retryable());
    assert!(err.message().contains("CKR_PIN_INCORRECT"), "{err}");
    assert!(err.message().contains("pin_file"), "{err}");
    assert!(!err.message().contains("not-the-pin"), "{err}");

    // Below connect: start, probes, wraps all return the kept refusal, C_Login once.
    let module = crate::module::Module::load(&env.module).unwrap();
    let hsm = Arc::new(crate::hsm::Hsm::new(
        module,
        cfg.validate().unwrap(),
        crate::pin::PinGate::new(crate::pin::read_pin_file(&wrong).unwrap()),
        env.key_label.clone(),
        WrapMechanism::AesGcm,
    ));
    let mut handles = Vec::new();
    for _ in 0..8 {
        let hsm = hsm.clone();
        handles.push(std::thread::spawn(move || hsm.start().unwrap_err()));
    }
    for h in handles {
        assert_eq!(h.join().unwrap().kind(), ErrorKind::Unauthorized);
    }
    assert_eq!(hsm.probe().unwrap_err().kind(), ErrorKind::Unauthorized);
    assert_eq!(
        hsm.wrap(&seed(1), b"aad").unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
    assert_eq!(hsm.pin.attempts(), 1);

    // The token was not locked: the right PIN still works.
    let ok = token.backend(&env).await;
    probe_until_ok(&ok).await;
}

#[tokio::test]
async fn a_token_deleted_and_recreated_under_a_running_backend_recovers() {
    let Some(env) = env("a_token_deleted_and_recreated") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let b = token.backend(&env).await;
    let before = probe_until_ok(&b).await;
    let w = b.wrap(&seed(4), b"aad").await.unwrap();
    assert_eq!(b.unwrap(&w, b"aad").await.unwrap(), seed(4));

    token.delete();
    let down = b.probe().await.unwrap_err();
    assert!(down.is_retryable(), "{down}");
    let down = b.wrap(&seed(4), b"aad").await.unwrap_err();
    assert!(down.is_retryable(), "{down}");

    token.init();
    token.keygen(&env.key_label, "01");
    let after = probe_until_ok(&b).await;
    assert_eq!(after, before);
    let w = b.wrap(&seed(5), b"aad").await.unwrap();
    assert_eq!(b.unwrap(&w, b"aad").await.unwrap(), seed(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_callers_share_four_sessions() {
    let Some(env) = env("sixty_four_concurrent_callers_share_four_sessions") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cfg = config(&env, &env.token_label, &env.pin_file);
    cfg.max_sessions = 4;
    let b = Arc::new(Pkcs11Backend::connect(&cfg).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..4u8 {
                let s = SecretBytes::copy_from(&[i, round, 1, 2, 3, 4, 5, 6]);
                let w = b.wrap(&s, &[i]).await.unwrap();
                assert_eq!(b.unwrap(&w, &[i]).await.unwrap(), s);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let idle = b.hsm().idle.len();
    assert!((1..=4).contains(&idle), "{idle} sessions kept");
}
