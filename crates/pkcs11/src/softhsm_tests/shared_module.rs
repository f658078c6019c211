//! Backends (and reloads) sharing one module: what one of them does to the module must not
//! disturb the others.

use std::time::Duration;

use super::*;
use crate::hsm::Hsm;
use crate::module::Module;
use crate::pin::{PinGate, read_pin_file};

fn hsm(env: &Env, token: &OwnToken) -> Hsm {
    let cfg = config(env, &token.label, &token.pin_file());
    Hsm::new(
        Module::load(&env.module).unwrap(),
        cfg.validate().unwrap(),
        PinGate::new(read_pin_file(&token.pin_file()).unwrap()),
        env.key_label.clone(),
        WrapMechanism::AesGcm,
    )
}

#[tokio::test]
async fn dropping_a_backend_after_a_reinitialization_leaves_the_new_backends_sessions_open() {
    let Some(env) = env("dropping_a_backend_after_a_reinitialization") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let old = hsm(&env, &token);
    old.start().unwrap();
    let old_handles = old.idle_handles();
    assert_eq!(old_handles.len(), 1);

    // As when another backend's token went missing: every handle of `old` is void now.
    let module = old.module.clone();
    let seen = module.enter().generation;
    assert!(module.reinitialize(seen, Duration::from_secs(2)));

    // The reload's backend: SoftHSM2 numbers sessions afresh after C_Initialize, so its
    // session has the handle the old backend still holds.
    let new = hsm(&env, &token);
    new.start().unwrap();
    assert!(
        new.idle_handles().iter().any(|h| old_handles.contains(h)),
        "the module did not reuse a session handle ({old_handles:?}, {:?}): this test needs it",
        new.idle_handles()
    );
    assert!(new.idle_sessions_answer());

    drop(old);
    assert!(
        new.idle_sessions_answer(),
        "dropping the old backend closed the new backend's session"
    );
    let w = new.wrap(&seed(6), b"aad").unwrap();
    assert_eq!(new.unwrap(&w, b"aad").unwrap(), seed(6));
}
