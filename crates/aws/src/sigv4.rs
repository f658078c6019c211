//! AWS Signature Version 4 for request headers, on `polykms_backend::crypto` (SHA-256 and
//! HMAC-SHA256 from AWS-LC, its FIPS module in a FIPS build) instead of the SDK's `aws-sigv4`,
//! which runs RustCrypto's `sha2`/`hmac`.
//!
//! The rules are AWS's (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html>)
//! with the SDK's choices where the spec leaves room (headers it never signs, how the query is
//! parsed, where the host comes from), so a request is signed byte for byte as `aws-sigv4`
//! would sign it: `sigv4_tests.rs` checks both, against AWS's test suite and that crate.

use std::borrow::Cow;
use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use polykms_backend::crypto::{SHA256_LEN, hmac_sha256, sha256};
use zeroize::Zeroizing;

/// The one algorithm this signer speaks.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Everything but RFC 3986's unreserved characters is percent-encoded (SigV4's `UriEncode`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same, keeping the path's `/`.
const NOT_UNRESERVED_OR_SLASH: &AsciiSet = &NOT_UNRESERVED.remove(b'/');

/// Headers proxies or the transport may change; the SDK never signs them (nor does this).
const UNSIGNED_HEADERS: [&str; 4] = [
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// Header names this signer writes.
pub(crate) const X_AMZ_DATE: &str = "x-amz-date";
pub(crate) const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
pub(crate) const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
pub(crate) const AUTHORIZATION: &str = "authorization";

/// A request that cannot be signed. Carries no credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigV4Error {
    #[error("SigV4: the request URI {0:?} has no host")]
    NoHost(String),
    #[error("SigV4: the request URI {0:?} is not a URI")]
    BadUri(String),
    #[error("SigV4: a header value is not visible ASCII/UTF-8 text")]
    BadHeaderValue,
    #[error("SigV4: {0} is not supported by polykms' signer")]
    Unsupported(&'static str),
}

/// What the request's body contributes to the signature.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// The body, hashed.
    Bytes(&'a [u8]),
    /// A body not in memory: the literal `UNSIGNED-PAYLOAD`.
    Unsigned,
}

/// The parts of an HTTP request that are signed.
#[derive(Debug, Clone)]
pub(crate) struct SignableRequest<'a> {
    pub(crate) method: &'a str,
    /// The full request URI: `scheme://authority/path?query`.
    pub(crate) uri: &'a str,
    pub(crate) headers: Vec<(&'a str, &'a str)>,
    pub(crate) payload: Payload<'a>,
}

/// The signing key's inputs. The secret key is borrowed, never copied out of the credentials
/// except into the zeroized signing-key chain.
pub(crate) struct SigningCredentials<'a> {
    pub(crate) access_key_id: &'a str,
    pub(crate) secret_access_key: &'a str,
    pub(crate) session_token: Option<&'a str>,
}

impl std::fmt::Debug for SigningCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// How to sign: the SDK's per-operation choices (`SigningOptions`) and the scope.
#[derive(Debug, Clone)]
pub(crate) struct SigningParams<'a> {
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) time: SystemTime,
    /// Percent-encode the (already encoded) path once more: every service but S3.
    pub(crate) double_uri_encode: bool,
    /// Remove `.`/`..` segments and empty segments from the path before encoding.
    pub(crate) normalize_uri_path: bool,
    /// Send and sign `x-amz-content-sha256` (S3-style services).
    pub(crate) content_sha256_header: bool,
    /// Send the session token but leave it out of the signature (a few services want that).
    pub(crate) omit_session_token: bool,
}

/// A signed request: the headers to set (replacing any of the same name) and, for tests and
/// debugging, the intermediate strings. The canonical request holds the session token, so
/// `Debug` shows only the signature.
pub(crate) struct Signed {
    pub(crate) headers: Vec<(&'static str, String)>,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "checked against AWS' vectors in tests")
    )]
    pub(crate) canonical_request: String,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "checked against AWS' vectors in tests")
    )]
    pub(crate) string_to_sign: String,
    pub(crate) signature: String,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// Signs `request` in the Authorization header.
