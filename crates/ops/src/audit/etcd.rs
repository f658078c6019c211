//! Reaching etcd and reading a prefix: TLS files read once, pages at one revision.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use super::AuditError;

/// Keys per range request: bounds memory and the size of each etcd response.
const PAGE_SIZE: i64 = 500;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach etcd, as `etcdctl` takes it (audit's flags; `polykms reencrypt` names them
/// `--verify-etcd-endpoints`, `--etcd-cacert`, `--etcd-cert`, `--etcd-key`).
#[derive(Debug, Clone, Default)]
pub struct EtcdConnection {
    /// etcd client URLs (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// CA bundle that signs etcd's server certificate.
    pub cacert: Option<PathBuf>,
    /// Client certificate for etcd (with `key`).
    pub cert: Option<PathBuf>,
    /// Client private key for etcd (with `cert`).
    pub key: Option<PathBuf>,
}

/// The command-line names of the settings, for messages: audit's own, or those of the command
/// that runs the scan (`polykms reencrypt --verify-etcd-endpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdFlags {
    /// etcd client URLs.
    pub endpoints: &'static str,
    /// CA bundle.
    pub cacert: &'static str,
    /// Client certificate.
    pub cert: &'static str,
    /// Client private key.
    pub key: &'static str,
    /// Key prefix.
    pub prefix: &'static str,
}

impl EtcdFlags {
    /// `polykms audit`'s flags.
    pub const AUDIT: EtcdFlags = EtcdFlags {
        endpoints: "--etcd-endpoints",
        cacert: "--cacert",
        cert: "--cert",
        key: "--key",
        prefix: "--prefix",
    };
}

/// The etcd settings with the TLS files already read: connecting reads no file, so a bad path
/// shows up when this is built (before a long run), and one value connects any number of times.
#[derive(Clone)]
pub struct Connector {
    /// Trimmed, non-empty client URLs.
    endpoints: Vec<String>,
    /// Set when TLS is wanted (a CA, a client certificate or an https:// URL).
    tls: Option<TlsFiles>,
    flags: EtcdFlags,
}

#[derive(Clone)]
struct TlsFiles {
    ca: Option<Vec<u8>>,
    /// Client certificate and private key (PEM).
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of any debug output.
        f.debug_struct("Connector")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Reads the TLS files of `etcd` (messages name the settings by `flags`).
    pub fn new(etcd: &EtcdConnection, flags: &EtcdFlags) -> Result<Self, AuditError> {
        let tls_wanted = etcd.cacert.is_some()
            || etcd.cert.is_some()
            || etcd.endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = if tls_wanted {
            let ca = match &etcd.cacert {
                Some(ca) => Some(read_pem(ca, flags.cacert)?),
                None => None,
            };
            let identity = match (&etcd.cert, &etcd.key) {
                (Some(cert), Some(key)) => {
                    Some((read_pem(cert, flags.cert)?, read_pem(key, flags.key)?))
                }
                _ => None,
            };
            Some(TlsFiles { ca, identity })
        } else {
            None
        };
        Ok(Connector {
            endpoints: etcd
                .endpoints
                .iter()
                .map(|e| e.trim())
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect(),
            tls,
            flags: *flags,
        })
    }

    /// Connects to etcd.
    pub async fn connect(&self) -> Result<Client, AuditError> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        if let Some(files) = &self.tls {
            // tonic builds etcd-client's rustls config from the process-default provider,
            // which the binary installs at start (the FIPS one in a FIPS build).
            polykms_net::tls::require_default_fips("etcd client")
                .map_err(|e| AuditError::Config(e.to_string()))?;
            let mut tls = TlsOptions::new();
            if let Some(ca) = &files.ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca.clone()));
            }
            if let Some((cert, key)) = &files.identity {
                tls = tls.identity(Identity::from_pem(cert.clone(), key.clone()));
            }
            connect = connect.with_tls(tls);
        }
        let endpoints = &self.endpoints;
        match tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(connect))).await
        {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(
                e @ (etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_)),
            )) => Err(AuditError::Config(format!("{}: {e}", self.flags.endpoints))),
            Ok(Err(e)) => Err(AuditError::Unavailable(format!(
                "cannot connect to etcd at {}: {e}",
                endpoints.join(",")
            ))),
            Err(_) => Err(AuditError::Unavailable(format!(
                "cannot connect to etcd at {}: timed out",
                endpoints.join(",")
            ))),
        }
    }
}

fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>, AuditError> {
    std::fs::read(path).map_err(|e| AuditError::Config(format!("{flag} {}: {e}", path.display())))
}

/// Calls `visit` with every key and value in `[prefix, prefix_end)`, read in pages of
/// `PAGE_SIZE`, all pages at the revision of the first one, so that what is seen is one
/// consistent snapshot.
pub async fn for_each_value(
    client: &mut Client,
    prefix: &str,
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), AuditError> {
    let prefix = prefix.as_bytes();
    let end = polykms_core::storage::prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut revision = 0;
    loop {
        let mut get = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE_SIZE);
        if revision > 0 {
            get = get.with_revision(revision);
        }
        let page = tokio::time::timeout(REQUEST_TIMEOUT, client.get(start.clone(), Some(get)))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(|e| unavailable(&e.to_string()))?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        for kv in page.kvs() {
            visit(kv.key(), kv.value());
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

fn unavailable(why: &str) -> AuditError {
    AuditError::Unavailable(format!("reading etcd failed: {why}"))
}
