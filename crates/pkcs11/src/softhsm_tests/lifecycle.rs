//! CKA_END_DATE against SoftHSM2, which stores the date as given and, as PKCS#11 allows, goes
//! on using the key after it: the lifecycle read is what reports it. The dates are set with
//! C_SetAttributeValue through the module the backend loaded (pkcs11-tool cannot set them).

use std::time::{Duration, SystemTime};

use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::{AuthPin, Date};
use polykms_backend::{KeyVersion, LifecycleState};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// `YYYYMMDD` of the UTC day `t` falls in.
fn day_of(t: SystemTime) -> String {
    humantime::format_rfc3339(t).to_string()[..10].replace('-', "")
}

/// Sets CKA_END_DATE (`YYYYMMDD`) of the key object `id` (hex) labelled `label` on `token`.
fn set_end_date(b: &Pkcs11Backend, token: &OwnToken, label: &str, id: &str, end: &str) {
    let module = &b.hsm().module;
    let _inside = module.enter();
    let pkcs11 = &module.pkcs11;
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == token.label)
        .expect("the test's token is in a slot");
    let session = pkcs11.open_rw_session(slot).unwrap();
    // Login is per token for the whole process: the backend's sessions are logged in already.
    match session.login(
        UserType::User,
        Some(&AuthPin::new(token.pin.clone().into())),
    ) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    let objects = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(hex::decode(id).unwrap()),
        ])
        .unwrap();
    assert_eq!(objects.len(), 1, "one key object {label}:{id}");
    let date = Date::new_from_str_slice(&end[..4], &end[4..6], &end[6..]).unwrap();
    session
        .update_attributes(objects[0], &[Attribute::EndDate(date)])
        .unwrap();
}

#[tokio::test]
async fn a_current_key_object_near_its_end_date_warns_and_past_it_blocks_wraps() {
    let Some(env) = env("a_current_key_object_near_its_end_date_warns_and_past_it_blocks_wraps")
    else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let b = token.backend(&env).await;
    let version = probe_until_ok(&b).await;
    assert!(b.key_lifecycle(&[]).await.unwrap().findings.is_empty());

    let soon = day_of(SystemTime::now() + 10 * DAY);
    set_end_date(&b, &token, &env.key_label, "01", &soon);
    b.probe().await.unwrap();
    let l = b.key_lifecycle(&[]).await.unwrap();
    assert_eq!(l.blocking(), None);
    let f = &l.findings[0];
    assert_eq!(
        (f.key.as_str(), f.state),
        (version.as_str(), LifecycleState::Expiring)
    );
    assert!(f.remedy.contains(&soon), "{f}");

    let yesterday = day_of(SystemTime::now() - DAY);
    set_end_date(&b, &token, &env.key_label, "01", &yesterday);
    // SoftHSM2 still wraps with it: the end date is for the application to honour.
    b.probe().await.unwrap();
    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l.blocking().expect("a key past its end date blocks wraps");
    assert_eq!(f.state, LifecycleState::Expired);
    assert!(f.remedy.contains("greater CKA_ID"), "{f}");
}

#[tokio::test]
async fn older_key_objects_past_their_end_date_or_deleted_warn_without_blocking() {
    let Some(env) = env("older_key_objects_past_their_end_date_or_deleted_warn_without_blocking")
    else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let token = OwnToken::create(&env);
    token.keygen(&env.key_label, "01");
    let b = token.backend(&env).await;
    let old: KeyVersion = probe_until_ok(&b).await;
    token.keygen(&env.key_label, "02");
    b.probe().await.unwrap();
    let in_use = [old.clone()];
    assert!(b.key_lifecycle(&in_use).await.unwrap().findings.is_empty());

    set_end_date(&b, &token, &env.key_label, "01", "20200101");
    b.probe().await.unwrap();
    let l = b.key_lifecycle(&in_use).await.unwrap();
    assert_eq!(l.blocking(), None);
    assert_eq!(
        l.findings
            .iter()
            .map(|f| (f.key.as_str(), f.state))
            .collect::<Vec<_>>(),
        [(old.as_str(), LifecycleState::Expired)]
    );

    token.delete_key(&env.key_label, "01");
    b.probe().await.unwrap();
    let l = b.key_lifecycle(&in_use).await.unwrap();
    assert_eq!(l.blocking(), None);
    assert_eq!(l.findings[0].state, LifecycleState::VersionRetired);
}
