//! `--use-storage-version-migration`: the apiserver rewrites the objects itself. One
//! StorageVersionMigration per resource (storagemigration.k8s.io, found by discovery), followed
//! until its Succeeded or Failed condition; no client reads the objects.

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::PostParams;
use kube::core::Request;
use kube::discovery;
use serde::Serialize;
use serde_json::{Value, json};

use super::api::ApiError;
use super::progress::Progress;
use super::resources::{self, Resolved};
use super::rewrite::{self, RateLimiter};
use super::summary::{ResourceSummary, Summary};
use super::{Options, ReencryptError, StopFlag};

const GROUP: &str = "storagemigration.k8s.io";
const PLURAL: &str = "storageversionmigrations";
const POLL: Duration = Duration::from_secs(1);

/// How a migration ended.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationResult {
    /// The StorageVersionMigration's name.
    pub name: String,
    /// `Succeeded`, `Failed`, `would create` (dry run) or `Running` (interrupted).
    pub condition: String,
}

/// Creates and follows one migration per resource.
pub async fn run(
    client: &Client,
    options: &Options,
    stop: &StopFlag,
) -> Result<Summary, ReencryptError> {
    let group = match discovery::oneshot::group(client, GROUP).await {
        Ok(g) => g,
        Err(kube::Error::Discovery(_)) => return Err(ReencryptError::NoStorageVersionMigration),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(ReencryptError::NoStorageVersionMigration);
        }
        Err(e) => return Err(resources::discovery_error(e, GROUP)),
    };
    let version = group.preferred_version_or_latest().to_string();
    let Some((svm_api, _)) = group
        .versioned_resources(&version)
        .into_iter()
        .find(|(r, _)| r.plural == PLURAL)
    else {
        return Err(ReencryptError::NoStorageVersionMigration);
    };
    let collection = {
        use kube::Resource as _;
        kube::api::DynamicObject::url_path(&svm_api, None)
    };
    let targets = resources::resolve(client, &options.resources).await?;
    let progress = Progress::new(options.progress);
    let limiter = RateLimiter::new(options.qps)?;
    let mut summary = Summary {
        dry_run: options.dry_run,
        ..Default::default()
    };
    for target in &targets {
        let mut entry = ResourceSummary {
            resource: target.name.clone(),
            cluster_scoped: !target.namespaced,
            ..Default::default()
        };
        if options.dry_run {
            entry.migration = Some(MigrationResult {
                name: format!("{GROUP}/{version} for {}", target.name),
                condition: "would create".into(),
            });
            entry.done = true;
            summary.resources.push(entry);
            continue;
        }
        let body = serde_json::to_vec(&migration(&version, target)).expect("JSON");
        // Retried like every request of a run. A create retried after a 5xx whose first attempt
        // did land leaves a second migration of the same resource: harmless, it finds nothing
        // stale.
        let created: Value = rewrite::send(client, &limiter, || {
            Request::new(&collection)
                .create(&PostParams::default(), body.clone())
                .expect("a create request always builds")
        })
        .await
        .map_err(|e| api_failure(e, &target.name, "create", PLURAL))?;
        let name = created["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        progress.note(&format!(
            "{}: created StorageVersionMigration {name}",
            target.name
        ));
        let deadline = Instant::now() + options.timeout;
        let condition = loop {
            if stop.is_stopped() {
                break "Running".to_string();
            }
            if Instant::now() >= deadline {
                return Err(ReencryptError::Unavailable(format!(
                    "StorageVersionMigration {name} for {} did not finish within --timeout {}: \
                     the API is served but no migration controller seems to act on it \
                     (kube-controller-manager needs the StorageVersionMigrator feature gate and \
                     its storage-version-migrator controller); run without \
                     --use-storage-version-migration to rewrite from the client",
                    target.name,
                    humanize(options.timeout)
                )));
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
            let current: Value = match rewrite::send(client, &limiter, || {
                Request::new(&collection)
                    .get(&name, &Default::default())
                    .expect("a GET request always builds")
            })
            .await
            {
                Ok(v) => v,
                // Still unavailable after the retries: keep polling until the deadline.
                Err(e) if e.is_transient() => continue,
                Err(e) => return Err(api_failure(e, &target.name, "get", PLURAL)),
            };
            if let Some(c) = final_condition(&current) {
                break c;
            }
        };
        progress.note(&format!("{}: {name} {condition}", target.name));
        entry.done = condition == "Succeeded";
        if condition == "Failed" {
            entry.counts.failed += 1;
            summary.total.failed += 1;
        }
        let interrupted = condition == "Running";
        entry.migration = Some(MigrationResult { name, condition });
        summary.resources.push(entry);
        if interrupted {
            summary.interrupted = true;
            break;
        }
    }
    Ok(summary)
}

/// `90s`, `5m`, `1h30m`: a duration as `--timeout` takes it.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        format!("{}ms", d.as_millis())
    } else {
        out
    }
}

fn migration(version: &str, target: &Resolved) -> Value {
    // v1alpha1 names the version of the resource to migrate; later versions take the group and
    // resource only.
    let resource = if version == "v1alpha1" {
        json!({ "group": target.api.group, "version": target.api.version, "resource": target.api.plural })
    } else {
        json!({ "group": target.api.group, "resource": target.api.plural })
    };
    let base = target.name.replace('.', "-");
    json!({
        "apiVersion": format!("{GROUP}/{version}"),
        "kind": "StorageVersionMigration",
        "metadata": { "generateName": format!("polykms-reencrypt-{base}-") },
        "spec": { "resource": resource },
    })
}

/// `Succeeded` or `Failed` once one of them is True.
fn final_condition(object: &Value) -> Option<String> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["type"].as_str())
        .find(|t| *t == "Succeeded" || *t == "Failed")
        .map(str::to_string)
}

fn api_failure(e: ApiError, resource: &str, verb: &str, on: &str) -> ReencryptError {
    if e.is_denied() {
        ReencryptError::Denied {
            resource: resource.to_string(),
            verb: verb.to_string(),
            message: format!(
                "the API server refused to {verb} {on} ({e}): RBAC must allow create and get on \
                 {GROUP} {on} for this identity"
            ),
        }
    } else {
        ReencryptError::Unavailable(format!("{verb} {on} for {resource} failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_ends_on_a_true_succeeded_or_failed_condition() {
        let with = |conds: Value| json!({ "status": { "conditions": conds } });
        assert_eq!(final_condition(&json!({})), None);
        assert_eq!(
            final_condition(&with(json!([{ "type": "Running", "status": "True" }]))),
            None
        );
        assert_eq!(
            final_condition(&with(json!([
                { "type": "Running", "status": "False" },
                { "type": "Succeeded", "status": "True" }
            ]))),
            Some("Succeeded".into())
        );
        assert_eq!(
            final_condition(&with(json!([{ "type": "Failed", "status": "True" }]))),
            Some("Failed".into())
        );
    }

    #[test]
    fn timeouts_print_as_the_flag_takes_them() {
        assert_eq!(humanize(Duration::from_secs(5400)), "1h30m");
        assert_eq!(humanize(Duration::from_secs(3)), "3s");
        assert_eq!(humanize(Duration::from_millis(200)), "200ms");
    }
}
