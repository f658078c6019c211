//! Which API resource an etcd key belongs to, for the census: the inverse of where
//! kube-apiserver stores a resource (`reencrypt::resource_path`, which cites upstream).

/// Paths under the etcd prefix that are not the resource's plural (`SpecialDefaultResourcePrefixes`).
const SPECIAL: [(&str, &str); 5] = [
    ("controllers", "replicationcontrollers"),
    ("services/endpoints", "endpoints"),
    ("minions", "nodes"),
    ("services/specs", "services"),
    ("ingress", "ingresses"),
];

/// The resource of `key`, read below `root` (the apiserver's `--etcd-prefix`): `secrets`,
/// `services`, `widgets.example.com` (custom resources are stored under `<group>/<plural>`).
/// None when `key` is not below `root`.
pub fn resource_of(key: &str, root: &str) -> Option<String> {
    let root = root.trim_end_matches('/');
    let rest = key.strip_prefix(root)?.strip_prefix('/')?;
    let mut segments = rest.split('/');
    let first = segments.next().filter(|s| !s.is_empty())?;
    let second = segments.next();
    if let Some((_, resource)) = SPECIAL.iter().find(|(path, _)| {
        let mut parts = path.split('/');
        parts.next() == Some(first) && parts.next().is_none_or(|p| Some(p) == second)
    }) {
        return Some((*resource).to_string());
    }
    // A group name has a dot; no resource plural has one.
    match second {
        Some(plural) if first.contains('.') && !plural.is_empty() => {
            Some(format!("{plural}.{first}"))
        }
        _ => Some(first.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_as_reencrypt_takes_them() {
        let cases = [
            ("/registry/secrets/ns/a", "secrets"),
            ("/registry/configmaps/kube-system/b", "configmaps"),
            ("/registry/services/specs/ns/svc", "services"),
            ("/registry/services/endpoints/ns/svc", "endpoints"),
            ("/registry/minions/node-1", "nodes"),
            ("/registry/example.com/widgets/ns/w", "widgets.example.com"),
            ("/registry/clusterroles/admin", "clusterroles"),
        ];
        for (key, want) in cases {
            assert_eq!(
                resource_of(key, "/registry").as_deref(),
                Some(want),
                "{key}"
            );
            assert_eq!(
                resource_of(key, "/registry/").as_deref(),
                Some(want),
                "{key}"
            );
        }
        for (resource, path) in [("services", "services/specs"), ("nodes", "minions")] {
            assert_eq!(crate::reencrypt::resource_path("", resource), path);
        }
    }

    #[test]
    fn keys_outside_the_root_have_no_resource() {
        assert_eq!(resource_of("/other/secrets/ns/a", "/registry"), None);
        assert_eq!(resource_of("/registryx/secrets/a", "/registry"), None);
        assert_eq!(resource_of("/registry/", "/registry"), None);
    }
}
