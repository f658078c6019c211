//! The Kubernetes API calls of `reencrypt`, through kube's client and request builder. Responses
//! are read here rather than by `Api<K>` because the decisions need what `Api` drops: the
//! `Retry-After` header of a 429/5xx and the inconsistent continue token of a 410.

use std::time::Duration;

use http::StatusCode;
use http::header::RETRY_AFTER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use kube::Client;
use kube::api::{ListParams, PostParams};
use kube::core::Request;
use kube::core::Status;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// An answer other than success from the API server (or no answer).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status; 0 when the request did not get an answer.
    pub code: u16,
    /// `Status.reason` (e.g. `Conflict`, `Expired`, `Forbidden`), when the body was a Status.
    pub reason: String,
    /// A readable message.
    pub message: String,
    /// `Retry-After` header, or `details.retryAfterSeconds`.
    pub retry_after: Option<Duration>,
    /// `metadata.continue` of a 410 Status: the list continues from there, inconsistently.
    pub continue_token: Option<String>,
}

impl ApiError {
    fn transport(e: impl std::fmt::Display) -> Self {
        ApiError {
            code: 0,
            reason: String::new(),
            message: format!("no answer from the API server: {e}"),
            retry_after: None,
            continue_token: None,
        }
    }

    /// 429, 5xx or no answer: worth another try after a pause.
    pub fn is_transient(&self) -> bool {
        self.code == 0 || self.code == 429 || self.code >= 500
    }

    /// 401 or 403: RBAC or credentials, retrying will not help.
    pub fn is_denied(&self) -> bool {
        self.code == 401 || self.code == 403
    }
}

/// One page of a metadata-only list.
#[derive(Debug, Deserialize)]
pub struct MetaPage {
    /// `continue` and `remainingItemCount`.
    #[serde(default)]
    pub metadata: ListMeta,
    /// Names (and namespaces) in list order.
    #[serde(default)]
    pub items: Vec<MetaItem>,
}

/// One listed object: its metadata only (PartialObjectMetadata).
#[derive(Debug, Deserialize)]
pub struct MetaItem {
    /// Name and namespace.
    pub metadata: ObjectMeta,
}

/// Sends one request built by kube and reads the answer as `T` or as an [`ApiError`].
pub async fn call<T: DeserializeOwned>(
    client: &Client,
    request: http::Request<Vec<u8>>,
) -> Result<T, ApiError> {
    use http_body_util::BodyExt as _;
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(ApiError::transport)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(ApiError::transport)?
        .to_bytes();
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| ApiError {
            code: status.as_u16(),
            reason: "BadResponse".into(),
            message: format!("the API server's answer does not parse: {e}"),
            retry_after: None,
            continue_token: None,
        });
    }
    Err(error_from(status, retry_after, &body))
}

fn error_from(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) => ApiError {
            code: status.as_u16(),
            reason: s.reason.clone(),
            message: if s.message.is_empty() {
                format!("HTTP {status}")
            } else {
                s.message.clone()
            },
            retry_after: retry_after.or_else(|| {
                s.details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(s.into()))
            }),
            continue_token: s
                .metadata
                .as_ref()
                .and_then(|m| m.continue_.clone())
                .filter(|c| !c.is_empty()),
        },
        Err(_) => {
            // Not every error body is a Status (a proxy, or the apiserver's own 429 of priority
            // and fairness, answers in plain text).
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            ApiError {
                code: status.as_u16(),
                reason: String::new(),
                message: if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!(
                        "HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    )
                },
                retry_after,
                continue_token: None,
            }
        }
    }
}

/// Request builders for one resource, namespaced or across all namespaces.
#[derive(Debug, Clone)]
pub struct ResourceUrls {
    /// The collection path for listing (`/api/v1/secrets` or `/api/v1/namespaces/ns/secrets`).
    list: String,
    /// `/api/v1` or `/apis/<group>/<version>`.
    base: String,
    /// The plural name.
    plural: String,
    namespaced: bool,
}

