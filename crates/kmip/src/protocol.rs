//! The KMIP 1.x messages polykms exchanges: request and response framing (Request Message,
//! Response Message, one Batch Item each) and the payloads of Discover Versions, Locate,
//! Get Attributes, Encrypt and Decrypt. Tag and enumeration values are those of the KMIP 1.4
//! specification (§9.1.3); the same values hold in 1.2 and 1.3.

use std::fmt;

use crate::ttlv::{Tag, Ttlv, Value};

/// Tags used here (KMIP 1.4 §9.1.3.1).
pub mod tag {
    use super::Tag;
    pub const ATTRIBUTE: Tag = Tag(0x420008);
    pub const ATTRIBUTE_NAME: Tag = Tag(0x42000A);
    pub const ATTRIBUTE_VALUE: Tag = Tag(0x42000B);
    pub const AUTHENTICATION: Tag = Tag(0x42000C);
    pub const BATCH_COUNT: Tag = Tag(0x42000D);
    pub const BATCH_ITEM: Tag = Tag(0x42000F);
    pub const BLOCK_CIPHER_MODE: Tag = Tag(0x420011);
    pub const CREDENTIAL: Tag = Tag(0x420023);
    pub const CREDENTIAL_TYPE: Tag = Tag(0x420024);
    pub const CREDENTIAL_VALUE: Tag = Tag(0x420025);
    pub const CRYPTOGRAPHIC_ALGORITHM: Tag = Tag(0x420028);
    pub const CRYPTOGRAPHIC_PARAMETERS: Tag = Tag(0x42002B);
    pub const IV_COUNTER_NONCE: Tag = Tag(0x42003D);
    pub const NAME_TYPE: Tag = Tag(0x420054);
    pub const NAME_VALUE: Tag = Tag(0x420055);
    pub const OPERATION: Tag = Tag(0x42005C);
    pub const PROTOCOL_VERSION: Tag = Tag(0x420069);
    pub const PROTOCOL_VERSION_MAJOR: Tag = Tag(0x42006A);
    pub const PROTOCOL_VERSION_MINOR: Tag = Tag(0x42006B);
    pub const REQUEST_HEADER: Tag = Tag(0x420077);
    pub const REQUEST_MESSAGE: Tag = Tag(0x420078);
    pub const REQUEST_PAYLOAD: Tag = Tag(0x420079);
    pub const RESPONSE_HEADER: Tag = Tag(0x42007A);
    pub const RESPONSE_MESSAGE: Tag = Tag(0x42007B);
    pub const RESPONSE_PAYLOAD: Tag = Tag(0x42007C);
    pub const RESULT_MESSAGE: Tag = Tag(0x42007D);
    pub const RESULT_REASON: Tag = Tag(0x42007E);
    pub const RESULT_STATUS: Tag = Tag(0x42007F);
    pub const TAG_LENGTH: Tag = Tag(0x4200CE);
    pub const UNIQUE_IDENTIFIER: Tag = Tag(0x420094);
    pub const USERNAME: Tag = Tag(0x420099);
    pub const PASSWORD: Tag = Tag(0x4200A1);
    pub const DATA: Tag = Tag(0x4200C2);
    pub const AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA: Tag = Tag(0x4200FE);
    pub const AUTHENTICATED_ENCRYPTION_TAG: Tag = Tag(0x4200FF);
}

/// Operations used here (Operation enumeration, KMIP 1.4 §9.1.3.2.27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Locate,
    GetAttributes,
    DiscoverVersions,
    Encrypt,
    Decrypt,
}

impl Operation {
    pub fn code(self) -> u32 {
        match self {
            Operation::Locate => 0x08,
            Operation::GetAttributes => 0x0B,
            Operation::DiscoverVersions => 0x1E,
            Operation::Encrypt => 0x1F,
            Operation::Decrypt => 0x20,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::Locate => "Locate",
            Operation::GetAttributes => "Get Attributes",
            Operation::DiscoverVersions => "Discover Versions",
            Operation::Encrypt => "Encrypt",
            Operation::Decrypt => "Decrypt",
        }
    }
}

/// Object State values (KMIP 1.4 §9.1.3.2.18).
pub mod state {
    pub const PRE_ACTIVE: u32 = 1;
    pub const ACTIVE: u32 = 2;
    pub const DEACTIVATED: u32 = 3;
    pub const COMPROMISED: u32 = 4;
    pub const DESTROYED: u32 = 5;
    pub const DESTROYED_COMPROMISED: u32 = 6;

