//! polykms' SigV4 against AWS's published test suite and against `aws-sigv4` as an oracle.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SigningSettings,
    UriPathNormalizationMode,
};
use aws_smithy_runtime_api::client::identity::Identity;

use super::*;

/// One vector of `testdata/sigv4` (see its README for the origin).
struct Vector {
    name: String,
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    context: serde_json::Value,
}

impl Vector {
    fn load(dir: &Path) -> Vector {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let context: serde_json::Value = serde_json::from_str(&read("context.json")).unwrap();
        let request = read("request.txt");
        let (head, body) = request.split_once("\n\n").unwrap_or((&request, ""));
        let mut lines = head.lines();
        let mut first = lines.next().unwrap().splitn(3, ' ');
        let method = first.next().unwrap().to_owned();
        let path = first.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let host = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .unwrap();
        Vector {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            method,
            uri: format!("https://{host}{path}"),
            headers,
            body: body.as_bytes().to_vec(),
            context,
        }
    }

    fn expected(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    fn flag(&self, name: &str) -> bool {
        self.context[name].as_bool().unwrap_or(false)
    }

    fn str(&self, path: &[&str]) -> Option<&str> {
        path.iter()
            .try_fold(&self.context, |v, k| v.get(k))
            .and_then(|v| v.as_str())
    }

    fn sign(&self) -> Signed {
        let time = humantime::parse_rfc3339(self.str(&["timestamp"]).unwrap()).unwrap();
        let request = SignableRequest {
            method: &self.method,
            uri: &self.uri,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            payload: Payload::Bytes(&self.body),
        };
        let credentials = SigningCredentials {
            access_key_id: self.str(&["credentials", "access_key_id"]).unwrap(),
            secret_access_key: self.str(&["credentials", "secret_access_key"]).unwrap(),
            session_token: self.str(&["credentials", "token"]),
        };
        let params = SigningParams {
            region: self.str(&["region"]).unwrap(),
            service: self.str(&["service"]).unwrap(),
            time,
            double_uri_encode: true,
            normalize_uri_path: self.flag("normalize"),
            content_sha256_header: self.flag("sign_body"),
            omit_session_token: self.flag("omit_session_token"),
        };
        sign(&request, &credentials, &params).unwrap()
    }
}

#[test]
fn aws_test_suite_vectors_give_the_published_canonical_request_and_signature() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sigv4");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let vector = Vector::load(&dir);
        let signed = vector.sign();
        let name = &vector.name;
        assert_eq!(
            signed.canonical_request,
            Vector::expected(&dir, "header-canonical-request.txt"),
            "{name}: canonical request"
        );
        assert_eq!(
            signed.string_to_sign,
            Vector::expected(&dir, "header-string-to-sign.txt"),
            "{name}: string to sign"
        );
        assert_eq!(
            signed.signature,
            Vector::expected(&dir, "header-signature.txt").trim(),
            "{name}: signature"
        );
        let authorization = &signed.headers.last().unwrap();
        assert_eq!(authorization.0, AUTHORIZATION);
        assert!(
            authorization
                .1
                .ends_with(&format!("Signature={}", signed.signature)),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 16, "every vector in testdata/sigv4 was run");
}

#[test]
fn signing_time_is_formatted_in_utc_whole_seconds() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_440_938_160_999);
    assert_eq!(
        format_time(t),
        ("20150830T123600Z".to_owned(), "20150830".to_owned())
    );
}

#[test]
fn default_ports_are_left_out_of_the_host_and_others_kept() {
    for (uri, host) in [
        (
            "https://kms.eu-west-1.amazonaws.com:443/",
            "kms.eu-west-1.amazonaws.com",
        ),
        ("http://127.0.0.1:80/", "127.0.0.1"),
        ("http://127.0.0.1:4566/", "127.0.0.1:4566"),
        ("https://[::1]:8443/", "[::1]:8443"),
        ("https://[::1]", "[::1]"),
    ] {
        assert_eq!(split_uri(uri).unwrap().host, host, "{uri}");
    }
    assert_eq!(
        split_uri("/no-host").unwrap_err(),
        SigV4Error::BadUri("/no-host".into())
    );
}

