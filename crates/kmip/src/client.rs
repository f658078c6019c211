//! A KMIP client over mutual TLS: a small pool of connections, each with its protocol version
//! negotiated by Discover Versions when it opens; a request that meets a connection the
//! server closed while it sat idle is sent again on a fresh one. Every call is bounded by
//! `timeout_ms` (waiting for a connection, connecting, the TLS handshake and the answer).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use polykms_backend::{BackendError, SensitiveString};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsConnector, rustls};
use zeroize::Zeroizing;

use crate::config::{KmipConfig, Validated};
use crate::error::{KmipFailure, io_error};
use crate::protocol::{
    self, BatchResult, GCM_WITH_AAD, Operation, ProtocolVersion, ResultStatus, UsernamePassword,
    tag,
};
use crate::trust::{self, SystemRoots};
use crate::ttlv::{self, Ttlv};

/// Connections open at once per backend; more callers wait for one.
const MAX_CONNECTIONS: usize = 4;
/// An idle connection older than this is closed rather than reused (middleboxes and servers
/// drop idle TLS sessions silently).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Largest response accepted (a Locate over many objects stays far below).
const MAX_RESPONSE: usize = 1 << 20;

/// Why a call did not succeed: the server said no, or it could not be asked.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The server answered with a failed batch item.
    Kmip(KmipFailure),
    /// No usable answer: network, TLS, timeout, a malformed response, a version mismatch.
    Transport(BackendError),
}

impl CallError {
    pub fn into_backend(self) -> BackendError {
        match self {
            CallError::Kmip(f) => f.to_error(),
            CallError::Transport(e) => e,
        }
    }
}

impl From<BackendError> for CallError {
    fn from(e: BackendError) -> Self {
        CallError::Transport(e)
    }
}

struct Connection {
    stream: TlsStream<TcpStream>,
    version: ProtocolVersion,
    idle_since: Instant,
}

/// Why one exchange failed, and whether the connection may simply have been stale.
struct ExchangeError {
    error: BackendError,
    /// Nothing came back before the failure (the server may have closed the connection).
    before_answer: bool,
}

/// Credentials sent in every request header.
struct Credential {
    username: SensitiveString,
    password: Option<SensitiveString>,
}

/// The pool and everything needed to open a connection.
pub struct Client {
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    offered: Vec<ProtocolVersion>,
    credential: Option<Credential>,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    negotiated: Mutex<Option<ProtocolVersion>>,
    /// How roots are set up, for `describe`.
    trust: String,
}

impl Client {
    /// Reads the certificate, key, CA and credential files; fails (kind Config, naming the
    /// field) when one is unusable. Does not connect.
    pub fn new(
        config: &KmipConfig,
        validated: &Validated,
        system_roots: SystemRoots,
    ) -> Result<Self, BackendError> {
        let identity = read_identity(config)?;
        let (roots, trust) = trust::root_store(config, system_roots)?;
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(polykms_net::tls::provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| BackendError::internal(format!("TLS versions: {e}")))?
                .with_root_certificates(roots);
        let tls = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                BackendError::config(format!(
                    "client_cert_file, client_key_file: do not make a usable pair: {e}"
                ))
            })?,
            None => builder.with_no_client_auth(),
        };
        polykms_net::tls::require_fips(&tls, "kmip backend")?;
        let host = config
            .tls_server_name
            .clone()
            .unwrap_or_else(|| validated.endpoint.host.clone());
        let server_name = ServerName::try_from(host.clone()).map_err(|_| {
            BackendError::config(format!(
                "endpoint: {host:?} is not a DNS name or IP address for TLS"
            ))
        })?;
        Ok(Client {
            address: validated.endpoint.address(),
            server_name,
            connector: TlsConnector::from(Arc::new(tls)),
            offered: validated.offered.clone(),
            credential: read_credential(config)?,
            timeout: validated.timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
            negotiated: Mutex::new(None),
            trust,
        })
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// How the server certificate is checked, for `describe`.
    pub fn trust(&self) -> &str {
        &self.trust
    }

    /// The version the last connection negotiated, once one has.
    pub fn negotiated(&self) -> Option<ProtocolVersion> {
        *self
            .negotiated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one operation and returns the payload of its successful answer.
    pub async fn call(
        &self,
        operation: Operation,
        payload: Vec<Ttlv>,
    ) -> Result<Option<Ttlv>, CallError> {
        let attempt = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| BackendError::internal("KMIP connection pool closed"))?;
            let mut tries = 0;
            loop {
                tries += 1;
                // The retry goes to a new connection: after a server restart every pooled
                // connection is as dead as the one that just failed.
                let idle = if tries == 1 { self.take_idle() } else { None };
                let (mut conn, reused) = match idle {
                    Some(c) => (c, true),
                    None => (self.open().await?, false),
                };
                if matches!(operation, Operation::Encrypt | Operation::Decrypt)
                    && conn.version < GCM_WITH_AAD
                {
                    let version = conn.version;
                    self.put_idle(conn);
                    return Err(CallError::Transport(gcm_needs_1_4(&self.address, version)));
                }
                let message = protocol::request(
                    conn.version,
                    self.username_password(),
                    operation,
                    payload.clone(),
                );
                let sent = exchange(&mut conn.stream, &message, &self.address).await;
                match sent {
                    Ok((_, result)) => {
                        self.put_idle(conn);
                        return outcome(operation, result);
                    }
                    Err(e) if reused && e.before_answer && tries < 2 => {
                        tracing::debug!(address = %self.address, error = %e.error,
                            "kmip: pooled connection was closed; retrying on a new one");
                    }
                    Err(e) => return Err(CallError::Transport(e.error)),
                }
            }
        };
        let result = tokio::time::timeout(self.timeout, attempt).await;
        match result {
            Ok(r) => r,
            Err(_) => Err(CallError::Transport(BackendError::timeout(format!(
                "KMIP {} to {} got no answer within {:?}",
                operation.name(),
                self.address,
                self.timeout
            )))),
        }
    }

    /// The KMIP Credential every request carries, when configured.
    fn username_password(&self) -> Option<UsernamePassword<'_>> {
        self.credential.as_ref().map(|c| UsernamePassword {
            username: c.username.expose(),
            password: c.password.as_ref().map(SensitiveString::expose),
        })
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() < MAX_IDLE {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, mut conn: Connection) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// Connects, shakes hands and negotiates the protocol version.
    async fn open(&self) -> Result<Connection, BackendError> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| io_error("connecting to", &self.address, &e))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| io_error("TLS handshake with", &self.address, &e))?;
        let request = protocol::request(
            self.offered[0],
            self.username_password(),
            Operation::DiscoverVersions,
            protocol::discover_versions(&self.offered),
        );
        let (_, result) = exchange(&mut stream, &request, &self.address)
            .await
            .map_err(|e| e.error)?;
        let payload = outcome(Operation::DiscoverVersions, result).map_err(|e| match e {
            CallError::Kmip(f) => BackendError::new(
                f.kind(),
                format!("{} (negotiating the protocol version)", f.describe()),
            ),
            CallError::Transport(e) => e,
        })?;
        let theirs = protocol::parse_discover_versions(payload.as_ref());
        let version = theirs
            .iter()
            .find(|v| self.offered.contains(v))
            .copied()
            .ok_or_else(|| {
                let list = |vs: &[ProtocolVersion]| {
                    vs.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                BackendError::config(format!(
                    "kmip_version: {} speaks none of KMIP {} (it answered [{}])",
                    self.address,
                    list(&self.offered),
                    list(&theirs)
                ))
            })?;
        let previous = self
            .negotiated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(version);
        if previous != Some(version) {
            tracing::info!(address = %self.address, %version, "kmip: protocol version negotiated");
        }
        Ok(Connection {
            stream,
            version,
            idle_since: Instant::now(),
        })
    }
}

