//! StorageVersionMigration (storagemigration.k8s.io/v1alpha1): the controller's work — every
//! object of the resource updated without change, so that stale ones are stored again — done in
//! a task, with the Running and Succeeded/Failed conditions the real one sets.

use std::sync::Arc;

use http::StatusCode;
use rand::Rng as _;
use serde_json::{Value, json};

use super::{Reply, Server, json_body, known, reply, status};

/// The API group.
pub const GROUP: &str = "storagemigration.k8s.io";
/// The version served.
pub const VERSION: &str = "v1alpha1";
/// The resource.
pub const PLURAL: &str = "storageversionmigrations";

/// Discovery for the group version.
pub fn resources() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            { "name": PLURAL, "singularName": "storageversionmigration", "namespaced": false,
              "kind": "StorageVersionMigration",
              "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"] },
            { "name": format!("{PLURAL}/status"), "singularName": "", "namespaced": false,
              "kind": "StorageVersionMigration", "verbs": ["get", "patch", "update"] },
        ],
    })
}

fn condition(kind: &str, message: &str) -> Value {
    json!({ "type": kind, "status": "True", "reason": kind, "message": message,
            "lastUpdateTime": "2026-01-01T00:00:00Z" })
}

/// POST: validates, stores, starts the migration.
pub async fn create(server: &Arc<Server>, body: &[u8]) -> anyhow::Result<Reply> {
    let mut object = match json_body(body) {
        Ok(v) => v,
        Err(reply) => return Ok(*reply),
    };
    if let Some(r) = server.faults.lock().await.before_migration() {
        return Ok(r);
    }
    let spec = &object["spec"]["resource"];
    let resource = spec["resource"].as_str().unwrap_or_default().to_string();
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    if spec["version"] != "v1" || !known(&group, &resource) {
        return Ok(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("spec.resource: this fake migrates the v1 resources it serves, not {spec}"),
            json!({}),
        ));
    }
    let name = match object["metadata"]["name"].as_str() {
        Some(n) => n.to_string(),
        None => {
            let suffix: String = (0..5)
                .map(|_| {
                    char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::rng().random_range(0..27)])
                })
                .collect();
            format!(
                "{}{suffix}",
                object["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or("svm-")
            )
        }
    };
    object["metadata"]["name"] = name.clone().into();
    object["metadata"]["resourceVersion"] = "1".into();
    object["status"] = json!({ "conditions": [condition("Running", "migration started")] });
    server
        .migrations
        .lock()
        .await
        .insert(name.clone(), object.clone());
    if server.settings.svm_never_completes {
        // No migration controller: the object is served and stays Running.
        return Ok(reply(StatusCode::CREATED, &object));
    }
    let server = server.clone();
    tokio::spawn(async move {
        let result = migrate(&server, &group, &resource).await;
        let final_condition = match result {
            Ok(n) => condition("Succeeded", &format!("{n} object(s) stored again")),
            Err(e) => condition("Failed", &format!("{e:#}")),
        };
        if let Some(m) = server.migrations.lock().await.get_mut(&name) {
            m["status"]["conditions"] = json!([final_condition]);
        }
    });
    Ok(reply(StatusCode::CREATED, &object))
}

async fn migrate(server: &Server, group: &str, resource: &str) -> anyhow::Result<u64> {
    let prefix = server
        .storage
        .lock()
        .await
        .list_prefix(group, resource, None);
    let mut start = prefix.clone();
    let mut refreshed = 0;
    loop {
        let (keys, next) = server
            .storage
            .lock()
            .await
            .keys(&prefix, &start, 100)
            .await?;
        for key in keys {
            if server.storage.lock().await.refresh(&key).await? {
                refreshed += 1;
            }
        }
        match next {
            Some(n) => start = n,
            None => return Ok(refreshed),
        }
    }
}
