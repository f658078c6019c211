//! Building the KMS client: credentials expiry, region, FIPS endpoints, and that requests are
//! signed by polykms' SigV4 exactly as the SDK's `aws-sigv4` would sign them.

use super::*;
use aws_sdk_kms::config::Credentials;

use crate::sigv4_auth::SIGNED_ON_THIS_THREAD;
use crate::test_server::{Capture, Captured};

#[tokio::test]
async fn expiry_recorder_reports_expiry_of_last_credentials() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let creds = Credentials::new(
        "AKIDEXAMPLE",
        "not-a-secret",
        Some("t".into()),
        Some(at),
        "test",
    );
    let rec = ExpiryRecorder::new(SharedCredentialsProvider::new(creds));
    assert_eq!(rec.expiry(), None);
    rec.provide_credentials().await.unwrap();
    assert_eq!(rec.expiry(), Some(at));
}

#[tokio::test]
async fn build_works_offline_and_takes_region_from_key_arn() {
    let mut cfg = AwsConfig::new("arn:aws:kms:ap-south-2:111122223333:key/k-1");
    cfg.endpoint = Some("http://127.0.0.1:9".into());
    let key = cfg.validate().unwrap();
    let built = build(&cfg, &key, None).await.unwrap();
    assert_eq!(built.region, "ap-south-2");
}

const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::111122223333:role/polykms";

fn session_credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        "ASIAEXAMPLE",
        "test-secret-access-key",
        Some("test-session-token/with+odd=chars".into()),
        None,
        "test",
    ))
}

/// Builds the client with `cfg` on a capturing HTTP client and makes one DescribeKey call.
async fn capture_describe(cfg: &AwsConfig) -> (KmsClient, Vec<Captured>) {
    let key = cfg.validate_for(false).unwrap();
    let capture = Capture::default();
    let built = build_with_http(
        cfg,
        &key,
        Some(session_credentials()),
        Some(SharedHttpClient::new(capture.clone())),
    )
    .await
    .unwrap();
    let _ = built.client.describe_key().key_id(ARN).send().await;
    (built, capture.requests())
}

fn config(region: &str) -> AwsConfig {
    let mut cfg = AwsConfig::new(ARN.replace("eu-west-1", region));
    cfg.max_attempts = 1;
    cfg
}

fn header<'a>(request: &'a Captured, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn use_fips_endpoint_sends_kms_calls_to_the_kms_fips_endpoint() {
    for (region, url) in [
        ("eu-west-1", "https://kms-fips.eu-west-1.amazonaws.com"),
        (
            "us-gov-west-1",
            "https://kms-fips.us-gov-west-1.amazonaws.com",
        ),
    ] {
        let mut cfg = config(region);
        cfg.use_fips_endpoint = true;
        let (built, requests) = capture_describe(&cfg).await;
        assert_eq!(built.endpoint, url);
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!(requests[0].uri, format!("{url}/"));
    }
}

#[tokio::test]
async fn without_use_fips_endpoint_kms_calls_go_to_the_regular_endpoint() {
    let (built, requests) = capture_describe(&config("eu-west-1")).await;
    assert_eq!(built.endpoint, "https://kms.eu-west-1.amazonaws.com");
    assert_eq!(requests[0].uri, "https://kms.eu-west-1.amazonaws.com/");
}

#[tokio::test]
async fn use_fips_endpoint_leaves_sts_on_its_regional_endpoint() {
    // The non-FIPS build's branch: a FIPS build refuses assume_role_arn (config.rs).
    if std::env::var_os("AWS_ENDPOINT_URL_STS").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some()
    {
        eprintln!("skipped: AWS_ENDPOINT_URL(_STS) overrides the STS endpoint (moto.env sets it)");
        return;
    }
    let mut cfg = config("eu-west-1");
    cfg.use_fips_endpoint = true;
    cfg.assume_role_arn = Some(ROLE.into());
    let signed_before = SIGNED_ON_THIS_THREAD.with(|n| n.get());
    let (built, requests) = capture_describe(&cfg).await;
    let sts = requests
        .iter()
        .find(|r| r.uri.contains("sts"))
        .unwrap_or_else(|| panic!("the assumed role is fetched from STS first: {requests:?}"));
    // STS has no FIPS endpoint in eu-west-1: use_fips_endpoint is the KMS client's alone.
    assert_eq!(sts.uri, "https://sts.eu-west-1.amazonaws.com/");
    assert_eq!(built.endpoint, "https://kms-fips.eu-west-1.amazonaws.com");
    assert!(String::from_utf8_lossy(&sts.body).contains("Action=AssumeRole"));
    // STS is signed by the SDK's provider (aws-sigv4), not by polykms' signer: the reason a
    // FIPS build refuses assume_role_arn.
    assert_eq!(SIGNED_ON_THIS_THREAD.with(|n| n.get()), signed_before);
}

