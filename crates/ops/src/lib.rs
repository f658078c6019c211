//! polykms-ops: what operators run beside the plugin. `audit` proves encryption at rest by
//! reading etcd; `reencrypt` rewrites API objects through the Kubernetes API so that the
//! apiserver stores them under the plugin's current key, and proves it with `audit`.

pub mod audit;
pub mod reencrypt;
