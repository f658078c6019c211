//! Faults injected on demand, counted per request kind so that tests are deterministic.

use http::StatusCode;
use serde_json::json;

use super::{Reply, status};

/// What to break, and when (0 = never).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every Nth request (list, get, update) is answered 429 with `Retry-After: 1`.
    pub throttle_every: u64,
    /// Every Nth update finds the object written by someone else since the client's GET (409).
    pub conflict_every: u64,
    /// Every Nth get finds the object deleted since the list (404).
    pub delete_every: u64,
    /// This verb (`list`, `get`, `update`) is refused with 403 ...
    pub forbid: Option<String>,
    /// ... after this many requests with it were allowed.
    pub forbid_after: u64,
    /// Every Nth list request with a continue token finds etcd compacted past the token's
    /// revision (410 Expired).
    pub expire_every: u64,
    /// GETs of these objects (`namespace/name`) are answered 503 with `Retry-After: 0`: an
    /// outage of the objects' storage that outlasts the client's retries.
    pub fail_objects: Vec<String>,
    /// The first N StorageVersionMigration creates are answered 429 with `Retry-After: 1`.
    pub throttle_migration_creates: u64,
    /// Requests seen so far, per kind.
    pub seen: Seen,
}

/// Request counts.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    requests: u64,
    lists: u64,
    gets: u64,
    updates: u64,
    continued: u64,
    migration_creates: u64,
}

fn every(n: u64, count: u64) -> bool {
    n > 0 && count.is_multiple_of(n)
}

impl Faults {
    /// A fault to answer with instead of serving the request, if one is due. A 404 for a get
    /// means "delete it first", a 409 for an update "write it first".
    pub fn before(
        &mut self,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Option<Reply> {
        self.seen.requests += 1;
        if let (Some(ns), Some(n), "get") = (namespace, name, verb)
            && self.fail_objects.iter().any(|o| *o == format!("{ns}/{n}"))
        {
            let mut r = status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("etcdserver: request timed out reading {resource} {ns}/{n}"),
                json!({}),
            );
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("0"));
            return Some(r);
        }
        if every(self.throttle_every, self.seen.requests) {
            let mut r = status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests, please try again later.",
                json!({ "details": { "retryAfterSeconds": 1 } }),
            );
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("1"));
            return Some(r);
        }
        let count = match verb {
            "list" => &mut self.seen.lists,
            "get" => &mut self.seen.gets,
            _ => &mut self.seen.updates,
        };
        *count += 1;
        let count = *count;
        if self.forbid.as_deref() == Some(verb) && count > self.forbid_after {
            let target = match name {
                Some(n) => format!("{resource} \"{n}\""),
                None => resource.to_string(),
            };
            let scope = match namespace {
                Some(ns) => format!("in the namespace \"{ns}\""),
                None => "at the cluster scope".into(),
            };
            return Some(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "{target} is forbidden: User \"reencrypt\" cannot {verb} resource \
                     \"{resource}\" in API group \"\" {scope}"
                ),
                json!({ "details": { "name": name.unwrap_or_default(), "kind": resource } }),
            ));
        }
        let due = match verb {
            "get" => every(self.delete_every, count),
            "update" => every(self.conflict_every, count),
            _ => false,
        };
        due.then(|| match verb {
            "get" => status(StatusCode::NOT_FOUND, "NotFound", "deleted", json!({})),
            _ => status(StatusCode::CONFLICT, "Conflict", "written", json!({})),
        })
    }

    /// A 429 for a StorageVersionMigration create, while the first ones are to be throttled.
    pub fn before_migration(&mut self) -> Option<Reply> {
        self.seen.migration_creates += 1;
        (self.seen.migration_creates <= self.throttle_migration_creates).then(|| {
            let mut r = status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests, please try again later.",
                json!({ "details": { "retryAfterSeconds": 1 } }),
            );
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("1"));
            r
        })
    }

    /// True when this continued list is to find its revision compacted.
    pub fn expire_now(&mut self) -> bool {
        self.seen.continued += 1;
        every(self.expire_every, self.seen.continued)
    }
}
