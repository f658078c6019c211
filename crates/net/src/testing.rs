//! Test helpers shared by the backend crates' proxy tests (feature `testing`, dev only):
//! a recording forward proxy (absolute-form HTTP and CONNECT tunnelling) and a TLS relay that
//! puts a test certificate in front of a plain-HTTP server. Both listen on 127.0.0.1 only and
//! stop when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

/// Largest request head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;

/// One request that passed through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// `CONNECT` or the forwarded method.
    pub method: String,
    /// `host:port` for CONNECT, the absolute URL otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header the client sent, if any.
    pub proxy_authorization: Option<String>,
}

/// A forward proxy on 127.0.0.1 that records every request it relays.
pub struct ForwardProxy {
    addr: SocketAddr,
    passed: Arc<Mutex<Vec<Passed>>>,
    task: JoinHandle<()>,
}

impl ForwardProxy {
    /// Starts the proxy on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let passed = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&passed);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let _ = relay(client, log).await;
                });
            }
        });
        Ok(ForwardProxy { addr, passed, task })
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What passed so far.
    pub fn passed(&self) -> Vec<Passed> {
        self.passed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The password in the proxy tests' credentials file; no description may show it.
const TEST_PROXY_PASSWORD: &str = "s3cret";

/// Writes the proxy tests' credentials (`svc-polykms:s3cret`) to a `proxy_credentials_file`
/// in `dir` and returns its path.
pub fn write_test_proxy_credentials(dir: &Path) -> PathBuf {
    let file = dir.join("proxy-auth");
    std::fs::write(&file, format!("svc-polykms:{TEST_PROXY_PASSWORD}\n"))
        .expect("writing the test proxy credentials");
    file
}

/// Asserts that requests went through the proxy, each with the `Proxy-Authorization` header
/// made from `write_test_proxy_credentials`, and that the backend's `describe` line names the
/// configured proxy without the password: the same expectation for every remote backend.
/// Where the requests went is the caller's to check (absolute-form URLs or CONNECT tunnels).
pub fn assert_proxied_with_test_credentials(passed: &[Passed], describe: &str) {
    assert!(!passed.is_empty(), "nothing went through the proxy");
    for p in passed {
        assert_eq!(
            p.proxy_authorization.as_deref(),
            Some("Basic c3ZjLXBvbHlrbXM6czNjcmV0"),
            "{p:?}"
        );
    }
    assert!(
        describe.contains("(from config proxy)") && !describe.contains(TEST_PROXY_PASSWORD),
        "{describe}"
    );
}

/// Asserts that nothing went through `proxy` and that `describe` says `no_proxy` matched.
pub fn assert_bypassed_by_no_proxy(proxy: &ForwardProxy, describe: &str) {
    assert_eq!(proxy.passed(), vec![]);
    assert!(describe.contains("no proxy (no_proxy match)"), "{describe}");
}

/// Asserts that `backend`, configured with a proxy that refuses connections, fails its probe
/// quickly with a retryable `Unavailable` error (no hang): the same expectation for every
/// remote backend.
pub async fn assert_refused_proxy_is_quick_unavailable(
    backend: &dyn polykms_backend::KeyEncryptionBackend,
) {
    let started = std::time::Instant::now();
    let err = match backend.probe().await {
        Ok(version) => panic!("probe through a refusing proxy succeeded: {version}"),
        Err(e) => e,
    };
    eprintln!("refused proxy: {err}");
    assert_eq!(err.kind(), polykms_backend::ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A `http://127.0.0.1:port` URL where nothing listens (connections are refused).
pub async fn refusing_proxy_url() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

async fn relay(mut client: TcpStream, log: Arc<Mutex<Vec<Passed>>>) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or("HTTP/1.1").to_owned(),
    );
    let headers: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
    let proxy_authorization = headers.iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Passed {
            method: method.clone(),
            target: target.clone(),
            proxy_authorization,
        });

    if method == "CONNECT" {
        let Ok(mut upstream) = TcpStream::connect(&target).await else {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                .await?;
            return Ok(());
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }

    // Absolute form: one request per connection, sent on in origin form with `Connection:
    // close`, so every request shows up here.
    let Some(after_scheme) = target.strip_prefix("http://") else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await?;
        return Ok(());
    };
    let (authority, path) = match after_scheme.find('/') {
        Some(i) => after_scheme.split_at(i),
        None => (after_scheme, "/"),
    };
    let Ok(mut upstream) = TcpStream::connect(authority).await else {
        client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            .await?;
        return Ok(());
    };
    let mut out = format!("{method} {path} {version}\r\n");
    for h in &headers {
        let name = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive"
        ) {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(&rest).await?;
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    // The body may still be arriving; the response ends when the origin closes.
    let upload = tokio::io::copy(&mut cr, &mut uw);
    let download = async {
        // The origin's answer goes back with `Connection: close`: this proxy serves one
        // request per connection, and a client that pooled the connection would otherwise race
        // the close with its next request.
        let (head, rest) = read_head(&mut ur).await?;
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let mut out = format!("{}\r\n", lines.next().unwrap_or("HTTP/1.1 502 Bad Gateway"));
        for h in lines {
            let name = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if !matches!(name.as_str(), "connection" | "keep-alive") {
                out.push_str(h);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        cw.write_all(out.as_bytes()).await?;
        cw.write_all(&rest).await?;
        let r = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
        r
    };
    tokio::select! {
        r = download => { r?; }
        _ = upload => {}
    }
    Ok(())
}

/// Reads up to the blank line; returns the head and any bytes read past it.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Terminates TLS with a test certificate on 127.0.0.1 and relays the bytes to a plain-HTTP
/// server, so any backend's test server can be reached over HTTPS signed by a test CA.
pub struct TlsRelay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsRelay {
    /// Starts the relay to `upstream` with the PEM certificate chain and key files.
    pub async fn start(cert: &Path, key: &Path, upstream: SocketAddr) -> std::io::Result<Self> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(std::io::Error::other)?;
        Self::start_with(config, upstream).await
    }

    /// Starts the relay to `upstream` with a server config of the test's making (cipher suites,
    /// client authentication).
    pub async fn start_with(
        config: rustls::ServerConfig,
        upstream: SocketAddr,
    ) -> std::io::Result<Self> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    if let Ok(mut origin) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut origin).await;
                    }
                });
            }
        });
        Ok(TlsRelay { addr, task })
    }

    /// `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The throwaway test CA and server certificate (`127.0.0.1`, `localhost`) made by
