//! The two ways a seed is wrapped under an AES key object: CKM_AES_GCM (C_Encrypt with the
//! AAD as GCM AAD) and AES key wrap with padding (C_WrapKey of a session object, the AAD
//! bound inside, see `binding`).

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use polykms_backend::{BackendError, SecretBytes};
use zeroize::Zeroize;

use crate::binding;
use crate::config::WrapMechanism;
use crate::error::Operation;
use crate::hsm::Failure;

/// GCM IV: 96 bits, from the OS's RNG (or the token's, where the module generates it).
pub(crate) const IV_LEN: usize = 12;
/// GCM tag: 128 bits.
pub(crate) const TAG_LEN: usize = 16;

/// Wraps `seed` under `key`, binding `aad`.
pub(crate) fn wrap(
    mech: WrapMechanism,
    session: &Session,
    key: ObjectHandle,
    seed: &SecretBytes,
    aad: &[u8],
) -> Result<Vec<u8>, Failure> {
    if seed.is_empty() {
        return Err(BackendError::invalid_input("cannot wrap an empty seed").into());
    }
    match mech {
        WrapMechanism::AesGcm => gcm_encrypt(session, key, seed, aad),
        WrapMechanism::AesKeyWrapPad => kwp_wrap(session, key, seed, aad),
    }
}

/// Unwraps what `wrap` produced under `key`.
pub(crate) fn unwrap(
    mech: WrapMechanism,
    session: &Session,
    key: ObjectHandle,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretBytes, Failure> {
    match mech {
        WrapMechanism::AesGcm => gcm_decrypt(session, key, wrapped, aad),
        WrapMechanism::AesKeyWrapPad => kwp_unwrap(session, key, wrapped, aad),
    }
}

fn gcm_encrypt(
    session: &Session,
    key: ObjectHandle,
    seed: &SecretBytes,
    aad: &[u8],
) -> Result<Vec<u8>, Failure> {
    let mut iv = [0u8; IV_LEN];
    polykms_backend::crypto::fill_random(&mut iv)
        .map_err(|e| BackendError::internal(format!("GCM IV: {e}")))?;
    let sealed = {
        let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())
            .map_err(|e| Failure::Module(Operation::Wrap, e))?;
        session
            .encrypt(&Mechanism::AesGcm(params), key, seed.expose())
            .map_err(|e| Failure::Module(Operation::Wrap, e))?
    };
    // Read back after the call: some HSMs (AWS CloudHSM, FIPS-mode partitions) generate the
    // IV themselves and write it into the parameter's buffer.
    if sealed.len() != seed.len() + TAG_LEN {
        return Err(BackendError::internal(format!(
            "C_Encrypt (AES-GCM) returned {} bytes for a {}-byte seed",
            sealed.len(),
            seed.len()
        ))
        .into());
    }
    let mut out = Vec::with_capacity(IV_LEN + sealed.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn gcm_decrypt(
    session: &Session,
    key: ObjectHandle,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretBytes, Failure> {
    if wrapped.len() <= IV_LEN + TAG_LEN {
        return Err(BackendError::invalid_input(format!(
            "wrapped key is {} bytes, not longer than IV and tag",
            wrapped.len()
        ))
        .into());
    }
    let (iv, sealed) = wrapped.split_at(IV_LEN);
    let mut iv: [u8; IV_LEN] = iv.try_into().expect("split_at gives IV_LEN bytes");
    let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())
        .map_err(|e| Failure::Module(Operation::Unwrap, e))?;
    session
        .decrypt(&Mechanism::AesGcm(params), key, sealed)
        .map(SecretBytes::new)
        .map_err(|e| Failure::Module(Operation::Unwrap, e))
}

/// A session object holding the sealed seed, wrapped with C_WrapKey, then destroyed.
fn kwp_wrap(
    session: &Session,
    kek: ObjectHandle,
    seed: &SecretBytes,
    aad: &[u8],
) -> Result<Vec<u8>, Failure> {
    let sealed = binding::BINDING.seal(seed, aad);
    let mut template = secret_template();
    template.push(Attribute::Value(sealed.expose().to_vec()));
    let created = session.create_object(&template);
    for a in &mut template {
        if let Attribute::Value(v) = a {
            v.zeroize();
        }
    }
    let object = created.map_err(|e| Failure::Module(Operation::Wrap, e))?;
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, kek, object);
    destroy(session, object);
    wrapped.map_err(|e| Failure::Module(Operation::Wrap, e))
}

fn kwp_unwrap(
    session: &Session,
    kek: ObjectHandle,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretBytes, Failure> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(BackendError::invalid_input(format!(
            "wrapped key is {} bytes, not an RFC 5649 wrap",
            wrapped.len()
        ))
        .into());
    }
    let object = session
        .unwrap_key(&Mechanism::AesKeyWrapPad, kek, wrapped, &secret_template())
        .map_err(|e| Failure::Module(Operation::Unwrap, e))?;
    // Known gap: cryptoki (0.12) reads CKA_VALUE into a buffer of its own and returns a copy;
    // that buffer is freed without being wiped, so one copy of the sealed seed stays in freed
    // heap memory (the aes-gcm path has no such copy). Only cryptoki can fix it.
    let value = session.get_attributes(object, &[AttributeType::Value]);
    destroy(session, object);
    let value = value.map_err(|e| Failure::Module(Operation::Unwrap, e))?;
    let sealed = value
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(SecretBytes::new(v)),
            _ => None,
        })
        .ok_or_else(|| BackendError::internal("C_UnwrapKey made an object without CKA_VALUE"))?;
    Ok(binding::BINDING.open(&sealed, aad)?)
}

/// A private, extractable, non-sensitive generic secret that lives only in the session.
fn secret_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

fn destroy(session: &Session, object: ObjectHandle) {
    if let Err(e) = session.destroy_object(object) {
        // A session object dies with its session anyway.
        tracing::debug!(error = %e, "pkcs11: destroying a session object failed");
    }
}
