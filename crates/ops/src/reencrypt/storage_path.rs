//! Where kube-apiserver keeps a resource in etcd, for the check after a run. A wrong path reads
//! an empty prefix, and an empty prefix has nothing wrong in it: so the paths follow upstream
//! exactly, and [`super::verify`] fails a prefix that holds nothing while the run saw objects.
//!
//! Upstream (kubernetes/kubernetes):
//! - resources of the groups kube-apiserver serves from its storage factory live at
//!   `<etcd-prefix>/<resource>/`, the group left out (`pkg/kubeapiserver/
//!   default_storage_factory_builder.go`, `DefaultStorageFactory.ResourcePrefix` in
//!   `staging/src/k8s.io/apiserver/pkg/server/storage/storage_factory.go`), except the
//!   `SpecialDefaultResourcePrefixes` of that file (services → `services/specs`, ...);
//! - everything stored through `SimpleRestOptionsFactory` (`staging/src/k8s.io/apiserver/pkg/
//!   server/options/etcd.go`) or the CRD handler's REST options getter (`staging/src/k8s.io/
//!   apiextensions-apiserver/pkg/apiserver/customresource_handler.go`) lives at
//!   `<etcd-prefix>/<group>/<resource>/`: custom resources, `customresourcedefinitions`
//!   (apiextensions.k8s.io) and `apiservices` (apiregistration.k8s.io).
//!
//! The etcd key of an object is then that prefix + `<namespace>/<name>` (namespaced) or `<name>`
//! (`staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`, `NamespaceKeyFunc`).

/// `SpecialDefaultResourcePrefixes`: (group, resource) → path under the etcd prefix.
const SPECIAL: [(&str, &str, &str); 6] = [
    ("", "replicationcontrollers", "controllers"),
    ("", "endpoints", "services/endpoints"),
    ("", "nodes", "minions"),
    ("", "services", "services/specs"),
    ("extensions", "ingresses", "ingress"),
    ("networking.k8s.io", "ingresses", "ingress"),
];

/// Groups whose resources kube-apiserver stores through its storage factory (the group does not
/// appear in the path). Every other group — custom resources, apiextensions.k8s.io,
/// apiregistration.k8s.io, aggregated APIs — is stored under `<group>/<resource>`.
const STORAGE_FACTORY_GROUPS: [&str; 20] = [
    "",
    "admissionregistration.k8s.io",
    "apps",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// The path of `resource` of `group` under the etcd prefix, without slashes at either end.
pub fn resource_path(group: &str, resource: &str) -> String {
    if let Some((_, _, path)) = SPECIAL
        .iter()
        .find(|(g, r, _)| *g == group && *r == resource)
    {
        return (*path).to_string();
    }
    if STORAGE_FACTORY_GROUPS.contains(&group) {
        resource.to_string()
    } else {
        format!("{group}/{resource}")
    }
}

/// The etcd prefix under which the apiserver stores `resource` (`plural` or `plural.group`, as
/// `--resources` takes it): `<root>/<path>/` [+ `<namespace>/`].
pub fn etcd_prefix(root: &str, resource: &str, namespace: Option<&str>) -> String {
    let (plural, group) = super::resources::split(resource);
    let root = root.trim_end_matches('/');
    let path = resource_path(group, plural);
    match namespace {
        Some(ns) => format!("{root}/{path}/{ns}/"),
        None => format!("{root}/{path}/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_resources_drop_the_group_and_some_have_legacy_paths() {
        let cases = [
            ("secrets", None, "/registry/secrets/"),
            ("configmaps", Some("app"), "/registry/configmaps/app/"),
            ("deployments.apps", None, "/registry/deployments/"),
            ("services", Some("x"), "/registry/services/specs/x/"),
            ("endpoints", None, "/registry/services/endpoints/"),
            ("nodes", None, "/registry/minions/"),
            ("replicationcontrollers", None, "/registry/controllers/"),
            ("ingresses.networking.k8s.io", None, "/registry/ingress/"),
            (
                "clusterroles.rbac.authorization.k8s.io",
                None,
                "/registry/clusterroles/",
            ),
        ];
        for (resource, ns, want) in cases {
            assert_eq!(etcd_prefix("/registry/", resource, ns), want, "{resource}");
        }
    }

    #[test]
    fn custom_and_aggregator_resources_keep_their_group_in_the_path() {
        assert_eq!(
            etcd_prefix("/registry", "widgets.example.com", Some("ns")),
            "/registry/example.com/widgets/ns/"
        );
        assert_eq!(
            etcd_prefix(
                "/registry",
                "customresourcedefinitions.apiextensions.k8s.io",
                None
            ),
            "/registry/apiextensions.k8s.io/customresourcedefinitions/"
        );
        assert_eq!(
            etcd_prefix("/registry", "apiservices.apiregistration.k8s.io", None),
            "/registry/apiregistration.k8s.io/apiservices/"
        );
    }
}
