//! PKCS#11 return values sorted into polykms error kinds, at the edge.

use cryptoki::error::{Error, RvError};
use polykms_backend::BackendError;

/// What polykms was doing when the module answered, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Load,
    FindToken,
    OpenSession,
    Login,
    FindKeys,
    Wrap,
    Unwrap,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Load => "loading the module",
            Operation::FindToken => "finding the token",
            Operation::OpenSession => "opening a session",
            Operation::Login => "logging in",
            Operation::FindKeys => "finding the key objects",
            Operation::Wrap => "wrapping",
            Operation::Unwrap => "unwrapping",
        }
    }
}

/// The CKR_ name of a return value.
pub(crate) fn rv_name(rv: RvError) -> String {
    // Display is the spec's description; Debug is the variant, e.g. `PinIncorrect`.
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Whether a session that saw this error must be thrown away rather than reused.
pub(crate) fn loses_session(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::GeneralError,
            _
        )
    )
}

/// Whether the error says the token itself is gone (removed, or re-created under the same
/// label): the module may have to enumerate its tokens again.
pub(crate) fn token_gone(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::GeneralError,
            _
        )
    )
}

/// Whether a key object handle went stale (object deleted, token re-created).
pub(crate) fn stale_handle(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::WrappingKeyHandleInvalid
                | RvError::UnwrappingKeyHandleInvalid,
            _
        )
    )
}

/// The token refused the PIN itself (wrong, malformed, locked or expired): never retried with
/// the same PIN, since every wrong attempt brings a token closer to locking.
pub(crate) fn pin_refused(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
    )
}

/// Sorts a cryptoki error into a kind. PIN errors are never retryable: retrying a wrong PIN
/// can lock the token.
pub(crate) fn classify(op: Operation, e: &Error) -> BackendError {
    let doing = op.as_str();
    let Error::Pkcs11(rv, function) = e else {
        return match e {
            Error::LibraryLoading(err) => {
                BackendError::config(format!("module: cannot load the library: {err}"))
            }
            Error::MissingSymbol(_) | Error::NullFunctionPointer | Error::NotSupported => {
                BackendError::config(format!("module: {doing}: {e}"))
            }
            _ => BackendError::internal(format!("{doing}: {e}")),
        };
    };
    let what = format!("{doing}: {function:?} returned {}", rv_name(*rv));
    match rv {
        RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::WrappedKeyInvalid
        | RvError::WrappedKeyLenRange => {
            BackendError::wrong_key(format!("{what}: wrong key or context (AAD), or tampered"))
        }
        RvError::KeyHandleInvalid
        | RvError::ObjectHandleInvalid
        | RvError::WrappingKeyHandleInvalid
        | RvError::UnwrappingKeyHandleInvalid
        | RvError::KeyFunctionNotPermitted
        | RvError::KeyTypeInconsistent
        | RvError::KeySizeRange
        | RvError::KeyUnextractable
        | RvError::KeyNotWrappable
        | RvError::WrappingKeyTypeInconsistent
        | RvError::UnwrappingKeyTypeInconsistent => BackendError::key_unavailable(what),
        rv if pin_refused(*rv) => BackendError::unauthorized(what),
        RvError::UserPinNotInitialized
        | RvError::UserTypeInvalid
        | RvError::UserAnotherAlreadyLoggedIn
        | RvError::UserTooManyTypes => BackendError::unauthorized(what),
        RvError::DataLenRange | RvError::DataInvalid => BackendError::invalid_input(what),
        RvError::MechanismInvalid | RvError::MechanismParamInvalid => {
            BackendError::config(format!("mechanism: the token does not support it ({what})"))
        }
        RvError::DeviceError
        | RvError::DeviceMemory
        | RvError::DeviceRemoved
        | RvError::HostMemory
        | RvError::TokenNotPresent
        | RvError::TokenNotRecognized
        | RvError::SlotIdInvalid
        | RvError::SessionClosed
        | RvError::SessionCount
        | RvError::SessionHandleInvalid
        | RvError::SessionExists
        | RvError::SessionReadOnly
        | RvError::SessionReadOnlyExists
        | RvError::SessionReadWriteSoExists
        | RvError::SessionParallelNotSupported
        | RvError::UserNotLoggedIn
        | RvError::CryptokiNotInitialized
        | RvError::OperationActive
        | RvError::FunctionCanceled
        | RvError::FunctionFailed
        | RvError::GeneralError
        | RvError::CantLock => BackendError::unavailable(what),
        _ => BackendError::internal(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;
    use polykms_backend::ErrorKind;

    fn kind(rv: RvError) -> (ErrorKind, bool) {
        let e = classify(Operation::Unwrap, &Error::Pkcs11(rv, Function::Decrypt));
        (e.kind(), e.is_retryable())
    }

    #[test]
    fn return_values_sort_into_the_issue_kinds() {
        use ErrorKind::*;
        for (rv, want) in [
            (RvError::EncryptedDataInvalid, (WrongKey, false)),
            (RvError::EncryptedDataLenRange, (WrongKey, false)),
            (RvError::KeyHandleInvalid, (KeyUnavailable, false)),
            (RvError::ObjectHandleInvalid, (KeyUnavailable, false)),
            (RvError::PinIncorrect, (Unauthorized, false)),
            (RvError::PinLocked, (Unauthorized, false)),
            (RvError::PinExpired, (Unauthorized, false)),
            (RvError::DeviceError, (Unavailable, true)),
            (RvError::DeviceMemory, (Unavailable, true)),
            (RvError::SessionHandleInvalid, (Unavailable, true)),
            (RvError::SessionClosed, (Unavailable, true)),
            (RvError::SessionCount, (Unavailable, true)),
            (RvError::DeviceRemoved, (Unavailable, true)),
            (RvError::TokenNotPresent, (Unavailable, true)),
            (RvError::MechanismInvalid, (Config, false)),
        ] {
            assert_eq!(kind(rv), want, "{rv:?}");
        }
    }

    #[test]
    fn messages_name_the_return_value() {
        let e = classify(
            Operation::Login,
            &Error::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert!(e.message().contains("CKR_PIN_INCORRECT"), "{e}");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}
