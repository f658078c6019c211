//! Which roots the KMIP server's certificate must chain to. With `ca_file`, that bundle alone:
//! a KMIP server's certificate comes from the key manager's own CA, and trusting the system
//! roots as well would let any public CA vouch for a machine that then receives every seed
//! polykms wraps. The system roots are trusted when there is no `ca_file`, or on request
//! (`also_trust_system_roots`).

use polykms_backend::BackendError;
use polykms_net::CaBundle;
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::RootCertStore;

use crate::config::KmipConfig;

/// Loads the system's roots; a parameter so that tests can stand in their own.
pub type SystemRoots = fn() -> Vec<CertificateDer<'static>>;

/// The platform's roots (or `SSL_CERT_FILE` / `SSL_CERT_DIR`); unreadable ones are skipped, as
/// a system store commonly holds a few that rustls cannot use.
pub fn native_roots() -> Vec<CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// The trusted roots and a summary for `describe` (`ca_file /x.pem only`).
pub fn root_store(
    config: &KmipConfig,
    system: SystemRoots,
) -> Result<(RootCertStore, String), BackendError> {
    let mut roots = RootCertStore::empty();
    let Some(path) = &config.ca_file else {
        let (added, _) = roots.add_parsable_certificates(system());
        if added == 0 {
            return Err(BackendError::config(
                "ca_file: no system CA certificates found; set ca_file to the KMIP server's CA",
            ));
        }
        return Ok((roots, format!("{added} system roots")));
    };
    let bundle = CaBundle::load(path)?;
    let (ok, bad) = roots.add_parsable_certificates(bundle.certificates());
    if ok == 0 || bad > 0 {
        return Err(BackendError::config(format!(
            "ca_file: {} holds {bad} certificate(s) that are not usable CA certificates",
            path.display()
        )));
    }
    if !config.also_trust_system_roots {
        return Ok((roots, format!("ca_file {} only", path.display())));
    }
    roots.add_parsable_certificates(system());
    Ok((roots, format!("ca_file {} + system roots", path.display())))
}
