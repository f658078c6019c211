//! `polykms check`: prove a configuration works before the apiserver depends on it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use polykms_backend::SecretBytes;
use polykms_core::plugin::aad_for;
use rand::RngCore;

use crate::config::{Config, LogConfig, LogFormat};
use crate::exit::Failure;
use crate::{backends, logging};

pub fn run(path: &Path) -> Result<(), Failure> {
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
    runtime.block_on(check(&config))
}

async fn check(config: &Config) -> Result<(), Failure> {
    let built = backends::build(&config.backends)
        .await
        .map_err(|e| Failure::Config(e.to_string()))?;
    let aad = aad_for(&config.server.provider_name);
    let timeout = config.health.probe_timeout.max(Duration::from_secs(1));
    let mut versions = Vec::new();
    let mut failed = Vec::new();
    for b in &built {
        let result = round_trip(b.backend.as_ref(), &aad, timeout).await;
        // Described after the round trip: what a backend learns by connecting (the KMIP
        // version it negotiated) is then part of the line.
        println!("backend {} ({})", b.name, b.backend.describe());
        match result {
            Ok((version, elapsed)) => {
                println!("  key version: {version}");
                println!("  round trip:  ok ({:.1} ms)", elapsed.as_secs_f64() * 1e3);
                versions.push((b.name.clone(), version));
            }
            Err(e) => {
                println!("  FAILED: {e}");
                failed.push(b.name.clone());
            }
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
        None => println!("key_id: unknown: an encrypt backend failed"),
    }
    if failed.is_empty() {
        println!("all {} backend(s) OK", built.len());
        Ok(())
    } else {
        Err(Failure::Unavailable(format!(
            "backend(s) failed the check: {}",
            failed.join(", ")
        )))
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
        let mut seed = vec![0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let seed = SecretBytes::new(seed);
        let wrapped = backend
            .wrap(&seed, aad)
            .await
            .map_err(|e| format!("wrap: {e}"))?;
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