#[test]
fn debug_of_signing_inputs_and_output_shows_no_secret() {
    let creds = SigningCredentials {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: Some("session-token-value"),
    };
    let signed = sign(
        &SignableRequest {
            method: "POST",
            uri: "https://kms.us-east-1.amazonaws.com/",
            headers: vec![],
            payload: Payload::Bytes(b"{}"),
        },
        &creds,
        &kms_params("us-east-1", SystemTime::UNIX_EPOCH),
    )
    .unwrap();
    let shown = format!("{creds:?} {signed:?}");
    assert!(!shown.contains("EXAMPLEKEY"), "{shown}");
    assert!(!shown.contains("session-token-value"), "{shown}");
}

fn kms_params(region: &str, time: SystemTime) -> SigningParams<'_> {
    SigningParams {
        region,
        service: "kms",
        time,
        double_uri_encode: true,
        normalize_uri_path: true,
        content_sha256_header: false,
        omit_session_token: false,
    }
}

/// A small deterministic generator, so a failing case can be replayed from its index.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn text(&mut self, alphabet: &str, max: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        (0..self.below(max + 1))
            .map(|_| chars[self.below(chars.len())])
            .collect()
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        (0..self.below(max + 1))
            .map(|_| self.next() as u8)
            .collect()
    }
}

const TOKEN_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
const VALUE_CHARS: &str = "abcXYZ019 -_.~/:;,=+*&%!\"'()[]{}<>?@#$^`|\\\té";
const PATH_CHARS: &str = "abc09-_.~/%:@!$&'()*+,;=é";

/// A generated request, KMS-like most of the time (POST / with the SDK's headers and a JSON
/// body), sometimes with odd paths, queries, header spellings and repeated headers.
struct Generated {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    access_key_id: String,
    secret: String,
    token: Option<String>,
    region: String,
    time: SystemTime,
    double_uri_encode: bool,
    content_sha256_header: bool,
    omit_session_token: bool,
}

