//! The Cloud KMS REST calls this backend makes (GetCryptoKey, GetCryptoKeyVersion, Encrypt,
//! Decrypt), sent with our own reqwest client so that the shared proxy and CA settings apply.
//! The client library's built-in transport makes its own client and cannot take a proxy or
//! extra roots; it accepts a replacement through `KeyManagementService::from_stub`, which this
//! is. Requests and errors have the shapes of the library's transport (same JSON mapping, same
//! `Error` kinds), so the rest of the backend and its error mapping are unchanged.

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_gax::error::Error;
use google_cloud_gax::error::rpc::Status;
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::response::Response;
use google_cloud_kms_v1::model::{
    CryptoKey, CryptoKeyVersion, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse,
    GetCryptoKeyRequest, GetCryptoKeyVersionRequest,
};
use google_cloud_kms_v1::stub::KeyManagementService;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default Cloud KMS endpoint.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";

/// Cloud KMS over REST with a caller-built HTTP client.
#[derive(Debug)]
pub(crate) struct RestTransport {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
}

impl RestTransport {
    pub(crate) fn new(http: reqwest::Client, endpoint: &str, credentials: Credentials) -> Self {
        RestTransport {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    async fn call<B: Serialize, O: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> google_cloud_kms_v1::Result<Response<O>> {
        let auth = match self
            .credentials
            .headers(http::Extensions::new())
            .await
            .map_err(Error::authentication)?
        {
            CacheableResource::New { data, .. } => data,
            // Only asked for with an entity tag, which we never send.
            CacheableResource::NotModified => http::HeaderMap::new(),
        };
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.endpoint))
            .query(&[("$alt", "json;enum-encoding=int")])
            .headers(auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(send_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(Error::io)?;
        if !status.is_success() {
            return Err(match Status::try_from(&bytes) {
                Ok(s) => Error::service_with_http_metadata(s, Some(status.as_u16()), Some(headers)),
                Err(_) => Error::http(status.as_u16(), headers, bytes),
            });
        }
        serde_json::from_slice(&bytes)
            .map(Response::from)
            .map_err(Error::deser)
    }
}

/// Sorted like the client library's transport does. The URL is dropped: it repeats the key
/// name and would push the cause (e.g. an untrusted certificate) out of the shortened message.
fn send_error(err: reqwest::Error) -> Error {
    let err = err.without_url();
    if err.is_connect() {
        Error::connect(err)
    } else if err.is_timeout() {
        Error::timeout(err)
    } else {
        Error::io(err)
    }
}

/// The JSON body of a request without its `name`, which travels in the URL path.
fn body_of<T: Serialize>(req: &T) -> google_cloud_kms_v1::Result<serde_json::Value> {
    let mut value = serde_json::to_value(req).map_err(Error::ser)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("name");
    }
    Ok(value)
}

impl KeyManagementService for RestTransport {
    async fn get_crypto_key(
        &self,
        req: GetCryptoKeyRequest,
        _options: RequestOptions,
    ) -> google_cloud_kms_v1::Result<Response<CryptoKey>> {
        self.call::<(), _>(reqwest::Method::GET, &req.name, None)
            .await
    }

    async fn get_crypto_key_version(
        &self,
        req: GetCryptoKeyVersionRequest,
        _options: RequestOptions,
    ) -> google_cloud_kms_v1::Result<Response<CryptoKeyVersion>> {
        self.call::<(), _>(reqwest::Method::GET, &req.name, None)
            .await
    }

    async fn encrypt(
        &self,
        req: EncryptRequest,
        _options: RequestOptions,
    ) -> google_cloud_kms_v1::Result<Response<EncryptResponse>> {
        let body = body_of(&req)?;
        self.call(
            reqwest::Method::POST,
            &format!("{}:encrypt", req.name),
            Some(&body),
        )
        .await
    }

    async fn decrypt(
        &self,
        req: DecryptRequest,
        _options: RequestOptions,
    ) -> google_cloud_kms_v1::Result<Response<DecryptResponse>> {
        let body = body_of(&req)?;
        self.call(
            reqwest::Method::POST,
            &format!("{}:decrypt", req.name),
            Some(&body),
        )
        .await
    }
}