#[tokio::test]
async fn fips_with_an_endpoint_override_fails_at_connect_naming_the_field() {
    // Reachable when AWS_USE_FIPS_ENDPOINT turns FIPS on beside a configured endpoint (the
    // config itself refuses use_fips_endpoint with endpoint): the SDK's rules refuse the pair.
    let err = resolve_endpoint("eu-west-1", true, Some("https://vpce-1.kms.example"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), polykms_backend::ErrorKind::Config);
    assert!(err.message().starts_with("use_fips_endpoint"), "{err}");
    assert!(err.message().contains("FIPS and custom endpoint"), "{err}");
    assert_eq!(
        resolve_endpoint("eu-west-1", false, Some("https://vpce-1.kms.example"))
            .await
            .unwrap(),
        "https://vpce-1.kms.example"
    );
}

/// `20150830T123600Z` back to a time.
fn parse_amz_date(s: &str) -> SystemTime {
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).unwrap()
}

#[tokio::test]
async fn kms_requests_are_signed_by_polykms_exactly_as_aws_sigv4_would_sign_them() {
    let signed_before = SIGNED_ON_THIS_THREAD.with(|n| n.get());
    let (_, requests) = capture_describe(&config("eu-west-1")).await;
    assert_eq!(
        SIGNED_ON_THIS_THREAD.with(|n| n.get()),
        signed_before + 1,
        "the KMS call went through polykms' signer, not the SDK's"
    );
    let sent = &requests[0];
    assert_eq!(
        header(sent, "x-amz-security-token"),
        Some("test-session-token/with+odd=chars")
    );
    let authorization = header(sent, "authorization").unwrap();
    let time = parse_amz_date(header(sent, "x-amz-date").unwrap());

    // Re-sign what was sent (minus the signature) with the SDK's own signer at the same time.
    let identity: aws_smithy_runtime_api::client::identity::Identity = Credentials::new(
        "ASIAEXAMPLE",
        "test-secret-access-key",
        Some("test-session-token/with+odd=chars".into()),
        None,
        "oracle",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("kms")
        .time(time)
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .unwrap()
        .into();
    // The SDK adds amz-sdk-invocation-id / amz-sdk-request after signing: the oracle gets the
    // headers that were signed, as the server sees them.
    let signed_list = authorization
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap();
    let signed_names: Vec<&str> = signed_list.split(';').collect();
    for name in [
        "content-type",
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-target",
    ] {
        assert!(
            signed_names.contains(&name),
            "{name} is signed: {signed_list}"
        );
    }
    let unsigned = sent
        .headers
        .iter()
        .filter(|(k, _)| signed_names.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let request = aws_sigv4::http_request::SignableRequest::new(
        &sent.method,
        &sent.uri,
        unsigned,
        aws_sigv4::http_request::SignableBody::Bytes(&sent.body),
    )
    .unwrap();
    let (instructions, _) = aws_sigv4::http_request::sign(request, &params)
        .unwrap()
        .into_parts();
    let (headers, _) = instructions.into_parts();
    let expected = headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case("authorization"))
        .unwrap();
    assert_eq!(authorization, expected.value());
    assert!(
        authorization.contains("/eu-west-1/kms/aws4_request"),
        "{authorization}"
    );
    assert!(
        authorization.contains("x-amz-security-token"),
        "{authorization}"
    );
}
