//! Backends (and reloads) sharing one module: what one of them does to the module must not
//! disturb the others.

use std::time::{Duration, Instant};

use super::*;
use crate::backoff::{FIRST_DELAY, MAX_DELAY};
use crate::hsm::Hsm;
use crate::module::{Module, Reinit};
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

/// Whether every idle session of `hsm` is still a live session of the module.
fn answers(hsm: &Hsm) -> bool {
    let _inside = hsm.module.enter();
    hsm.idle.all_answer()
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
    let old_handles = old.idle.handles();
    assert_eq!(old_handles.len(), 1);

    // As when another backend's token went missing: every handle of `old` is void now.
    let module = old.module.clone();
    let seen = module.enter().generation;
    module.reset_backoff();
    let reinit = module.reinitialize(seen, Duration::from_secs(2), Instant::now());
    // No token came back to reset it: leave the next test an untouched backoff.
    module.reset_backoff();
    assert_eq!(reinit, Reinit::Done);

    // The reload's backend: SoftHSM2 numbers sessions afresh after C_Initialize, so its
    // session has the handle the old backend still holds.
    let new = hsm(&env, &token);
    new.start().unwrap();
    assert!(
        new.idle.handles().iter().any(|h| old_handles.contains(h)),
        "the module did not reuse a session handle ({old_handles:?}, {:?}): this test needs it",
        new.idle.handles()
    );
    assert!(answers(&new));

    drop(old);
    assert!(
        answers(&new),
        "dropping the old backend closed the new backend's session"
    );
    let w = new.wrap(&seed(6), b"aad").unwrap();
    assert_eq!(new.unwrap(&w, b"aad").unwrap(), seed(6));
}

#[tokio::test]
async fn a_missing_token_costs_logarithmically_many_module_reinitializations() {
    let Some(env) = env("a_missing_token_costs_logarithmically_many") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let hsm = hsm(&env, &token);
    hsm.start().unwrap();
    let module = hsm.module.clone();

    // Ten minutes missing, probed every 5 s (the unhealthy interval) on the test's clock.
    token.delete();
    let start = Instant::now();
    let horizon = Duration::from_secs(600);
    let before = module.reinitializations();
    let mut at = Duration::ZERO;
    let mut probes = 0;
    while at <= horizon {
        let down = hsm.probe_at(start + at).unwrap_err();
        assert!(down.is_retryable(), "{down}");
        probes += 1;
        at += Duration::from_secs(5);
    }
    let spent = module.reinitializations() - before;
    // log2(600 s / 10 s) rounds up to 6: at 5, 15, 35, 75, 155 and 315 s.
    let bound = (horizon.as_secs_f64() / FIRST_DELAY.as_secs_f64())
        .log2()
        .ceil() as u64
        + 1;
    assert!(
        (1..=bound).contains(&spent),
        "{spent} re-initializations for {probes} probes (at most {bound})"
    );

    // Back (SoftHSM2 lists it only after C_Initialize): found within the longest delay.
    token.init();
    token.keygen(&env.key_label, "01");
    let back = start + horizon + MAX_DELAY;
    assert_eq!(
        hsm.probe_at(back).unwrap().as_str(),
        format!("{}:01", env.key_label)
    );

    // Found again, the backoff starts over: the next loss is looked for at once.
    token.delete();
    let before = module.reinitializations();
    for s in [1, 2] {
        hsm.probe_at(back + Duration::from_secs(s)).unwrap_err();
    }
    assert_eq!(module.reinitializations() - before, 1);
    token.init();
    token.keygen(&env.key_label, "01");
    hsm.probe_at(back + MAX_DELAY * 2).unwrap();
}
