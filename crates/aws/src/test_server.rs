//! A canned KMS endpoint for unit tests: answers each JSON-1.1 call with what a closure says,
//! so every error path goes through the real SDK parsing, signing and timeouts.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `(operation, request body) -> (HTTP status, JSON body)`; operation is e.g. `DescribeKey`.
pub(crate) type Responder = Arc<dyn Fn(&str, &str) -> (u16, String) + Send + Sync>;

/// A running canned endpoint.
pub(crate) struct CannedKms {
    pub(crate) endpoint: String,
    /// Operations called so far, in order.
    pub(crate) calls: Arc<Mutex<Vec<String>>>,
}

/// Serves `responder` on 127.0.0.1 until the test's runtime ends.
pub(crate) async fn serve(responder: Responder) -> CannedKms {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (responder, seen) = (responder.clone(), seen.clone());
            tokio::spawn(async move {
                let _ = answer(stream, responder, seen).await;
            });
        }
    });
    CannedKms { endpoint, calls }
}

/// An endpoint that accepts connections and never answers.
pub(crate) async fn blackhole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    endpoint
}

/// An endpoint where nothing listens.
pub(crate) async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A KMS error body in the JSON 1.1 protocol.
pub(crate) fn error_body(code: &str, message: &str) -> String {
    format!(r#"{{"__type":"{code}","message":"{message}"}}"#)
}

async fn answer(
    mut stream: TcpStream,
    responder: Responder,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).to_string();
    let target = header("x-amz-target").unwrap_or_default();
    let op = target.rsplit('.').next().unwrap_or("").to_owned();
    seen.lock().unwrap().push(op.clone());
    let (status, out) = responder(&op, &body);
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amzn-requestid: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{out}",
        out.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A request the SDK tried to send, as captured by [`Capture`].
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// An SDK `HttpClient` that records every request and fails it (no network), so tests see
/// exactly what would be sent: the resolved endpoint, the signed headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture(pub(crate) Arc<Mutex<Vec<Captured>>>);

impl Capture {
    pub(crate) fn requests(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }
}

impl HttpConnector for Capture {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.0.lock().unwrap().push(Captured {
            method: request.method().to_owned(),
            uri: request.uri().to_owned(),
            headers: request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            body: request.body().bytes().unwrap_or_default().to_vec(),
        });
        HttpConnectorFuture::ready(Err(ConnectorError::other(
            "captured by the test, not sent".into(),
            None,
        )))
    }
}

impl HttpClient for Capture {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}
