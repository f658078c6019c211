//! `polykms audit`: prove encryption at rest. Reads every key under a prefix in etcd (paged,
//! at one revision, read-only), classifies each value by the apiserver's storage prefixes and
//! reports counts per class, KMS v2 provider and key_id, plus the keys that fail. It never
//! decrypts anything and never writes.
//!
//! Exit codes (given by the binary from [`AuditError`]): 0 all values are KMS v2 (and meet
//! `--expect-*`; with `--allow-kms-v1`, KMS v1 values that meet them too), 1 findings or a
//! prefix that holds no key (a scan that read nothing proves nothing), 64 bad flags, 69 etcd
//! unreachable or refusing the reads.
//! `polykms reencrypt --verify-etcd-endpoints` runs the same scan.

mod classify;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

pub use classify::{DekSource, EnvelopeFormat, ValueClass, classify};
pub use report::{Expectations, Finding, Tally};

/// Why an audit did not pass, sorted by the exit code the binary gives it.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Bad flags or unreadable TLS files (exit 64).
    #[error("configuration error: {0}")]
    Config(String),
    /// etcd cannot be reached or read (exit 69).
    #[error("{0}")]
    Unavailable(String),
    /// Values that are not KMS v2 as expected (exit 1).
    #[error("{0}")]
    Findings(String),
}

/// Keys per range request: bounds memory and the size of each etcd response.
const PAGE_SIZE: i64 = 500;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to print the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

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

/// Everything `polykms audit` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where etcd is and how to reach it.
    pub etcd: EtcdConnection,
    /// Key prefix to scan.
    pub prefix: String,
    /// Expected provider and key_id.
    pub expect: Expectations,
    /// `table` or `json`, as given on the command line.
    pub output: String,
}

/// Runs the audit and prints the report; `Err` carries the exit code.
pub fn run(options: Options) -> Result<(), AuditError> {
    let format = validate(&options)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AuditError::Unavailable(format!("starting the async runtime: {e}")))?;
    let tally = runtime.block_on(scan(&options))?;
    match format {
        OutputFormat::Table => print!("{}", tally.to_table(&options.prefix)),
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "prefix": options.prefix,
                "passed": tally.passed(),
                "expect_provider": options.expect.provider,
                "expect_key_id": options.expect.key_id,
                "allow_kms_v1": options.expect.allow_kms_v1,
                "report": tally,
            })
        ),
    }
    if tally.passed() {
        Ok(())
    } else if tally.total == 0 {
        Err(AuditError::Findings(format!(
            "audit failed: no key under {}: nothing was checked (a wrong --prefix, or the \
             objects expected there are gone)",
            options.prefix
        )))
    } else {
        Err(AuditError::Findings(format!(
            "audit failed: {} of {} value(s) under {} are not encrypted as expected",
            tally.findings_total, tally.total, options.prefix
        )))
    }
}

/// Checks the options before any request.
pub fn validate(options: &Options) -> Result<OutputFormat, AuditError> {
    validate_named(options, &EtcdFlags::AUDIT)
}

/// [`validate`], naming the settings by `flags` in its messages.
pub fn validate_named(options: &Options, flags: &EtcdFlags) -> Result<OutputFormat, AuditError> {
    let format = match options.output.as_str() {
        "table" => OutputFormat::Table,
        "json" => OutputFormat::Json,
        other => {
            return Err(AuditError::Config(format!(
                "--output must be table or json, not {other:?}"
            )));
        }
    };
    if options.etcd.endpoints.iter().all(|e| e.trim().is_empty()) {
        return Err(AuditError::Config(format!(
            "{}: give at least one etcd client URL",
            flags.endpoints
        )));
    }
    if options.etcd.cert.is_some() != options.etcd.key.is_some() {
        return Err(AuditError::Config(format!(
            "{} and {} go together (etcd client certificate and its key)",
            flags.cert, flags.key
        )));
    }
    if options.prefix.is_empty() {
        return Err(AuditError::Config(format!(
            "{} must not be empty",
            flags.prefix
        )));
    }
    for k in [&options.expect.provider, &options.expect.key_id]
        .into_iter()
        .flatten()
    {
        if k.is_empty() {
            return Err(AuditError::Config(
                "--expect-* values must not be empty".into(),
            ));
        }
    }
    Ok(format)
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

async fn connect(options: &Options, flags: &EtcdFlags) -> Result<Client, AuditError> {
    Connector::new(&options.etcd, flags)?.connect().await
}

fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>, AuditError> {
    std::fs::read(path).map_err(|e| AuditError::Config(format!("{flag} {}: {e}", path.display())))
}

/// Scans `[prefix, prefix_end)` in pages of `PAGE_SIZE`, all pages at the revision of the first
/// one, so the report describes one consistent snapshot.
pub async fn scan(options: &Options) -> Result<Tally, AuditError> {
    let mut client = connect(options, &EtcdFlags::AUDIT).await?;
    scan_client(&mut client, &options.prefix, &options.expect).await
}

/// [`scan`] over a connected client (e.g. from one [`Connector::connect`] for many prefixes).
pub async fn scan_client(
    client: &mut Client,
    prefix: &str,
    expect: &Expectations,
) -> Result<Tally, AuditError> {
    let prefix = prefix.as_bytes();
    let end = polykms_core::storage::prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut revision = 0;
    let mut tally = Tally::default();
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
            tally.add(kv.key(), &classify::classify(kv.value()), expect);
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok(tally)
}

fn unavailable(why: &str) -> AuditError {
    AuditError::Unavailable(format!("reading etcd failed: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            etcd: EtcdConnection {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                ..EtcdConnection::default()
            },
            prefix: "/registry/secrets/".into(),
            expect: Expectations::default(),
            output: "table".into(),
        }
    }

    #[test]
    fn bad_flags_are_config_errors() {
        type Change = fn(&mut Options);
        let cases: [(Change, &str); 5] = [
            (|o| o.output = "yaml".into(), "--output"),
            (|o| o.etcd.endpoints = vec![" ".into()], "--etcd-endpoints"),
            (|o| o.etcd.cert = Some("c.pem".into()), "--cert and --key"),
            (|o| o.prefix.clear(), "--prefix"),
            (|o| o.expect.key_id = Some(String::new()), "--expect"),
        ];
        for (change, needle) in cases {
            let mut o = options();
            change(&mut o);
            match validate(&o) {
                Err(AuditError::Config(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
        assert_eq!(validate(&options()).ok(), Some(OutputFormat::Table));
    }

    #[test]
    fn unreadable_ca_file_is_a_config_error() {
        let mut o = options();
        o.etcd.cacert = Some("/nonexistent/ca.pem".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime builds in tests");
        match rt.block_on(connect(&o, &EtcdFlags::AUDIT)) {
            Err(AuditError::Config(msg)) => assert!(msg.contains("--cacert"), "{msg}"),
            other => panic!("{:?}", other.err()),
        }
    }
}
