//! Key lifecycle against moto_server (`integration/servers/moto.sh start`, then
//! `source integration/.run/moto.env`): the states an operator's ScheduleKeyDeletion,
//! CancelKeyDeletion, DisableKey and EnableKey leave, as DescribeKey reports them. Skipped
//! without `POLYKMS_AWS_ENDPOINT` unless `POLYKMS_REQUIRE_INTEGRATION=1`.

mod common;

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_sdk_kms::Client;
use polykms_backend::{KeyEncryptionBackend, KeyLifecycle, LifecycleState};

#[tokio::test]
async fn deletion_then_cancel_then_enable_walks_the_lifecycle_back_to_nothing() {
    let test = "deletion_then_cancel_then_enable_walks_the_lifecycle_back_to_nothing";
    let Some(endpoint) =
        common::env_or_skip("POLYKMS_AWS_ENDPOINT", "POLYKMS_REQUIRE_INTEGRATION", test)
    else {
        return;
    };
    let region = std::env::var("POLYKMS_AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.clone()))
        .endpoint_url(&endpoint)
        .load()
        .await;
    let admin = Client::new(&sdk);
    let meta = admin
        .create_key()
        .description("polykms-aws lifecycle test")
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata");
    let (arn, id) = (meta.arn.expect("Arn"), meta.key_id);
    let b = common::backend(&arn, Some(&endpoint), Some(&region)).await;

    b.probe().await.expect("probe of a new key");
    assert_eq!(b.key_lifecycle(&[]).await.unwrap(), KeyLifecycle::default());

    admin
        .schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");
    b.probe().await.unwrap_err();
    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l.blocking().expect("a key pending deletion cannot wrap");
    assert_eq!(
        (f.state, f.key.as_str()),
        (LifecycleState::PendingDeletion, arn.as_str())
    );
    assert_eq!(f.remedy, "CancelKeyDeletion, then EnableKey");
    let at = f.at.expect("DescribeKey names the deletion date");
    let days = at
        .duration_since(SystemTime::now())
        .expect("the deletion date is ahead")
        .as_secs()
        / 86_400;
    assert!((6..=7).contains(&days), "deletion in {days} days");

    // Cancelling leaves the key disabled: still blocking, now undone by EnableKey alone.
    admin
        .cancel_key_deletion()
        .key_id(&id)
        .send()
        .await
        .expect("CancelKeyDeletion");
    b.probe().await.unwrap_err();
    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l.blocking().expect("a disabled key cannot wrap");
    assert_eq!(
        (f.state, f.remedy.as_str(), f.at),
        (LifecycleState::Disabled, "EnableKey", None)
    );

    admin
        .enable_key()
        .key_id(&id)
        .send()
        .await
        .expect("EnableKey");
    b.probe().await.expect("probe after EnableKey");
    assert_eq!(b.key_lifecycle(&[]).await.unwrap(), KeyLifecycle::default());
}
