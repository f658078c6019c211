//! Generated KMS plugin API types and services (from `proto/`).

#![allow(clippy::all, missing_docs)]

/// KMS v2 (`package v2`).
pub mod v2 {
    tonic::include_proto!("v2");
}

/// KMS v1beta1 (`package v1beta1`), for clusters older than 1.29 or with v1 still enabled.
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}
