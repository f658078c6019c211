//! `serve-api`: a fake Kubernetes API server for `polykms reencrypt` tests. It serves what the
//! command uses, with the real API's documented semantics — legacy discovery, paged lists
//! (limit/continue, remainingItemCount, 410 Expired with an inconsistent continue token once etcd
//! compacted the list's revision), GET, PUT with resourceVersion preconditions (409), 404, bearer
//! tokens (401), and StorageVersionMigration — and stores objects in etcd as kube-apiserver does
//! with a KMS v2 plugin. Faults on demand: 429 with Retry-After, 403 for a verb, writes or deletes
//! by "someone else" between the client's GET and PUT, compaction that expires continue tokens.

mod faults;
mod storage;
mod svm;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub use faults::Faults;
pub use storage::Storage;
use storage::{Listed, Updated};

/// Resources the fake serves (all namespaced, all at version v1): group, plural, singular,
/// kind. services are stored at `services/specs` as kube-apiserver does; widgets.example.com
/// stands for a custom resource (`<group>/<plural>` in etcd).
const RESOURCES: [(&str, &str, &str, &str); 4] = [
    ("", "secrets", "secret", "Secret"),
    ("", "configmaps", "configmap", "ConfigMap"),
    ("", "services", "service", "Service"),
    (CUSTOM_GROUP, "widgets", "widget", "Widget"),
];
/// The group of the custom resource the fake serves.
const CUSTOM_GROUP: &str = "example.com";

/// Settings of `serve-api`.
pub struct Settings {
    /// Where to listen (port 0: any).
    pub listen: SocketAddr,
    /// Bearer token clients must present.
    pub token: String,
    /// Offer storagemigration.k8s.io.
    pub storage_version_migration: bool,
    /// Kubeconfig to write once listening.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Faults to inject.
    pub faults: Faults,
    /// StorageVersionMigrations stay Running: the API is served, no controller acts on it.
    pub svm_never_completes: bool,
}

struct Server {
    storage: Mutex<Storage>,
    faults: Mutex<Faults>,
    migrations: Mutex<HashMap<String, Value>>,
    settings: Settings,
}

/// Serves until the process is killed.
pub async fn serve(storage: Storage, settings: Settings) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .context("binding the fake API server")?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    if let Some(path) = &settings.kubeconfig {
        std::fs::write(path, kubeconfig(&url, &settings.token))
            .context("writing the kubeconfig")?;
    }
    println!("{}", json!({ "listening": url }));
    let server = Arc::new(Server {
        storage: Mutex::new(storage),
        faults: Mutex::new(settings.faults.clone()),
        migrations: Mutex::new(HashMap::new()),
        settings,
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn kubeconfig(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         users:\n- name: reencrypt\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  \
         context:\n    cluster: fake\n    user: reencrypt\ncurrent-context: fake\n"
    )
}

type Reply = Response<Full<Bytes>>;

fn reply(code: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response with a valid status and header builds")
}

/// A `metav1.Status` failure.
fn status(code: StatusCode, reason: &str, message: &str, extra: Value) -> Reply {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    reply(code, &body)
}

/// A request body as JSON, or the 400 BadRequest Status the apiserver answers instead.
fn json_body(body: &[u8]) -> Result<Value, Box<Reply>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("body: {e}"),
            json!({}),
        ))
    })
}

/// The route of a request, by path.
enum Route<'a> {
    CoreVersions,
    CoreResources,
    Groups,
    GroupResources(&'a str, &'a str),
    Namespace(&'a str),
    List {
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    },
    Object {
        group: &'a str,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
    },
    Migrations,
    Migration(&'a str),
    Unknown,
}

/// The API group of a resource path: `/api/...` is the core group, `/apis/<group>/...`.
fn group_of<'a>(parts: &[&'a str]) -> &'a str {
    match parts {
        ["apis", group, ..] => group,
        _ => "",
    }
}

