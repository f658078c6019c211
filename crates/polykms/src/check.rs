//! `polykms check`: prove a configuration works before the apiserver depends on it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use polykms_core::plugin::aad_for;

use crate::config::{BackendEntry, Config, LogConfig, LogFormat};
use crate::exit::Failure;
use crate::{backends, logging};

pub fn run(path: &Path, strict: bool) -> Result<(), Failure> {
    let config = Config::load(path)?;
    logging::init(
        &LogConfig {
            format: LogFormat::Text,
            level: "warn".into(),
        },
        None,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(check(&config, strict))
}

async fn check(config: &Config, strict: bool) -> Result<(), Failure> {
    // The start-up check has passed already (a FIPS build refuses to get here otherwise).
    println!("{}", crate::fips::module_line());
    // check changes nothing on disk: a key file `serve` would generate is reported, not made.
    let to_generate: Vec<(&str, &Path)> = config
        .backends
        .iter()
        .filter_map(|e| {
            e.settings
                .file_serve_would_generate()
                .map(|path| (e.name.as_str(), path))
        })
        .collect();
    let entries: Vec<BackendEntry> = config
        .backends
        .iter()
        .filter(|e| e.settings.file_serve_would_generate().is_none())
        .cloned()
        .collect();
    for (name, path) in &to_generate {
        println!("backend {name} (local)");
        println!(
            "  key_files[0] {} does not exist: `serve` would generate a new key there \
             (generate_if_missing = true); check writes nothing, so this backend is not \
             round-tripped",
            path.display()
        );
    }
    let built = backends::build(&entries)
        .await
        .map_err(|e| Failure::Config(e.to_string()))?;
    let aad = aad_for(&config.server.provider_name);
    let timeout = config.health.probe_timeout.max(Duration::from_secs(1));
    let mut versions = Vec::new();
    let mut failed = Vec::new();
    let mut warned = Vec::new();
    for b in &built {
        let result = round_trip(b.backend.as_ref(), &aad, timeout).await;
        // Described after the round trip: what a backend learns by connecting (the KMIP
        // version it negotiated) is then part of the line.
        println!("backend {} ({})", b.name, b.backend.describe());
        match result {
            Ok((version, elapsed)) => {
                println!("  key version: {version}");
                let ms = elapsed.as_secs_f64() * 1e3;
                if b.backend.can_unwrap() {
                    println!("  round trip:  ok ({ms:.1} ms)");
                } else {
                    println!(
                        "  round trip:  wrap ok ({ms:.1} ms); wrap-only: private key not on \
                         this node (as intended)"
                    );
                }
                versions.push((b.name.clone(), version));
            }
            Err(e) => {
                println!("  FAILED: {e}");
                failed.push(b.name.clone());
            }
        }
        match lifecycle(b.backend.as_ref(), timeout).await {
            Ok(l) if l.findings.is_empty() => println!("  lifecycle:   ok"),
            Ok(l) => {
                for f in &l.findings {
                    let what = if f.blocks_wrap {
                        "BLOCKS WRAPS"
                    } else {
                        "WARNING"
                    };
                    println!("  lifecycle:   {what} ({}): {f}", f.state.as_str());
                }
                if l.blocking().is_some() && !failed.contains(&b.name) {
                    failed.push(b.name.clone());
                }
                warned.push(b.name.clone());
            }
            Err(e) => println!("  lifecycle:   not readable ({e})"),
        }
    }
    let encrypt: Option<Vec<(&str, &str)>> = config
        .encrypt
        .with
        .iter()
        .map(|n| {
            versions
                .iter()
                .find(|(name, _)| name == n)
                .map(|(name, v)| (name.as_str(), v.as_str()))
        })
        .collect();
    match encrypt {
        Some(pairs) => println!(
            "key_id: {} (encrypt.with = {:?})",
            polykms_core::keyid::key_id(pairs),
            config.encrypt.with
        ),
        None if failed.is_empty() => println!(
            "key_id: unknown until `serve` generates the missing key file(s) of an encrypt backend"
        ),
        None => println!("key_id: unknown: an encrypt backend failed"),
    }
    // Wrap-only backends (an escrow public key) alone in encrypt.with: new writes succeed, but
    // nothing on this node can read them back. Allowed, and worth saying.
    let encrypt_backends = built
        .iter()
        .filter(|b| config.encrypt.with.contains(&b.name));
    if encrypt_backends.clone().count() == config.encrypt.with.len()
        && encrypt_backends.clone().all(|b| !b.backend.can_unwrap())
    {
        println!(
            "WARNING: every backend in encrypt.with ({}) is wrap-only here: nothing on this \
             node can decrypt what it encrypts until a private key is configured",
            config.encrypt.with.join(", ")
        );
    }
    if failed.is_empty() {
        println!("all {} backend(s) OK", built.len());
        if !to_generate.is_empty() {
            println!(
                "{} backend(s) not checked: their key file is generated by `serve`",
                to_generate.len()
            );
        }
        if strict && !warned.is_empty() {
            return Err(Failure::Exit {
                code: crate::exit::FINDINGS,
                message: format!(
                    "--strict: the key store reports a key going away for backend(s) {} (see \
                     the lifecycle lines above)",
                    warned.join(", ")
                ),
            });
        }
        Ok(())
    } else {
        Err(Failure::Unavailable(format!(
            "backend(s) failed the check: {}",
            failed.join(", ")
        )))
    }
}

/// What the key store says of the backend's current key (check has no Decrypts, so no older
/// versions to ask about).
async fn lifecycle(
    backend: &dyn polykms_backend::KeyEncryptionBackend,
    timeout: Duration,
) -> Result<polykms_backend::KeyLifecycle, String> {
    match tokio::time::timeout(timeout, backend.key_lifecycle(&[])).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn round_trip(
    backend: &dyn polykms_backend::KeyEncryptionBackend,
    aad: &[u8],
    timeout: Duration,
) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let attempt = async {
        let version = backend.probe().await.map_err(|e| format!("probe: {e}"))?;
        let seed = polykms_backend::crypto::random_secret(32).map_err(|e| format!("seed: {e}"))?;
        let wrapped = backend
            .wrap(&seed, aad)
            .await
            .map_err(|e| format!("wrap: {e}"))?;
        if !backend.can_unwrap() {
            // A wrap-only backend (escrow without its private key) proves the wrap, no more.
            return Ok(version.as_str().to_string());
        }
        let unwrapped = backend
            .unwrap(&wrapped, aad)
            .await
            .map_err(|e| format!("unwrap: {e}"))?;
        if unwrapped != seed {
            return Err("unwrap returned different bytes than were wrapped".to_string());
        }
        Ok(version.as_str().to_string())
    };
    match tokio::time::timeout(timeout * 3, attempt).await {
        Ok(Ok(v)) => Ok((v, started.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {:?}", timeout * 3)),
    }
}