impl ResourceUrls {
    /// Paths for `resource`, listed in `namespace` or everywhere.
    pub fn new(
        resource: &kube::discovery::ApiResource,
        namespaced: bool,
        namespace: Option<&str>,
    ) -> Self {
        use kube::Resource as _;
        let list = kube::api::DynamicObject::url_path(resource, namespace.filter(|_| namespaced));
        let base = kube::api::DynamicObject::url_path(resource, None);
        let base = base
            .strip_suffix(&format!("/{}", resource.plural))
            .unwrap_or(&base)
            .to_string();
        ResourceUrls {
            list,
            base,
            plural: resource.plural.clone(),
            namespaced,
        }
    }

    fn object_collection(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.base, self.plural),
            None => format!("{}/{}", self.base, self.plural),
        }
    }

    /// One page of names, metadata only.
    pub fn list_page(&self, limit: u32, continue_token: Option<&str>) -> http::Request<Vec<u8>> {
        let mut params = ListParams::default().limit(limit);
        if let Some(c) = continue_token {
            params = params.continue_token(c);
        }
        Request::new(&self.list)
            .list_metadata(&params)
            .expect("a list request with a limit and a continue token always builds")
    }

    /// GET one object.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> http::Request<Vec<u8>> {
        Request::new(self.object_collection(namespace))
            .get(name, &Default::default())
            .expect("a GET request always builds")
    }

    /// PUT one object (its body carries the resourceVersion it was read at).
    pub fn replace(
        &self,
        namespace: Option<&str>,
        name: &str,
        object: &serde_json::Value,
    ) -> http::Request<Vec<u8>> {
        let body = serde_json::to_vec(object).expect("a JSON value serialises");
        Request::new(self.object_collection(namespace))
            .replace(name, &PostParams::default(), body)
            .expect("a PUT request always builds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_list_carries_the_inconsistent_continue_token() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{"continue":"abc"},
            "status":"Failure","message":"too old","reason":"Expired","code":410}"#;
        let e = error_from(StatusCode::GONE, None, body);
        assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
        assert_eq!(e.continue_token.as_deref(), Some("abc"));
        assert!(!e.is_transient() && !e.is_denied());
    }

    #[test]
    fn retry_after_comes_from_the_header_or_the_status_details() {
        let plain = error_from(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"Too many requests, please try again later.",
        );
        assert_eq!(plain.retry_after, Some(Duration::from_secs(3)));
        assert!(plain.message.contains("Too many requests") && plain.is_transient());
        let status = br#"{"kind":"Status","message":"slow down","reason":"TooManyRequests",
            "details":{"retryAfterSeconds":7},"code":429}"#;
        let e = error_from(StatusCode::TOO_MANY_REQUESTS, None, status);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        let header_wins = error_from(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(1)),
            status,
        );
        assert_eq!(header_wins.retry_after, Some(Duration::from_secs(1)));
        let denied = error_from(
            StatusCode::FORBIDDEN,
            None,
            br#"{"kind":"Status","message":"no","code":403}"#,
        );
        assert!(denied.is_denied() && denied.retry_after.is_none());
    }

    #[test]
    fn urls_follow_the_api_paths_for_core_and_named_groups() {
        let core = kube::discovery::ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Secret".into(),
            plural: "secrets".into(),
        };
        let all = ResourceUrls::new(&core, true, None);
        assert_eq!(all.list_page(10, None).uri().path(), "/api/v1/secrets");
        let q = all
            .list_page(10, Some("tok"))
            .uri()
            .query()
            .unwrap_or_default()
            .to_string();
        assert!(q.contains("limit=10") && q.contains("continue=tok"), "{q}");
        assert_eq!(
            all.get(Some("ns"), "a").uri().path(),
            "/api/v1/namespaces/ns/secrets/a"
        );
        let one = ResourceUrls::new(&core, true, Some("ns"));
        assert_eq!(
            one.list_page(1, None).uri().path(),
            "/api/v1/namespaces/ns/secrets"
        );
        let apps = kube::discovery::ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        };
        let put =
            ResourceUrls::new(&apps, true, None).replace(Some("ns"), "d", &serde_json::json!({}));
        assert_eq!(put.method(), http::Method::PUT);
        assert_eq!(
            put.uri().path(),
            "/apis/apps/v1/namespaces/ns/deployments/d"
        );
    }
}