fn route(path: &str) -> Route<'_> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api"] => Route::CoreVersions,
        ["api", "v1"] => Route::CoreResources,
        ["apis"] => Route::Groups,
        ["apis", svm::GROUP, svm::VERSION, svm::PLURAL] => Route::Migrations,
        ["apis", svm::GROUP, svm::VERSION, svm::PLURAL, name] => Route::Migration(name),
        ["apis", group, version] => Route::GroupResources(group, version),
        ["api", "v1", "namespaces", name] => Route::Namespace(name),
        ["api", "v1", resource] | ["apis", _, "v1", resource] => Route::List {
            group: group_of(&parts),
            resource,
            namespace: None,
        },
        ["api", "v1", "namespaces", ns, resource]
        | ["apis", _, "v1", "namespaces", ns, resource] => Route::List {
            group: group_of(&parts),
            resource,
            namespace: Some(ns),
        },
        ["api", "v1", "namespaces", ns, resource, name]
        | ["apis", _, "v1", "namespaces", ns, resource, name] => Route::Object {
            group: group_of(&parts),
            resource,
            namespace: ns,
            name,
        },
        _ => Route::Unknown,
    }
}

impl Server {
    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Reply {
        match self.handle_inner(req).await {
            Ok(r) => r,
            Err(e) => status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("Internal error occurred: {e:#}"),
                json!({}),
            ),
        }
    }

    async fn handle_inner(self: &Arc<Self>, req: Request<Incoming>) -> anyhow::Result<Reply> {
        let expected = format!("Bearer {}", self.settings.token);
        if req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            != Some(expected.as_str())
        {
            return Ok(status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
                json!({}),
            ));
        }
        let path = req.uri().path().to_string();
        let query: HashMap<String, String> = req.uri().query().map(url_pairs).unwrap_or_default();
        let metadata_only = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
        let method = req.method().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .context("reading the body")?
            .to_bytes();
        match (route(&path), method) {
            (Route::CoreVersions, Method::GET) => Ok(reply(
                StatusCode::OK,
                &json!({
                    "kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }],
                }),
            )),
            (Route::CoreResources, Method::GET) => Ok(reply(StatusCode::OK, &core_resources())),
            (Route::Groups, Method::GET) => Ok(reply(StatusCode::OK, &self.groups())),
            (Route::GroupResources(group, version), Method::GET) => {
                if self.settings.storage_version_migration
                    && group == svm::GROUP
                    && version == svm::VERSION
                {
                    Ok(reply(StatusCode::OK, &svm::resources()))
                } else if group == CUSTOM_GROUP && version == "v1" {
                    Ok(reply(StatusCode::OK, &resource_list(CUSTOM_GROUP)))
                } else {
                    Ok(not_found(&path))
                }
            }
            (Route::Namespace("kube-system"), Method::GET) => {
                let uid = self.storage.lock().await.cluster_uid();
                Ok(reply(
                    StatusCode::OK,
                    &json!({ "apiVersion": "v1", "kind": "Namespace",
                             "metadata": { "name": "kube-system", "uid": uid } }),
                ))
            }
            (
                Route::List {
                    group,
                    resource,
                    namespace,
                },
                Method::GET,
            ) if known(group, resource) => {
                self.list(group, resource, namespace, &query, metadata_only)
                    .await
            }
            (
                Route::Object {
                    group,
                    resource,
                    namespace,
                    name,
                },
                Method::GET,
            ) if known(group, resource) => self.get(group, resource, namespace, name).await,
            (
                Route::Object {
                    group,
                    resource,
                    namespace,
                    name,
                },
                Method::PUT,
            ) if known(group, resource) => self.put(group, resource, namespace, name, &body).await,
            (Route::Migrations, Method::POST) if self.settings.storage_version_migration => {
                svm::create(self, &body).await
            }
            (Route::Migration(name), Method::GET) if self.settings.storage_version_migration => {
                Ok(match self.migrations.lock().await.get(name) {
                    Some(m) => reply(StatusCode::OK, m),
                    None => not_found(&path),
                })
            }
            _ => Ok(not_found(&path)),
        }
    }

    fn groups(&self) -> Value {
        let custom = json!({ "groupVersion": format!("{CUSTOM_GROUP}/v1"), "version": "v1" });
        let mut groups = vec![
            json!({ "name": CUSTOM_GROUP, "versions": [custom.clone()], "preferredVersion": custom }),
        ];
        if self.settings.storage_version_migration {
            let gv = json!({ "groupVersion": format!("{}/{}", svm::GROUP, svm::VERSION), "version": svm::VERSION });
            groups.push(
                json!({ "name": svm::GROUP, "versions": [gv.clone()], "preferredVersion": gv }),
            );
        }
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    async fn list(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        query: &HashMap<String, String>,
        metadata_only: bool,
    ) -> anyhow::Result<Reply> {
        let continue_token = query.get("continue").filter(|c| !c.is_empty());
        if let Some(r) = self
            .faults
            .lock()
            .await
            .before("list", resource, namespace, None)
        {
            return Ok(r);
        }
        let mut storage = self.storage.lock().await;
        if continue_token.is_some() && self.faults.lock().await.expire_now() {
            let marker = storage.marker_key();
            storage.store.compact_now(&marker).await?;
        }
        let limit = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let base = storage.list_prefix(group, resource, None);
        let prefix = storage.list_prefix(group, resource, namespace);
        match storage
            .list(
                &base,
                &prefix,
                limit,
                continue_token.map(String::as_str),
                metadata_only,
            )
            .await?
        {
            Listed::Page(p) => Ok(reply(StatusCode::OK, &p)),
            Listed::Expired(token) => Ok(status(
                StatusCode::GONE,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter, or use the continue \
                 token in this response to retrieve the remainder of the results. Continuing with \
                 the provided token results in an inconsistent list - objects that were created, \
                 modified, or deleted between the time the first chunk was returned and now may \
                 show up in the list.",
                json!({ "metadata": { "continue": token } }),
            )),
            Listed::BadContinue(m) => {
                Ok(status(StatusCode::BAD_REQUEST, "BadRequest", &m, json!({})))
            }
        }
    }

    async fn get(
        &self,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Reply> {
        let mut storage = self.storage.lock().await;
        let key = storage.key(group, resource, namespace, name);
        let fault = self
            .faults
            .lock()
            .await
            .before("get", resource, Some(namespace), Some(name));
        if let Some(r) = fault {
            if r.status() == StatusCode::NOT_FOUND {
                // "Deleted by someone else between the list and this GET".
                storage.store.delete(key.as_bytes()).await?;
            }
            return Ok(r);
        }
        Ok(match storage.get(&key).await? {
            Some(o) => reply(StatusCode::OK, &o),
            None => object_not_found(resource, name),
        })
    }

    async fn put(
        &self,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> anyhow::Result<Reply> {
        let object = match json_body(body) {
            Ok(v) => v,
            Err(reply) => return Ok(*reply),
        };
        if object["metadata"]["name"] != name || object["metadata"]["namespace"] != namespace {
            return Ok(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the name or namespace of the object does not match the request",
                json!({}),
            ));
        }
        let mut storage = self.storage.lock().await;
        let key = storage.key(group, resource, namespace, name);
        let fault =
            self.faults
                .lock()
                .await
                .before("update", resource, Some(namespace), Some(name));
        if let Some(r) = fault {
            if r.status() == StatusCode::CONFLICT {
                // "Another apiserver wrote it between the client's GET and this PUT": bump it,
                // then let the precondition fail as it would.
                storage.touch(&key).await?;
            } else {
                return Ok(r);
            }
        }
        Ok(match storage.update(&key, object).await? {
            Updated::Ok(o) => reply(StatusCode::OK, &o),
            Updated::NotFound => object_not_found(resource, name),
            Updated::Conflict => status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                     modified; please apply your changes to the latest version and try again"
                ),
                json!({ "details": { "name": name, "kind": resource } }),
            ),
        })
    }
}

fn known(group: &str, resource: &str) -> bool {
    RESOURCES
        .iter()
        .any(|(g, p, _, _)| *g == group && *p == resource)
}

fn core_resources() -> Value {
    resource_list("")
}

/// Discovery of the resources of `group` (version v1).
fn resource_list(group: &str) -> Value {
    let verbs = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|(g, _, _, _)| *g == group)
        .map(|(_, plural, singular, kind)| {
            json!({ "name": plural, "singularName": singular, "namespaced": true, "kind": kind, "verbs": verbs })
        })
        .collect();
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({ "kind": "APIResourceList", "groupVersion": group_version, "resources": resources })
}

fn not_found(path: &str) -> Reply {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the server could not find the requested resource ({path})"),
        json!({}),
    )
}

fn object_not_found(resource: &str, name: &str) -> Reply {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        json!({ "details": { "name": name, "kind": resource } }),
    )
}

/// `a=b&c=d`, percent-decoded.
fn url_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}
