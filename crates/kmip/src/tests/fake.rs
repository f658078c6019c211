//! An in-process KMIP server for unit tests, over TLS with the certificates in `testdata/`
//! (made with openssl, valid until 2126; `ca.pem` issued `server.pem` and `client.pem`,
//! `system-ca.pem` issued `server-system.pem`). It answers in the shapes PyKMIP sends: a
//! Response Header with Protocol Version, Time Stamp and Batch Count, and one Batch Item with
//! the Operation, the Result Status and either a Response Payload or a Result Reason and
//! Message. Discover Versions is answered with 1.4; other operations go to the test's handler.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, rustls};

use crate::protocol::{self, Operation, tag};
use crate::ttlv::{self, Tag, Ttlv, Value};

/// Response Header's Time Stamp (KMIP 1.4 §9.1.3.1), which polykms does not read.
const TIME_STAMP: Tag = Tag(0x420092);

/// A file of `testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Stands in for the system roots: only `system-ca.pem`.
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(testdata("system-ca.pem"))
        .and_then(|it| it.collect())
        .expect("testdata/system-ca.pem is a PEM certificate")
}

/// What the handler answers to one request.
pub enum Answer {
    Success(Vec<Ttlv>),
    /// Operation Failed with this Result Reason and Message.
    Failure(u32, &'static str),
}

type Handler = dyn Fn(Operation, &Ttlv) -> Answer + Send + Sync;

/// Starts a server presenting `testdata/{cert}.pem`; returns its `host:port`. It runs until the
/// test's runtime ends.
pub async fn start(
    cert: &str,
    handler: impl Fn(Operation, &Ttlv) -> Answer + Send + Sync + 'static,
) -> String {
    let chain: Vec<_> = CertificateDer::pem_file_iter(testdata(&format!("{cert}.pem")))
        .and_then(|it| it.collect())
        .expect("testdata certificate");
    let key = PrivateKeyDer::from_pem_file(testdata(&format!("{cert}.key"))).expect("testdata key");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("testdata certificate and key match");
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound").to_string();
    let handler: Arc<Handler> = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handler) = (acceptor.clone(), Arc::clone(&handler));
            tokio::spawn(async move {
                // A refused handshake (the client's test) just ends the connection.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls, &*handler).await;
                }
            });
        }
    });
    address
}

async fn serve(mut stream: tokio_rustls::server::TlsStream<TcpStream>, handler: &Handler) {
    loop {
        let mut head = [0u8; 8];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let (_, _, length) = ttlv::header(&head);
        let mut message = head.to_vec();
        message.resize(8 + length as usize, 0);
        if stream.read_exact(&mut message[8..]).await.is_err() {
            return;
        }
        let request = Ttlv::decode(&message).expect("client sends valid TTLV");
        let item = request.find(tag::BATCH_ITEM).expect("a Batch Item");
        let code = item
            .find(tag::OPERATION)
            .and_then(Ttlv::as_enumeration)
            .expect("an Operation");
        let operation = operation(code);
        let payload = item.find(tag::REQUEST_PAYLOAD).expect("a Request Payload");
        let answer = match operation {
            Operation::DiscoverVersions => Answer::Success(vec![version()]),
            other => handler(other, payload),
        };
        let response = response(code, answer).encode();
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

fn operation(code: u32) -> Operation {
    [
        Operation::Locate,
        Operation::GetAttributes,
        Operation::DiscoverVersions,
        Operation::Encrypt,
        Operation::Decrypt,
    ]
    .into_iter()
    .find(|o| o.code() == code)
    .unwrap_or_else(|| panic!("polykms sent operation {code:#X}"))
}

fn version() -> Ttlv {
    Ttlv::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Ttlv::integer(tag::PROTOCOL_VERSION_MAJOR, 1),
            Ttlv::integer(tag::PROTOCOL_VERSION_MINOR, 4),
        ],
    )
}