    /// The specification's name of a state.
    pub fn name(state: u32) -> String {
        match state {
            PRE_ACTIVE => "Pre-Active".into(),
            ACTIVE => "Active".into(),
            DEACTIVATED => "Deactivated".into(),
            COMPROMISED => "Compromised".into(),
            DESTROYED => "Destroyed".into(),
            DESTROYED_COMPROMISED => "Destroyed Compromised".into(),
            other => format!("state {other:#X}"),
        }
    }
}

/// Object Type: Symmetric Key (§9.1.3.2.12).
pub const OBJECT_TYPE_SYMMETRIC_KEY: u32 = 0x02;
/// Cryptographic Algorithm: AES (§9.1.3.2.13).
pub const ALGORITHM_AES: u32 = 0x03;
/// Block Cipher Mode: GCM (§9.1.3.2.14).
pub const MODE_GCM: u32 = 0x09;
/// Cryptographic Usage Mask bits Encrypt and Decrypt (§9.1.3.3.1).
pub const USAGE_ENCRYPT: i32 = 0x04;
pub const USAGE_DECRYPT: i32 = 0x08;
/// Name Type: Uninterpreted Text String (§9.1.3.2.10).
const NAME_TYPE_TEXT: u32 = 0x01;
/// Credential Type: Username and Password (§9.1.3.2.1).
const CREDENTIAL_USERNAME_PASSWORD: u32 = 0x01;
/// GCM authentication tag length requested, in bytes.
pub const GCM_TAG_LENGTH: i32 = 16;

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: i32,
    pub minor: i32,
}

impl ProtocolVersion {
    pub const fn new(major: i32, minor: i32) -> Self {
        ProtocolVersion { major, minor }
    }

    fn to_ttlv(self) -> Ttlv {
        Ttlv::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Ttlv::integer(tag::PROTOCOL_VERSION_MAJOR, self.major),
                Ttlv::integer(tag::PROTOCOL_VERSION_MINOR, self.minor),
            ],
        )
    }

    fn from_ttlv(item: &Ttlv) -> Option<Self> {
        Some(ProtocolVersion {
            major: item.find(tag::PROTOCOL_VERSION_MAJOR)?.as_integer()?,
            minor: item.find(tag::PROTOCOL_VERSION_MINOR)?.as_integer()?,
        })
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The first version whose Encrypt/Decrypt carry Authenticated Encryption Additional Data and
/// Tag (KMIP 1.4 §4.29, §4.30): the least that an AES-GCM wrap with AAD can use.
pub const GCM_WITH_AAD: ProtocolVersion = ProtocolVersion::new(1, 4);

/// A KMIP Credential of type Username and Password (§2.1.2).
pub struct UsernamePassword<'a> {
    pub username: &'a str,
    pub password: Option<&'a str>,
}