pub(crate) fn sign(
    request: &SignableRequest<'_>,
    credentials: &SigningCredentials<'_>,
    params: &SigningParams<'_>,
) -> Result<Signed, SigV4Error> {
    let (amz_date, date) = format_time(params.time);
    let uri = split_uri(request.uri)?;
    let payload_hash = match request.payload {
        Payload::Bytes(body) => hex::encode(sha256(body)),
        Payload::Unsigned => "UNSIGNED-PAYLOAD".to_owned(),
    };

    // Headers the signer adds replace those of the request, as the SDK's signer does.
    let mut added: Vec<(&'static str, String)> = vec![(X_AMZ_DATE, amz_date.clone())];
    if let Some(token) = credentials.session_token {
        added.push((X_AMZ_SECURITY_TOKEN, token.to_owned()));
    }
    if params.content_sha256_header {
        added.push((X_AMZ_CONTENT_SHA256, payload_hash.clone()));
    }

    // (lower-case name, trimmed value) in request order; values of one name keep their order.
    let mut entries: Vec<(String, Cow<'_, str>)> = Vec::with_capacity(request.headers.len() + 4);
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        if added.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(SigV4Error::BadHeaderValue);
        }
        entries.push((name, trim_all(value)));
    }
    if !entries.iter().any(|(n, _)| n == "host") {
        entries.push(("host".to_owned(), Cow::Borrowed(uri.host)));
    }
    for (name, value) in &added {
        entries.push(((*name).to_owned(), Cow::Borrowed(value.as_str())));
    }
    entries.retain(|(name, _)| {
        let unsigned = UNSIGNED_HEADERS.contains(&name.as_str())
            || (params.omit_session_token && name == X_AMZ_SECURITY_TOKEN);
        !unsigned
    });
    entries.sort_by(|a, b| a.0.cmp(&b.0)); // stable: repeated headers keep their order
    let mut canonical_headers: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in &entries {
        match canonical_headers.last_mut() {
            Some((last, values)) if last == name => values.push(value),
            _ => canonical_headers.push((name, vec![value])),
        }
    }
    let signed_headers = canonical_headers
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(";");

    let mut canonical_request = String::with_capacity(256);
    canonical_request.push_str(request.method);
    canonical_request.push('\n');
    canonical_request.push_str(&canonical_path(uri.path, params));
    canonical_request.push('\n');
    canonical_request.push_str(&canonical_query(uri.query));
    canonical_request.push('\n');
    for (name, values) in &canonical_headers {
        canonical_request.push_str(name);
        canonical_request.push(':');
        canonical_request.push_str(&values.join(","));
        canonical_request.push('\n');
    }
    canonical_request.push('\n');
    canonical_request.push_str(&signed_headers);
    canonical_request.push('\n');
    canonical_request.push_str(&payload_hash);

    let scope = format!("{date}/{}/{}/aws4_request", params.region, params.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(sha256(canonical_request.as_bytes()))
    );
    let key = signing_key(
        credentials.secret_access_key,
        &date,
        params.region,
        params.service,
    );
    let signature = hex::encode(hmac_sha256(key.as_ref(), &[string_to_sign.as_bytes()]));

    added.push((
        AUTHORIZATION,
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    Ok(Signed {
        headers: added,
        canonical_request,
        string_to_sign,
        signature,
    })
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`;
/// every link of the chain is zeroized on drop.
fn signing_key(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<[u8; SHA256_LEN]> {
    let mut seed = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret.as_bytes());
    let k_date = Zeroizing::new(hmac_sha256(&seed, &[date.as_bytes()]));
    let k_region = Zeroizing::new(hmac_sha256(k_date.as_ref(), &[region.as_bytes()]));
    let k_service = Zeroizing::new(hmac_sha256(k_region.as_ref(), &[service.as_bytes()]));
    Zeroizing::new(hmac_sha256(k_service.as_ref(), &[b"aws4_request"]))
}

/// `(YYYYMMDDTHHMMSSZ, YYYYMMDD)` in UTC, whole seconds.
pub(crate) fn format_time(time: SystemTime) -> (String, String) {
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string();
    let amz_date: String = rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect();
    let date = amz_date[..8].to_owned();
    (amz_date, date)
}

#[derive(Debug)]
struct UriParts<'a> {
    host: &'a str,
    path: &'a str,
    query: &'a str,
}

/// Host (without a default port, as HTTP clients send it), path and query of an absolute URI.
fn split_uri(uri: &str) -> Result<UriParts<'_>, SigV4Error> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| SigV4Error::BadUri(uri.to_owned()))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let rest = &rest[authority_end..];
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // userinfo never reaches the signature (the SDK's URIs have none).
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return Err(SigV4Error::NoHost(uri.to_owned()));
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => Some(":443"),
        "http" => Some(":80"),
        _ => None,
    };
    let host = match default_port {
        Some(port) if authority.ends_with(port) && !authority.ends_with(']') => {
            &authority[..authority.len() - port.len()]
        }
        _ => authority,
    };
    Ok(UriParts { host, path, query })
}

/// The canonical URI: the path, normalized if asked, then percent-encoded once more unless the
/// service takes it single-encoded.
fn canonical_path(path: &str, params: &SigningParams<'_>) -> String {
    let path: Cow<'_, str> = if params.normalize_uri_path {
        normalize_path(path)
    } else if path.is_empty() {
        Cow::Borrowed("/")
    } else {
        Cow::Borrowed(path)
    };
    if params.double_uri_encode {
        utf8_percent_encode(&path, NOT_UNRESERVED_OR_SLASH).to_string()
    } else {
        path.into_owned()
    }
}

/// RFC 3986 5.2.4 dot-segment removal plus collapsing of empty segments, keeping a trailing
/// slash; an empty path is `/`.
fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let absolute: Cow<'_, str> = if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    };
    if !(absolute.contains('.') || absolute.contains("//")) {
        return absolute;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in absolute.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    let trailing = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|s| absolute.ends_with(s));
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    Cow::Owned(out)
}

/// The canonical query: `application/x-www-form-urlencoded` pairs decoded, each name and value
/// `UriEncode`d, sorted by encoded name then value, joined with `&`.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode_query_part(k), encode_query_part(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode_query_part(raw: &str) -> String {
    let plus_as_space = raw.replace('+', " ");
    let decoded = percent_decode_str(&plus_as_space).decode_utf8_lossy();
    utf8_percent_encode(&decoded, NOT_UNRESERVED).to_string()
}

/// Trims spaces at both ends and collapses runs of spaces (spaces only, as AWS does).
fn trim_all(value: &str) -> Cow<'_, str> {
    let trimmed = value.trim_matches(' ');
    if !trimmed.contains("  ") {
        return Cow::Borrowed(trimmed);
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut previous_space = false;
    for c in trimmed.chars() {
        if c == ' ' && previous_space {
            continue;
        }
        previous_space = c == ' ';
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