fn generate(rng: &mut XorShift) -> Generated {
    let region = rng
        .pick(&[
            "us-east-1",
            "eu-west-1",
            "ap-south-2",
            "us-gov-west-1",
            "cn-north-1",
        ])
        .to_owned();
    let host = match rng.below(3) {
        0 => format!("kms.{region}.amazonaws.com"),
        1 => format!("kms-fips.{region}.amazonaws.com:443"),
        _ => format!("127.0.0.1:{}", 1024 + rng.below(60000)),
    };
    let scheme = if host.starts_with("127.") {
        "http"
    } else {
        "https"
    };
    let kms_like = rng.below(4) != 0;
    let (path, query) = if kms_like {
        ("/".to_owned(), String::new())
    } else {
        let path = format!("/{}", rng.text(PATH_CHARS, 24)).replace("%", "%25");
        let query = (0..rng.below(4))
            .map(|_| {
                format!(
                    "{}={}",
                    rng.text("aZ09-_.~%20+", 6),
                    rng.text("aZ09-_.~%2F+=", 6)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        (path, query)
    };
    let uri = if query.is_empty() {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}{path}?{query}")
    };
    let op = rng.pick(&["Encrypt", "Decrypt", "DescribeKey", "ListKeyRotations"]);
    let body = if kms_like {
        format!(
            r#"{{"KeyId":"arn:aws:kms:{region}:111122223333:key/{}","EncryptionContext":{{"polykms:aad":"{}"}}}}"#,
            rng.text("0123456789abcdef-", 36),
            rng.text(TOKEN_CHARS, 40)
        )
        .into_bytes()
    } else {
        rng.bytes(300)
    };
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-amz-json-1.1".to_owned(),
        ),
        ("x-amz-target".to_owned(), format!("TrentService.{op}")),
        ("content-length".to_owned(), body.len().to_string()),
        (
            "amz-sdk-invocation-id".to_owned(),
            rng.text("0123456789abcdef-", 36),
        ),
        (
            "amz-sdk-request".to_owned(),
            format!("attempt={}; max=2", 1 + rng.below(2)),
        ),
        (
            "x-amz-user-agent".to_owned(),
            "aws-sdk-rust/1.3.x api/kms/1.129.0 os/linux lang/rust/1.95.0".to_owned(),
        ),
        (
            "user-agent".to_owned(),
            "aws-sdk-rust/1.3.x os/linux lang/rust/1.95.0".to_owned(),
        ),
    ];
    for _ in 0..rng.below(4) {
        let name = rng.pick(&[
            "X-Custom",
            "x-custom",
            "X-Amzn-Trace-Id",
            "Transfer-Encoding",
            "My-Header",
            "x-amz-meta-a",
            "X-AMZ-DATE",
            "X-Amz-Security-Token",
        ]);
        headers.push((name.to_owned(), rng.text(VALUE_CHARS, 16)));
    }
    if rng.below(5) == 0 {
        headers.push(("Host".to_owned(), "example.amazonaws.com".to_owned()));
    }
    let token = (rng.below(2) == 0).then(|| rng.text(TOKEN_CHARS, 600));
    Generated {
        method: if kms_like {
            "POST"
        } else {
            rng.pick(&["GET", "POST", "PUT"])
        }
        .to_owned(),
        uri,
        headers,
        body,
        access_key_id: format!("ASIA{}", rng.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        secret: rng.text(TOKEN_CHARS, 40),
        token,
        region,
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(rng.next() % 4_000_000_000),
        double_uri_encode: kms_like || rng.below(2) == 0,
        content_sha256_header: !kms_like && rng.below(2) == 0,
        omit_session_token: !kms_like && rng.below(4) == 0,
    }
}

/// What `aws-sigv4` (the SDK's signer) sets on the request: header name (lower case) and value.
fn oracle(g: &Generated) -> Vec<(String, String)> {
    let identity: Identity =
        Credentials::new(&g.access_key_id, &g.secret, g.token.clone(), None, "oracle").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = if g.double_uri_encode {
        PercentEncodingMode::Double
    } else {
        PercentEncodingMode::Single
    };
    settings.payload_checksum_kind = if g.content_sha256_header {
        PayloadChecksumKind::XAmzSha256
    } else {
        PayloadChecksumKind::NoHeader
    };
    settings.session_token_mode = if g.omit_session_token {
        SessionTokenMode::Exclude
    } else {
        SessionTokenMode::Include
    };
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&g.region)
        .name("kms")
        .time(g.time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let request = aws_sigv4::http_request::SignableRequest::new(
        &g.method,
        &g.uri,
        g.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&g.body),
    )
    .unwrap();
    let (instructions, _) = aws_sigv4::http_request::sign(request, &params)
        .unwrap()
        .into_parts();
    let (headers, query) = instructions.into_parts();
    assert!(query.is_empty());
    let mut out: Vec<(String, String)> = headers
        .iter()
        .map(|h| (h.name().to_ascii_lowercase(), h.value().to_owned()))
        .collect();
    out.sort();
    out
}

fn ours(g: &Generated) -> Vec<(String, String)> {
    let request = SignableRequest {
        method: &g.method,
        uri: &g.uri,
        headers: g
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        payload: Payload::Bytes(&g.body),
    };
    let credentials = SigningCredentials {
        access_key_id: &g.access_key_id,
        secret_access_key: &g.secret,
        session_token: g.token.as_deref(),
    };
    let params = SigningParams {
        double_uri_encode: g.double_uri_encode,
        content_sha256_header: g.content_sha256_header,
        omit_session_token: g.omit_session_token,
        ..kms_params(&g.region, g.time)
    };
    let mut out: Vec<(String, String)> = sign(&request, &credentials, &params)
        .unwrap()
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    out.sort();
    out
}

#[test]
fn generated_requests_are_signed_exactly_as_aws_sigv4_signs_them() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for case in 0..2000 {
        let g = generate(&mut rng);
        assert_eq!(
            ours(&g),
            oracle(&g),
            "case {case}: {} {} headers {:?}",
            g.method,
            g.uri,
            g.headers
        );
    }
}