fn gcm_needs_1_4(address: &str, version: ProtocolVersion) -> BackendError {
    BackendError::config(format!(
        "kmip_version: {address} negotiated KMIP {version}; AES-GCM Encrypt/Decrypt with \
         additional data and a tag needs KMIP 1.4 (Authenticated Encryption Additional Data and \
         Tag were added in 1.4): allow \"1.4\" or upgrade the server"
    ))
}

/// The payload of a successful batch item, or its failure.
fn outcome(operation: Operation, result: BatchResult) -> Result<Option<Ttlv>, CallError> {
    if result.status == ResultStatus::Success {
        Ok(result.payload)
    } else {
        Err(CallError::Kmip(KmipFailure::from_result(
            operation, &result,
        )))
    }
}

/// Writes one request and reads one response on `stream`.
async fn exchange(
    stream: &mut TlsStream<TcpStream>,
    message: &Ttlv,
    address: &str,
) -> Result<(ProtocolVersion, BatchResult), ExchangeError> {
    let stale = |context: &str, e: std::io::Error| ExchangeError {
        error: io_error(context, address, &e),
        before_answer: true,
    };
    let bytes = Zeroizing::new(message.encode());
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| stale("writing to", e))?;
    stream.flush().await.map_err(|e| stale("writing to", e))?;
    let mut head = [0u8; 8];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| stale("reading from", e))?;
    let broken = |why: String| ExchangeError {
        error: BackendError::internal(format!("KMIP response from {address}: {why}")),
        before_answer: false,
    };
    let (tag, type_code, length) = ttlv::header(&head);
    if tag != tag::RESPONSE_MESSAGE || type_code != 0x01 {
        return Err(broken(format!(
            "expected a Response Message structure, got {tag:?} type {type_code:#04x} (is this a KMIP server?)"
        )));
    }
    let length = length as usize;
    if length > MAX_RESPONSE || !length.is_multiple_of(8) {
        return Err(broken(format!("length {length} is not acceptable")));
    }
    let mut buffer = Zeroizing::new(vec![0u8; 8 + length]);
    buffer[..8].copy_from_slice(&head);
    stream
        .read_exact(&mut buffer[8..])
        .await
        .map_err(|e| ExchangeError {
            error: io_error("reading from", address, &e),
            before_answer: false,
        })?;
    let decoded = Ttlv::decode(&buffer).map_err(|e| broken(e.to_string()))?;
    protocol::parse_response(&decoded).map_err(broken)
}

/// The client certificate chain and key, when configured.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_identity(config: &KmipConfig) -> Result<Option<Identity>, BackendError> {
    let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            BackendError::config(format!(
                "client_cert_file: cannot read {}: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(BackendError::config(format!(
            "client_cert_file: {} holds no PEM certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        BackendError::config(format!(
            "client_key_file: cannot read a PEM private key from {}: {e}",
            key.display()
        ))
    })?;
    Ok(Some((chain, key)))
}

fn read_credential(config: &KmipConfig) -> Result<Option<Credential>, BackendError> {
    let read = |field: &str, path: &std::path::Path| -> Result<SensitiveString, BackendError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            BackendError::config(format!("{field}: cannot read {}: {e}", path.display()))
        })?);
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(BackendError::config(format!(
                "{field}: {} is empty",
                path.display()
            )));
        }
        Ok(SensitiveString::new(value))
    };
    let Some(user) = &config.username_file else {
        return Ok(None);
    };
    Ok(Some(Credential {
        username: read("username_file", user)?,
        password: config
            .password_file
            .as_deref()
            .map(|p| read("password_file", p))
            .transpose()?,
    }))
}
