//! The cryptographic module at start: a FIPS build refuses to run any command unless AWS-LC's
//! FIPS module is in FIPS mode and passes its self tests (docs/fips.md), and `polykms version`
//! names the module. Then the process-wide rustls provider (the module's FIPS provider in a
//! FIPS build) is installed before any client exists.

use polykms_backend::crypto;

use crate::exit::{CRYPTO_MODULE, Failure};

/// Runs before every command: the module check (FIPS build) and the process-wide TLS provider.
pub fn start_up_check() -> Result<(), Failure> {
    crypto::self_check().map_err(|e| Failure::Exit {
        code: CRYPTO_MODULE,
        message: format!("refusing to start: {e}"),
    })?;
    // Every TLS client that takes the process default (etcd's tonic, google-cloud-auth) gets the
    // FIPS provider in a FIPS build; the others are given it and check their config themselves.
    polykms_net::tls::install_default().map_err(|e| Failure::Exit {
        code: CRYPTO_MODULE,
        message: format!("refusing to start: TLS provider: {e}"),
    })
}

/// The line `polykms version` prints about the module.
pub fn module_line() -> String {
    let module = crypto::module();
    let build = if crypto::FIPS_BUILD {
        match module.fips_branch {
            Some(branch) => format!("FIPS build, FIPS 140-3 module branch {branch}"),
            None => "FIPS build".to_string(),
        }
    } else {
        "not a FIPS build".to_string()
    };
    format!("cryptographic module: {module} ({build})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_line_names_the_module_and_the_build() {
        let line = module_line();
        assert!(line.starts_with("cryptographic module: AWS-LC "), "{line}");
        if crypto::FIPS_BUILD {
            assert!(
                line.contains("AWS-LC FIPS") && line.contains("(FIPS mode)"),
                "{line}"
            );
        } else {
            assert!(line.ends_with("(not a FIPS build)"), "{line}");
        }
        assert!(start_up_check().is_ok());
    }
}
