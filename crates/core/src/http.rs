//! The operators' HTTP endpoints, on a TCP port apart from the KMS socket:
//! `/metrics`, `/livez` (process up), `/readyz` and `/healthz` (socket served and every encrypt
//! backend healthy).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::plugin::Plugin;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints report on.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub plugin: Arc<Plugin>,
    pub serving: Arc<AtomicBool>,
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request.
pub fn route(state: &HttpState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match path {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(state.plugin.metrics().encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS),
            );
            r
        }
        "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" | "/healthz" => {
            if !state.serving.load(Ordering::SeqCst) {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "KMS socket not served\n".into(),
                );
            }
            let status = state.plugin.status();
            if status.healthz == "ok" {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{}\n", status.healthz),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve_http(listener: TcpListener, state: HttpState) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = route(&state, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::keyring::{Keyring, NamedBackend};
    use crate::metrics::Metrics;
    use crate::plugin::PluginSettings;

    async fn state() -> (HttpState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        polykms_local::generate_key_file(&key).unwrap();
        let backend = polykms_local::LocalBackend::from_config(&polykms_local::LocalConfig {
            key_files: vec![key],
            generate_if_missing: false,
        })
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let ring = Keyring::new(
            vec![NamedBackend {
                name: "local".into(),
                backend: Arc::new(backend),
            }],
            &["local".into()],
            metrics.clone(),
        )
        .unwrap();
        let plugin = Plugin::start(PluginSettings::new("p"), ring, metrics).await;
        (
            HttpState {
                plugin,
                serving: Arc::new(AtomicBool::new(false)),
            },
            dir,
        )
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn readiness_needs_the_socket_served() {
        let (s, _dir) = state().await;
        assert_eq!(route(&s, &Method::GET, "/livez").status(), StatusCode::OK);
        assert_eq!(
            route(&s, &Method::GET, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.serving.store(true, Ordering::SeqCst);
        assert_eq!(route(&s, &Method::GET, "/readyz").status(), StatusCode::OK);
        assert_eq!(route(&s, &Method::GET, "/healthz").status(), StatusCode::OK);
        assert_eq!(
            route(&s, &Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&s, &Method::POST, "/livez").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let (s, _dir) = state().await;
        let r = route(&s, &Method::GET, "/metrics");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = body(r).await;
        assert!(
            text.contains("polykms_backend_healthy{backend=\"local\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[tokio::test]
    async fn serves_real_http_connections() {
        let (s, _dir) = state().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve_http(listener, s));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        task.abort();
    }
}
