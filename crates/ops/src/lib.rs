//! polykms-ops: what operators run beside the plugin. `reencrypt` rewrites API objects through
//! the Kubernetes API so that the apiserver stores them under the plugin's current key.

pub mod reencrypt;
