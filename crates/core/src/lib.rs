//! polykms core: the KMS v2 and v1beta1 gRPC services on a unix socket, the envelope that
//! records which backend wrapped a seed, routing over several backends, health probing,
//! Decrypt coalescing and metrics. It names no key store: backends come in through
//! [`polykms_backend::KeyEncryptionBackend`].

pub mod authority;
pub mod cache;
pub mod call;
pub mod coalesce;
pub mod envelope;
pub mod error;
pub mod grpc_timeout;
pub mod http;
pub mod keyid;
pub mod keyring;
pub mod legacy;
pub mod metrics;
pub mod peer;
pub mod plugin;
pub mod proto;
pub mod repeated;
pub mod server;
pub mod service_v1;
pub mod service_v2;
pub mod socket;
pub mod storage;

pub use error::CoreError;
pub use keyring::{Keyring, NamedBackend, ProbeSettings};
pub use metrics::Metrics;
pub use peer::PeerPolicy;
pub use plugin::{Plugin, PluginSettings, RetrySettings, StatusVersion};
pub use server::{Api, serve};
pub use socket::{SocketAccess, SocketSpec, bind, bind_with};