/// A Request Message with one batch item.
pub fn request(
    version: ProtocolVersion,
    credential: Option<UsernamePassword<'_>>,
    operation: Operation,
    payload: Vec<Ttlv>,
) -> Ttlv {
    let mut header = vec![version.to_ttlv()];
    if let Some(c) = credential {
        let mut value = vec![Ttlv::text(tag::USERNAME, c.username)];
        if let Some(p) = c.password {
            value.push(Ttlv::text(tag::PASSWORD, p));
        }
        header.push(Ttlv::structure(
            tag::AUTHENTICATION,
            vec![Ttlv::structure(
                tag::CREDENTIAL,
                vec![
                    Ttlv::enumeration(tag::CREDENTIAL_TYPE, CREDENTIAL_USERNAME_PASSWORD),
                    Ttlv::structure(tag::CREDENTIAL_VALUE, value),
                ],
            )],
        ));
    }
    header.push(Ttlv::integer(tag::BATCH_COUNT, 1));
    Ttlv::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Ttlv::structure(tag::REQUEST_HEADER, header),
            Ttlv::structure(
                tag::BATCH_ITEM,
                vec![
                    Ttlv::enumeration(tag::OPERATION, operation.code()),
                    Ttlv::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// Result Status of a batch item (§9.1.3.2.29).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Success,
    OperationFailed,
    OperationPending,
    OperationUndone,
    Other(u32),
}

impl From<u32> for ResultStatus {
    fn from(v: u32) -> Self {
        match v {
            0 => ResultStatus::Success,
            1 => ResultStatus::OperationFailed,
            2 => ResultStatus::OperationPending,
            3 => ResultStatus::OperationUndone,
            other => ResultStatus::Other(other),
        }
    }
}

/// The one batch item of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    pub status: ResultStatus,
    /// Result Reason (§9.1.3.2.30), present on failures.
    pub reason: Option<u32>,
    /// Result Message: the server's free text, for operators.
    pub message: Option<String>,
    pub payload: Option<Ttlv>,
}

/// Reads a Response Message: its protocol version and its single batch item.
pub fn parse_response(message: &Ttlv) -> Result<(ProtocolVersion, BatchResult), String> {
    if message.tag != tag::RESPONSE_MESSAGE {
        return Err(format!(
            "expected a Response Message, got {:?}",
            message.tag
        ));
    }
    let header = message
        .find(tag::RESPONSE_HEADER)
        .ok_or("Response Message without a Response Header")?;
    let version = header
        .find(tag::PROTOCOL_VERSION)
        .and_then(ProtocolVersion::from_ttlv)
        .ok_or("Response Header without a Protocol Version")?;
    let mut items = message.find_all(tag::BATCH_ITEM);
    let item = items
        .next()
        .ok_or("Response Message without a Batch Item")?;
    if items.next().is_some() {
        return Err("Response Message with more than one Batch Item".into());
    }
    let status = item
        .find(tag::RESULT_STATUS)
        .and_then(Ttlv::as_enumeration)
        .ok_or("Batch Item without a Result Status")?;
    Ok((
        version,
        BatchResult {
            status: status.into(),
            reason: item.find(tag::RESULT_REASON).and_then(Ttlv::as_enumeration),
            message: item
                .find(tag::RESULT_MESSAGE)
                .and_then(Ttlv::as_text)
                .map(str::to_owned),
            payload: item.find(tag::RESPONSE_PAYLOAD).cloned(),
        },
    ))
}

/// Discover Versions request payload: the versions we speak, preferred first.
pub fn discover_versions(offered: &[ProtocolVersion]) -> Vec<Ttlv> {
    offered.iter().map(|v| v.to_ttlv()).collect()
}

/// The versions a Discover Versions response lists, the server's preference first.
pub fn parse_discover_versions(payload: Option<&Ttlv>) -> Vec<ProtocolVersion> {
    payload
        .map(|p| {
            p.find_all(tag::PROTOCOL_VERSION)
                .filter_map(ProtocolVersion::from_ttlv)
                .collect()
        })
        .unwrap_or_default()
}

fn attribute(name: &str, value: Value) -> Ttlv {
    Ttlv::structure(
        tag::ATTRIBUTE,
        vec![
            Ttlv::text(tag::ATTRIBUTE_NAME, name),
            Ttlv::new(tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

/// Locate request payload (KMIP 1.x form): Active symmetric keys with Name `name`.
pub fn locate_active_keys(name: &str) -> Vec<Ttlv> {
    vec![
        attribute("Object Type", Value::Enumeration(OBJECT_TYPE_SYMMETRIC_KEY)),
        attribute(
            "Name",
            Value::Structure(vec![
                Ttlv::text(tag::NAME_VALUE, name),
                Ttlv::enumeration(tag::NAME_TYPE, NAME_TYPE_TEXT),
            ]),
        ),
        attribute("State", Value::Enumeration(state::ACTIVE)),
    ]
}

/// The Unique Identifiers a Locate response lists.
pub fn parse_locate(payload: Option<&Ttlv>) -> Vec<String> {
    payload
        .map(|p| {
            p.find_all(tag::UNIQUE_IDENTIFIER)
                .filter_map(Ttlv::as_text)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Attributes read from a key to select it, check it can wrap, and report its lifecycle.
pub const KEY_ATTRIBUTES: [&str; 6] = [
    "State",
    "Activation Date",
    "Initial Date",
    "Deactivation Date",
    "Cryptographic Algorithm",
    "Cryptographic Usage Mask",
];

/// Get Attributes request payload (KMIP 1.x form: attribute names as text).
pub fn get_attributes(uid: &str, names: &[&str]) -> Vec<Ttlv> {
    let mut payload = vec![Ttlv::text(tag::UNIQUE_IDENTIFIER, uid)];
    payload.extend(names.iter().map(|n| Ttlv::text(tag::ATTRIBUTE_NAME, *n)));
    payload
}

/// What Get Attributes said about a key. Absent attributes are `None` (servers omit those they
/// do not keep: PyKMIP keeps no Activation Date nor Deactivation Date).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyAttributes {
    pub uid: String,
    pub state: Option<u32>,
    pub activation_date: Option<i64>,
    pub initial_date: Option<i64>,
    /// When the server moves the key from Active to Deactivated (seconds since the epoch).
    pub deactivation_date: Option<i64>,
    pub algorithm: Option<u32>,
    pub usage_mask: Option<i32>,
}

/// Reads a Get Attributes response payload.
pub fn parse_key_attributes(uid: &str, payload: Option<&Ttlv>) -> KeyAttributes {
    let mut out = KeyAttributes {
        uid: payload
            .and_then(|p| p.find(tag::UNIQUE_IDENTIFIER))
            .and_then(Ttlv::as_text)
            .unwrap_or(uid)
            .to_owned(),
        ..KeyAttributes::default()
    };
    let attributes = payload.into_iter().flat_map(|p| p.find_all(tag::ATTRIBUTE));
    for a in attributes {
        let (Some(name), Some(value)) = (
            a.find(tag::ATTRIBUTE_NAME).and_then(Ttlv::as_text),
            a.find(tag::ATTRIBUTE_VALUE),
        ) else {
            continue;
        };
        match name {
            "State" => out.state = value.as_enumeration(),
            "Activation Date" => out.activation_date = value.as_date_time(),
            "Initial Date" => out.initial_date = value.as_date_time(),
            "Deactivation Date" => out.deactivation_date = value.as_date_time(),
            "Cryptographic Algorithm" => out.algorithm = value.as_enumeration(),
            "Cryptographic Usage Mask" => out.usage_mask = value.as_integer(),
            _ => {}
        }
    }
    out
}

/// Cryptographic Parameters for AES-GCM with a 16-byte tag.
fn gcm_parameters() -> Ttlv {
    Ttlv::structure(
        tag::CRYPTOGRAPHIC_PARAMETERS,
        vec![
            Ttlv::enumeration(tag::BLOCK_CIPHER_MODE, MODE_GCM),
            Ttlv::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, ALGORITHM_AES),
            Ttlv::integer(tag::TAG_LENGTH, GCM_TAG_LENGTH),
        ],
    )
}

/// Encrypt request payload (§4.29): AES-GCM under `uid` with our IV and the AAD.
pub fn encrypt(uid: &str, plaintext: &[u8], iv: &[u8], aad: &[u8]) -> Vec<Ttlv> {
    let mut payload = vec![
        Ttlv::text(tag::UNIQUE_IDENTIFIER, uid),
        gcm_parameters(),
        Ttlv::bytes(tag::DATA, plaintext),
        Ttlv::bytes(tag::IV_COUNTER_NONCE, iv),
    ];
    if !aad.is_empty() {
        payload.push(Ttlv::bytes(
            tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA,
            aad,
        ));
    }
    payload
}

/// What Encrypt answered.
pub struct Encrypted {
    pub ciphertext: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
}

pub fn parse_encrypt(payload: Option<&Ttlv>) -> Option<Encrypted> {
    let p = payload?;
    let field = |t| p.find(t).and_then(Ttlv::as_bytes).map(<[u8]>::to_vec);
    Some(Encrypted {
        ciphertext: field(tag::DATA)?,
        iv: field(tag::IV_COUNTER_NONCE),
        tag: field(tag::AUTHENTICATED_ENCRYPTION_TAG),
    })
}

/// Decrypt request payload (§4.30): Encrypt's fields in the same order, then the tag.
pub fn decrypt(uid: &str, ciphertext: &[u8], iv: &[u8], gcm_tag: &[u8], aad: &[u8]) -> Vec<Ttlv> {
    let mut payload = encrypt(uid, ciphertext, iv, aad);
    payload.push(Ttlv::bytes(tag::AUTHENTICATED_ENCRYPTION_TAG, gcm_tag));
    payload
}

/// The plaintext a Decrypt response carries. The caller moves it into a zeroizing buffer.
/// (Moved out, not copied: what stays behind in the payload is wiped when it is dropped.)
pub fn take_decrypted(payload: Option<Ttlv>) -> Option<Vec<u8>> {
    let mut payload = payload?;
    let Value::Structure(items) = &mut payload.value else {
        return None;
    };
    items
        .iter_mut()
        .find(|i| i.tag == tag::DATA)
        .and_then(|i| match &mut i.value {
            Value::ByteString(b) => Some(std::mem::take(b)),
            _ => None,
        })
}

#[cfg(test)]
mod tests;
