//! `--resources` names resolved through the API server's discovery: `secrets` (core group) or
//! `plural.group` (e.g. `deployments.apps`), at the group's preferred version.

use kube::Client;
use kube::discovery::{self, ApiResource, Scope, verbs};

use super::ReencryptError;

/// A resource the run works on.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// As given on the command line.
    pub name: String,
    /// Group, version, plural, kind.
    pub api: ApiResource,
    /// Namespaced or cluster-wide.
    pub namespaced: bool,
}

/// Splits `plural[.group]`.
pub fn split(name: &str) -> (&str, &str) {
    match name.split_once('.') {
        Some((plural, group)) => (plural, group),
        None => (name, ""),
    }
}

/// Checks the names before any request: lowercase DNS-like words.
pub fn validate(names: &[String]) -> Result<(), ReencryptError> {
    if names.is_empty() {
        return Err(ReencryptError::Config(
            "--resources: give at least one resource, e.g. secrets".into(),
        ));
    }
    for n in names {
        let ok = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !n.starts_with('.')
            && !n.ends_with('.');
        if !ok {
            return Err(ReencryptError::Config(format!(
                "--resources: {n:?} is not a resource name (plural, e.g. secrets or deployments.apps)"
            )));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(ReencryptError::Config(format!(
                "--resources: {n} is given twice"
            )));
        }
    }
    Ok(())
}

/// Resolves every name through discovery; each must support list, get and update.
pub async fn resolve(client: &Client, names: &[String]) -> Result<Vec<Resolved>, ReencryptError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let (plural, group) = split(name);
        let api_group = discovery::oneshot::group(client, group)
            .await
            .map_err(|e| discovery_error(e, name))?;
        let found = api_group
            .recommended_resources()
            .into_iter()
            .find(|(r, _)| r.plural == plural);
        let Some((api, caps)) = found else {
            return Err(ReencryptError::Config(format!(
                "--resources: the API server has no resource {plural} in group {}",
                if group.is_empty() { "core" } else { group }
            )));
        };
        for verb in [verbs::LIST, verbs::GET, verbs::UPDATE] {
            if !caps.supports_operation(verb) {
                return Err(ReencryptError::Config(format!(
                    "--resources: {name} does not support {verb}, so it cannot be rewritten"
                )));
            }
        }
        out.push(Resolved {
            name: name.clone(),
            api,
            namespaced: caps.scope == Scope::Namespaced,
        });
    }
    Ok(out)
}

/// Maps a discovery failure to the run's errors.
pub fn discovery_error(e: kube::Error, what: &str) -> ReencryptError {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => ReencryptError::Denied {
            resource: what.to_string(),
            verb: "get".into(),
            message: format!(
                "discovery for {what} was refused ({} {}): {}; the identity needs get on the \
                 API discovery paths (/api, /apis)",
                s.code, s.reason, s.message
            ),
        },
        kube::Error::Api(s) if s.code == 404 => ReencryptError::Config(format!(
            "--resources: the API server has no API group for {what}"
        )),
        kube::Error::Discovery(d) => ReencryptError::Config(format!("--resources: {what}: {d}")),
        other => ReencryptError::Unavailable(format!("discovery for {what} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_checked_before_any_request() {
        assert!(validate(&["secrets".into(), "deployments.apps".into()]).is_ok());
        for bad in [
            vec![],
            vec!["Secrets".to_string()],
            vec!["a b".into()],
            vec![".x".into()],
            vec!["secrets".into(), "secrets".into()],
        ] {
            assert!(
                matches!(validate(&bad), Err(ReencryptError::Config(_))),
                "{bad:?}"
            );
        }
        assert_eq!(split("deployments.apps"), ("deployments", "apps"));
        assert_eq!(split("secrets"), ("secrets", ""));
    }
}