/// `integration/servers/azure-fake.sh start`, found through `POLYKMS_AZURE_CA_FILE`.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub ca_file: std::path::PathBuf,
    /// The server certificate it signed (PEM).
    pub cert_file: std::path::PathBuf,
    /// The server certificate's private key (PEM).
    pub key_file: std::path::PathBuf,
}

/// The test CA, or `None` after saying why the test is skipped; panics instead when
/// `POLYKMS_REQUIRE_INTEGRATION=1`.
pub fn test_ca(test: &str) -> Option<TestCa> {
    let ca = std::env::var("POLYKMS_AZURE_CA_FILE")
        .ok()
        .filter(|v| !v.is_empty());
    let Some(ca) = ca else {
        if std::env::var("POLYKMS_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
            panic!("{test}: POLYKMS_AZURE_CA_FILE is not set but POLYKMS_REQUIRE_INTEGRATION=1");
        }
        eprintln!(
            "skipped {test}: POLYKMS_AZURE_CA_FILE not set (integration/servers/azure-fake.sh)"
        );
        return None;
    };
    let ca_file = std::path::PathBuf::from(ca);
    let dir = ca_file.parent()?.to_path_buf();
    Some(TestCa {
        ca_file,
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server-key.pem"),
    })
}

/// The `host:port` of an `http://` URL, as a socket address (test servers listen on IPs).
pub fn socket_addr_of(url: &str) -> Option<SocketAddr> {
    url.split_once("://")?.1.trim_end_matches('/').parse().ok()
}

/// A plain-HTTP origin on 127.0.0.1 that reads one request on every connection, answers it
/// with `response` (a whole HTTP/1.1 message) and closes. Runs until the runtime stops.
pub async fn canned_origin(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response).await;
            });
        }
    });
    addr
}

/// A [`canned_origin`] answering `200 origin`.
pub async fn origin() -> SocketAddr {
    canned_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\norigin").await
}