fn response(operation: u32, answer: Answer) -> Ttlv {
    let mut item = vec![Ttlv::enumeration(tag::OPERATION, operation)];
    match answer {
        Answer::Success(payload) => {
            item.push(Ttlv::enumeration(tag::RESULT_STATUS, 0));
            item.push(Ttlv::structure(tag::RESPONSE_PAYLOAD, payload));
        }
        Answer::Failure(reason, message) => {
            item.push(Ttlv::enumeration(tag::RESULT_STATUS, 1));
            item.push(Ttlv::enumeration(tag::RESULT_REASON, reason));
            item.push(Ttlv::text(tag::RESULT_MESSAGE, message));
        }
    }
    Ttlv::structure(
        tag::RESPONSE_MESSAGE,
        vec![
            Ttlv::structure(
                tag::RESPONSE_HEADER,
                vec![
                    version(),
                    Ttlv::new(TIME_STAMP, Value::DateTime(1_700_000_000)),
                    Ttlv::integer(tag::BATCH_COUNT, 1),
                ],
            ),
            Ttlv::structure(tag::BATCH_ITEM, item),
        ],
    )
}

/// The Unique Identifier a request names.
pub fn uid(payload: &Ttlv) -> String {
    payload
        .find(tag::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .expect("a Unique Identifier")
        .to_owned()
}

/// A byte string of a request.
pub fn bytes(payload: &Ttlv, t: Tag) -> Vec<u8> {
    payload
        .find(t)
        .and_then(Ttlv::as_bytes)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// Locate's answer (KMIP 1.x: the Unique Identifiers in order).
pub fn located(uids: &[&str]) -> Answer {
    Answer::Success(
        uids.iter()
            .map(|u| Ttlv::text(tag::UNIQUE_IDENTIFIER, *u))
            .collect(),
    )
}

/// Get Attributes' answer for an AES key: State (when given), Initial Date, algorithm, mask.
pub fn attributes(uid: &str, state: Option<u32>, initial_date: i64) -> Answer {
    attributes_deactivated_at(uid, state, initial_date, None)
}

/// [`attributes`] with a Deactivation Date (seconds since the epoch), as servers that keep one
/// answer (PyKMIP does not).
pub fn attributes_deactivated_at(
    uid: &str,
    state: Option<u32>,
    initial_date: i64,
    deactivation_date: Option<i64>,
) -> Answer {
    let attribute = |name: &str, value: Value| {
        Ttlv::structure(
            tag::ATTRIBUTE,
            vec![
                Ttlv::text(tag::ATTRIBUTE_NAME, name),
                Ttlv::new(tag::ATTRIBUTE_VALUE, value),
            ],
        )
    };
    let mut payload = vec![Ttlv::text(tag::UNIQUE_IDENTIFIER, uid)];
    if let Some(s) = state {
        payload.push(attribute("State", Value::Enumeration(s)));
    }
    payload.push(attribute("Initial Date", Value::DateTime(initial_date)));
    if let Some(d) = deactivation_date {
        payload.push(attribute("Deactivation Date", Value::DateTime(d)));
    }
    payload.push(attribute(
        "Cryptographic Algorithm",
        Value::Enumeration(protocol::ALGORITHM_AES),
    ));
    payload.push(attribute(
        "Cryptographic Usage Mask",
        Value::Integer(protocol::USAGE_ENCRYPT | protocol::USAGE_DECRYPT),
    ));
    Answer::Success(payload)
}

/// A stand-in cipher (XOR, a fixed tag): the tests are about what polykms does with answers.
fn toy_cipher(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ 0x5A).collect()
}

/// Encrypt's answer, returning `iv` as the IV used (`None`: no IV in the answer).
pub fn encrypted(payload: &Ttlv, iv: Option<Vec<u8>>) -> Answer {
    let mut answer = vec![
        Ttlv::text(tag::UNIQUE_IDENTIFIER, uid(payload)),
        Ttlv::bytes(tag::DATA, toy_cipher(&bytes(payload, tag::DATA))),
    ];
    if let Some(iv) = iv {
        answer.push(Ttlv::bytes(tag::IV_COUNTER_NONCE, iv));
    }
    answer.push(Ttlv::bytes(
        tag::AUTHENTICATED_ENCRYPTION_TAG,
        vec![7u8; 16],
    ));
    Answer::Success(answer)
}

/// Decrypt's answer.
pub fn decrypted(payload: &Ttlv) -> Answer {
    Answer::Success(vec![
        Ttlv::text(tag::UNIQUE_IDENTIFIER, uid(payload)),
        Ttlv::bytes(tag::DATA, toy_cipher(&bytes(payload, tag::DATA))),
    ])
}

/// The Unique Identifier a request names, or "" (Locate names none).
pub fn uid_or_empty(payload: &Ttlv) -> String {
    payload
        .find(tag::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .unwrap_or_default()
        .to_owned()
}
