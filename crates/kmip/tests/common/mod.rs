//! Shared set-up for the PyKMIP tests: env from `integration/servers/kmip.sh`, backends, and
//! the operator's side through PyKMIP's own client (`integration/lib/kmip_admin.py`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use polykms_kmip::{KmipBackend, KmipConfig};
use rand::RngCore;

/// Paths and address written by `integration/servers/kmip.sh start`.
#[derive(Clone)]
pub struct Env {
    pub endpoint: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub other_cert: PathBuf,
    pub other_key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
    pub python: PathBuf,
    pub admin: PathBuf,
    pub script: PathBuf,
}

/// The env, or `None` (test skipped) when the server script has not been sourced, unless
/// `POLYKMS_REQUIRE_INTEGRATION=1`, in which case a missing env fails the test.
pub fn env(test: &str) -> Option<Env> {
    let Ok(endpoint) = std::env::var("POLYKMS_KMIP_ENDPOINT") else {
        if std::env::var("POLYKMS_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
            panic!(
                "POLYKMS_KMIP_ENDPOINT is not set but POLYKMS_REQUIRE_INTEGRATION=1 (run integration/servers/kmip.sh start and source integration/.run/kmip.env)"
            );
        }
        eprintln!(
            "skipped {test}: POLYKMS_KMIP_ENDPOINT not set (integration/servers/kmip.sh start)"
        );
        return None;
    };
    let path =
        |var: &str| PathBuf::from(std::env::var(var).unwrap_or_else(|_| panic!("{var} not set")));
    Some(Env {
        endpoint,
        ca: path("POLYKMS_KMIP_CA_FILE"),
        cert: path("POLYKMS_KMIP_CLIENT_CERT_FILE"),
        key: path("POLYKMS_KMIP_CLIENT_KEY_FILE"),
        other_cert: path("POLYKMS_KMIP_OTHER_CERT_FILE"),
        other_key: path("POLYKMS_KMIP_OTHER_KEY_FILE"),
        rogue_cert: path("POLYKMS_KMIP_ROGUE_CERT_FILE"),
        rogue_key: path("POLYKMS_KMIP_ROGUE_KEY_FILE"),
        python: path("POLYKMS_KMIP_PYTHON"),
        admin: path("POLYKMS_KMIP_ADMIN"),
        script: path("POLYKMS_KMIP_SCRIPT"),
    })
}

/// A name no other test uses (tests run in parallel against one server).
pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 5];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}-{}", hex::encode(b))
}

impl Env {
    /// The backend's config for the key named `name`, with polykms' client certificate.
    pub fn config(&self, name: &str) -> KmipConfig {
        KmipConfig {
            endpoint: self.endpoint.clone(),
            ca_file: Some(self.ca.clone()),
            also_trust_system_roots: false,
            client_cert_file: Some(self.cert.clone()),
            client_key_file: Some(self.key.clone()),
            tls_server_name: None,
            key_name: Some(name.into()),
            key_uid: None,
            username_file: None,
            password_file: None,
            kmip_version: "1.4".into(),
            timeout_ms: 3000,
        }
    }

    pub async fn backend(&self, config: &KmipConfig) -> KmipBackend {
        KmipBackend::connect(config).await.expect("backend builds")
    }

    /// Runs a `kmip_admin.py` command against `endpoint` (the shared server when `None`).
    pub fn admin_at(&self, endpoint: Option<&str>, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.admin);
        if let Some(e) = endpoint {
            cmd.args(["--endpoint", e]);
        }
        let out = cmd.args(args).output().expect("running kmip_admin.py");
        assert!(
            out.status.success(),
            "kmip_admin.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn admin(&self, args: &[&str]) -> String {
        self.admin_at(None, args)
    }

    /// Creates and activates an AES-256 key named `name`; returns its Unique Identifier.
    pub fn create_key(&self, name: &str) -> String {
        self.admin(&["create", name])
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PyKMIP server of this test's own (same certificates, its own port and database).
pub struct Instance {
    child: std::process::Child,
    pub endpoint: String,
}

impl Instance {
    /// Starts it presenting `integration/.run/kmip/{cert}.pem` (`server`, `server-rsa`).
    pub fn start(e: &Env, port: u16, dir: &std::path::Path, cert: &str) -> Instance {
        use std::os::unix::process::CommandExt;
        // Its own process group: PyKMIP forks two multiprocessing children, stopped with it.
        let child = std::process::Command::new("bash")
            .arg(&e.script)
            .args(["instance", &port.to_string()])
            .arg(dir)
            .arg(cert)
            .process_group(0)
            .stdout(std::fs::File::create(dir.join("out.log")).unwrap())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let endpoint = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&endpoint).is_err() {
            assert!(
                Instant::now() < deadline,
                "instance on {endpoint} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Instance { child, endpoint }
    }

    /// Kills the server's process group (what a crash looks like; SQLite keeps the keys).
    pub fn stop(mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}
