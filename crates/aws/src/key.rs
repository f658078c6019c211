//! The configured key reference (key ARN, key id, alias ARN, alias name) and KMS ARN parsing.

use std::fmt;

use polykms_backend::BackendError;

/// The configured key reference, sorted by form. Only a key ARN or key id names one key for
/// good; an alias can be retargeted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeyRef {
    /// `arn:<partition>:kms:<region>:<account>:key/<id>`
    KeyArn {
        arn: String,
        region: String,
        key_id: String,
    },
    /// A bare key id (UUID or `mrk-…`).
    KeyId(String),
    /// `arn:<partition>:kms:<region>:<account>:alias/<name>`
    AliasArn { arn: String, region: String },
    /// `alias/<name>`
    AliasName(String),
}

impl KeyRef {
    /// Parses `key`; anything that is not one of the four KMS forms is a `Config` error.
    pub(crate) fn parse(key: &str) -> Result<Self, BackendError> {
        let bad = |why: &str| BackendError::config(format!("key: {key:?} {why}"));
        if key.is_empty() {
            return Err(bad("is empty"));
        }
        if key.starts_with("arn:") {
            let arn = KmsArn::parse(key).ok_or_else(|| bad("is not a KMS key or alias ARN"))?;
            return match arn.resource {
                KmsResource::Key(id) => Ok(KeyRef::KeyArn {
                    arn: key.to_owned(),
                    region: arn.region,
                    key_id: id,
                }),
                KmsResource::Alias => Ok(KeyRef::AliasArn {
                    arn: key.to_owned(),
                    region: arn.region,
                }),
            };
        }
        if let Some(name) = key.strip_prefix("alias/") {
            if name.is_empty() || name.starts_with("aws/") {
                return Err(bad(
                    "must name a customer-managed alias (alias/aws/* cannot be used)",
                ));
            }
            return Ok(KeyRef::AliasName(key.to_owned()));
        }
        if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Ok(KeyRef::KeyId(key.to_owned()));
        }
        Err(bad("is not a key ARN, key id, alias ARN or alias/name"))
    }

    /// The region named by an ARN form.
    pub(crate) fn region(&self) -> Option<&str> {
        match self {
            KeyRef::KeyArn { region, .. } | KeyRef::AliasArn { region, .. } => Some(region),
            KeyRef::KeyId(_) | KeyRef::AliasName(_) => None,
        }
    }

    /// Whether `key_arn` is the key this reference names, when that is knowable offline.
    /// `None` for aliases, whose target only KMS knows.
    pub(crate) fn names_key_arn(&self, key_arn: &str) -> Option<bool> {
        match self {
            KeyRef::KeyArn { arn, .. } => Some(arn == key_arn),
            KeyRef::KeyId(id) => Some(
                KmsArn::parse(key_arn)
                    .is_some_and(|a| matches!(a.resource, KmsResource::Key(ref k) if k == id)),
            ),
            KeyRef::AliasArn { .. } | KeyRef::AliasName(_) => None,
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::KeyArn { arn, .. } | KeyRef::AliasArn { arn, .. } => f.write_str(arn),
            KeyRef::KeyId(s) | KeyRef::AliasName(s) => f.write_str(s),
        }
    }
}

/// The parts of a KMS ARN polykms cares about.
pub(crate) struct KmsArn {
    pub(crate) region: String,
    pub(crate) resource: KmsResource,
}

/// What a KMS ARN points at.
pub(crate) enum KmsResource {
    Key(String),
    Alias,
}

impl KmsArn {
    /// `arn:<partition>:kms:<region>:<account>:(key/<id>|alias/<name>)`, else `None`.
    pub(crate) fn parse(arn: &str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (prefix, partition, service, region, account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if prefix != "arn" || partition.is_empty() || service != "kms" || region.is_empty() {
            return None;
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let resource = if let Some(id) = resource.strip_prefix("key/") {
            if id.is_empty() || id.contains('/') {
                return None;
            }
            KmsResource::Key(id.to_owned())
        } else if resource
            .strip_prefix("alias/")
            .is_some_and(|n| !n.is_empty())
        {
            KmsResource::Alias
        } else {
            return None;
        };
        Some(KmsArn {
            region: region.to_owned(),
            resource,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polykms_backend::ErrorKind;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn key_forms_are_recognised() {
        assert!(matches!(KeyRef::parse(ARN).unwrap(), KeyRef::KeyArn { .. }));
        assert!(matches!(
            KeyRef::parse("arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/k").unwrap(),
            KeyRef::AliasArn { .. }
        ));
        assert!(matches!(
            KeyRef::parse("mrk-1234abcd").unwrap(),
            KeyRef::KeyId(_)
        ));
        assert!(matches!(
            KeyRef::parse("alias/k").unwrap(),
            KeyRef::AliasName(_)
        ));
        for bad in [
            "",
            "alias/",
            "alias/aws/ebs",
            "arn:aws:s3:::bucket",
            "arn:aws:kms:eu-west-1:1111:key/x",
            "arn:aws:kms:eu-west-1:111122223333:key/",
            "key with spaces",
        ] {
            let err = KeyRef::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert!(err.message().starts_with("key:"), "{err}");
        }
    }

    #[test]
    fn key_ref_knows_its_key_arn_offline_except_for_aliases() {
        let other = "arn:aws:kms:eu-west-1:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab";
        let by_arn = KeyRef::parse(ARN).unwrap();
        assert_eq!(by_arn.names_key_arn(ARN), Some(true));
        assert_eq!(by_arn.names_key_arn(other), Some(false));
        let by_id = KeyRef::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        assert_eq!(by_id.names_key_arn(ARN), Some(true));
        assert_eq!(by_id.names_key_arn(other), Some(false));
        assert_eq!(by_id.names_key_arn("not-an-arn"), Some(false));
        assert_eq!(KeyRef::parse("alias/a").unwrap().names_key_arn(ARN), None);
    }
}
