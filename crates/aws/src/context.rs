//! The KMS EncryptionContext that binds a wrapped seed to the plugin's AAD.
//!
//! KMS authenticates the context (it is AAD to KMS) and logs it in CloudTrail, so it must hold
//! nothing secret; the plugin's AAD is public by design (`polykms:v1:<provider>`).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Context key that carries a UTF-8 AAD as is.
pub const AAD_KEY: &str = "polykms:aad";
/// Context key that carries a non-UTF-8 AAD, base64-encoded. A separate key keeps the two
/// encodings from ever colliding.
pub const AAD_KEY_BASE64: &str = "polykms:aad-base64";

/// The configured pairs plus the AAD. An empty AAD adds no pair (KMS rejects empty values).
pub(crate) fn encryption_context(
    configured: &BTreeMap<String, String>,
    aad: &[u8],
) -> HashMap<String, String> {
    let mut ctx: HashMap<String, String> = configured
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !aad.is_empty() {
        match std::str::from_utf8(aad) {
            Ok(text) => ctx.insert(AAD_KEY.to_owned(), text.to_owned()),
            Err(_) => ctx.insert(AAD_KEY_BASE64.to_owned(), STANDARD.encode(aad)),
        };
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_aad_is_carried_verbatim_next_to_configured_pairs() {
        let configured = BTreeMap::from([("cluster".to_owned(), "prod-1".to_owned())]);
        let ctx = encryption_context(&configured, b"polykms:v1:kms");
        assert_eq!(ctx.len(), 2);
        assert_eq!(ctx[AAD_KEY], "polykms:v1:kms");
        assert_eq!(ctx["cluster"], "prod-1");
    }

    #[test]
    fn binary_aad_is_base64_under_its_own_key() {
        let ctx = encryption_context(&BTreeMap::new(), &[0xff, 0x00, 0x01]);
        assert_eq!(ctx.len(), 1);
        assert_eq!(ctx[AAD_KEY_BASE64], "/wAB");
        assert!(!ctx.contains_key(AAD_KEY));
    }

    #[test]
    fn empty_aad_adds_nothing() {
        assert!(encryption_context(&BTreeMap::new(), b"").is_empty());
    }
}
