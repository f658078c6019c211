//! `polykms audit`: prove encryption at rest, and prove a configuration before a key or a
//! backend is retired. Reads every key under a prefix in etcd (paged, at one revision,
//! read-only), classifies each value by the apiserver's storage prefixes and reports counts per
//! class, KMS v2 provider and key_id, plus the keys that fail; and a census by wrap: which
//! backends and key versions the DEK envelopes hold. It never writes. It decrypts nothing,
//! except with `--unwrap`: then each distinct DEK envelope is unwrapped once through the
//! configuration's backends (the binary's [`EnvelopeOpener`]), to show that every object would
//! stay readable under that configuration.
//!
//! Exit codes (given by the binary from [`AuditError`]): 0 all values are KMS v2 (and meet
//! `--expect-*`; with `--allow-kms-v1`, KMS v1 values that meet them too) and, with
//! `--unwrap`, every DEK envelope unwraps; 1 findings, objects that would become unreadable, or
//! a prefix or resource that holds no key (a scan that read nothing proves nothing); 64 bad
//! flags; 69 etcd unreachable or refusing the reads.
//! `polykms reencrypt --verify-etcd-endpoints` runs the same scan.

mod census;
mod classify;
mod dek;
mod etcd;
mod report;
mod resource;
mod run;
mod unwrap;

use etcd_client::Client;

pub use census::{Census, KeyVersionId, WrapCount};
pub use classify::{DekSource, EnvelopeFormat, ValueClass, classify};
pub use dek::{KmsApi, StoredDek, stored_dek};
pub use etcd::{Connector, EtcdConnection, EtcdFlags};
pub use report::{Expectations, Finding, Tally};
pub use resource::resource_of;
pub use run::{Scope, run};
pub use unwrap::{EnvelopeOpener, UnreadableGroup, UnwrapFailure, UnwrapReport, UnwrapSettings};

/// Why an audit did not pass, sorted by the exit code the binary gives it.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Bad flags or unreadable TLS files (exit 64).
    #[error("configuration error: {0}")]
    Config(String),
    /// etcd cannot be reached or read (exit 69).
    #[error("{0}")]
    Unavailable(String),
    /// Values that are not KMS v2 as expected, or that would become unreadable (exit 1).
    #[error("{0}")]
    Findings(String),
}

/// How to print the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
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

/// Scans the options' prefix: [`scan_client`] over a new connection.
pub async fn scan(options: &Options) -> Result<Tally, AuditError> {
    let mut client = connect(options, &EtcdFlags::AUDIT).await?;
    scan_client(&mut client, &options.prefix, &options.expect).await
}

/// Classifies every value under `prefix` (one consistent snapshot) over a connected client
/// (e.g. from one [`Connector::connect`] for many prefixes).
pub async fn scan_client(
    client: &mut Client,
    prefix: &str,
    expect: &Expectations,
) -> Result<Tally, AuditError> {
    let mut tally = Tally::default();
    etcd::for_each_value(client, prefix, |key, value| {
        tally.add(key, &classify::classify(value), expect);
    })
    .await?;
    Ok(tally)
}

async fn connect(options: &Options, flags: &EtcdFlags) -> Result<Client, AuditError> {
    Connector::new(&options.etcd, flags)?.connect().await
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
