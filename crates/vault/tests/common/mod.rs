//! Shared set-up for the OpenBao integration tests: env from `integration/servers/openbao.sh`,
//! backends for each auth method, a root client for admin calls, a switchable TCP proxy.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use polykms_vault::{AuthConfig, VaultBackend, VaultConfig};
use tokio::net::{TcpListener, TcpStream};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// Paths and address written by `integration/servers/openbao.sh start`.
pub struct Env {
    pub addr: String,
    pub key: String,
    pub root_token_file: PathBuf,
    pub token_file: PathBuf,
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
    pub short_role_id_file: PathBuf,
    pub short_secret_id_file: PathBuf,
    pub nopolicy_role_id_file: PathBuf,
    pub nopolicy_secret_id_file: PathBuf,
}

/// The env, or `None` (test skipped) when the server script has not been sourced, unless
/// `POLYKMS_REQUIRE_INTEGRATION=1`, in which case a missing env fails the test.
pub fn env(test: &str) -> Option<Env> {
    let Ok(addr) = std::env::var("POLYKMS_VAULT_ADDR") else {
        if std::env::var("POLYKMS_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
            panic!(
                "POLYKMS_VAULT_ADDR is not set but POLYKMS_REQUIRE_INTEGRATION=1 (run integration/servers/openbao.sh start and source integration/.run/openbao.env)"
            );
        }
        eprintln!(
            "skipped {test}: POLYKMS_VAULT_ADDR not set (integration/servers/openbao.sh start)"
        );
        return None;
    };
    let path =
        |var: &str| PathBuf::from(std::env::var(var).unwrap_or_else(|_| panic!("{var} not set")));
    Some(Env {
        addr,
        key: std::env::var("POLYKMS_VAULT_KEY").unwrap_or_else(|_| "polykms".into()),
        root_token_file: path("POLYKMS_VAULT_ROOT_TOKEN_FILE"),
        token_file: path("POLYKMS_VAULT_TOKEN_FILE"),
        role_id_file: path("POLYKMS_VAULT_ROLE_ID_FILE"),
        secret_id_file: path("POLYKMS_VAULT_SECRET_ID_FILE"),
        short_role_id_file: path("POLYKMS_VAULT_SHORT_ROLE_ID_FILE"),
        short_secret_id_file: path("POLYKMS_VAULT_SHORT_SECRET_ID_FILE"),
        nopolicy_role_id_file: path("POLYKMS_VAULT_NOPOLICY_ROLE_ID_FILE"),
        nopolicy_secret_id_file: path("POLYKMS_VAULT_NOPOLICY_SECRET_ID_FILE"),
    })
}

impl Env {
    /// A config for `key` with the given auth, address overridable (for the proxy).
    pub fn config(&self, key: &str, auth: AuthConfig) -> VaultConfig {
        VaultConfig {
            address: self.addr.clone(),
            mount: "transit".into(),
            key: key.into(),
            namespace: None,
            network: Default::default(),
            client_cert_file: None,
            client_key_file: None,
            tls_server_name: None,
            timeout_ms: 2000,
            allow_key_without_aad: false,
            auth,
        }
    }

    pub fn token_auth(&self, file: PathBuf) -> AuthConfig {
        AuthConfig::Token {
            token_file: Some(file),
            token_env: None,
        }
    }

    pub fn approle(&self) -> AuthConfig {
        AuthConfig::AppRole {
            role_id_file: self.role_id_file.clone(),
            secret_id_file: self.secret_id_file.clone(),
            mount: "approle".into(),
        }
    }

    pub fn short_approle(&self) -> AuthConfig {
        AuthConfig::AppRole {
            role_id_file: self.short_role_id_file.clone(),
            secret_id_file: self.short_secret_id_file.clone(),
            mount: "approle".into(),
        }
    }

    pub fn nopolicy_approle(&self) -> AuthConfig {
        AuthConfig::AppRole {
            role_id_file: self.nopolicy_role_id_file.clone(),
            secret_id_file: self.nopolicy_secret_id_file.clone(),
            mount: "approle".into(),
        }
    }

    pub async fn backend(&self, config: &VaultConfig) -> VaultBackend {
        VaultBackend::connect(config).await.expect("connect")
    }

    /// A root vaultrs client for admin calls (rotate, create keys, tokens).
    pub fn root(&self) -> VaultClient {
        let token = std::fs::read_to_string(&self.root_token_file).unwrap();
        VaultClient::new(
            VaultClientSettingsBuilder::default()
                .address(&self.addr)
                .token(token.trim())
                .build()
                .unwrap(),
        )
        .unwrap()
    }
}

/// A TCP proxy to the server that the test can switch off (refuses and cuts connections).
pub struct Proxy {
    pub addr: String,
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = watch => {} }
                });
            }
        });
        Proxy { addr, up, task }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
