//! Property tests of the config loader against hostile files: random TOML and YAML documents,
//! mutated valid configs and raw bytes. The loader must answer `Ok` or `ConfigError`, never
//! panic. Case counts are sized for CI; `PROPTEST_CASES=N` runs N cases per property.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use super::*;

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(default_cases),
        // Shrinking a config document rarely helps more than the failing input itself.
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Valid documents of every compiled-in backend type: the seeds that mutations start from.
#[cfg_attr(
    not(any(
        feature = "aws",
        feature = "vault",
        feature = "gcp",
        feature = "azure",
        feature = "kmip"
    )),
    allow(unused_mut)
)]
fn seeds() -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("toml", LOCAL_TOML.to_string()),
        ("yaml", LOCAL_YAML.to_string()),
    ];
    #[cfg(feature = "aws")]
    out.push((
        "toml",
        with_backend(
            r#"type = "aws"
key = "arn:aws:kms:eu-west-1:111122223333:key/0f0e0d0c-0b0a-0908-0706-050403020100"
region = "eu-west-1"
encryption_context = { cluster = "prod" }
timeout_ms = 2000"#,
        ),
    ));
    #[cfg(feature = "vault")]
    out.push((
        "toml",
        with_backend(
            r#"type = "vault"
address = "https://vault.dc1:8200"
mount = "transit"
key = "kube-secrets"
auth = { method = "approle", role_id_file = "/r", secret_id_file = "/s" }"#,
        ),
    ));
    #[cfg(feature = "gcp")]
    out.push((
        "toml",
        with_backend(
            r#"type = "gcp"
key = "projects/p/locations/global/keyRings/r/cryptoKeys/k"
endpoint = "http://127.0.0.1:8281"
auth = { method = "anonymous" }"#,
        ),
    ));
    #[cfg(feature = "azure")]
    out.push((
        "toml",
        with_backend(
            r#"type = "azure"
vault_url = "https://kv.vault.azure.net"
key_name = "kek"
auth = { method = "token_file", token_file = "/t" }"#,
        ),
    ));
    #[cfg(feature = "kmip")]
    out.push((
        "toml",
        with_backend(
            r#"type = "kmip"
endpoint = "kmip.corp:5696"
ca_file = "/etc/polykms/kmip-ca.pem"
client_cert_file = "/etc/polykms/kmip-client.pem"
client_key_file = "/etc/polykms/kmip-client.key"
key_name = "kube-kek"
kmip_version = "1.4"
timeout_ms = 5000"#,
        ),
    ));
    out
}

const LOCAL_TOML: &str = r#"[server]
socket = "/tmp/polykms-fuzz.sock"
apis = ["v2", "v1beta1"]
status_version = "v2"
provider_name = "polykms"
default_timeout = "3s"
[http]
listen = "127.0.0.1:8095"
[log]
format = "json"
level = "info"
[health]
probe_interval = "30s"
unhealthy_probe_interval = "5s"
probe_timeout = "5s"
[decrypt]
cache_size = 100
cache_ttl = "5m"
[security]
lock_memory = false
disable_core_dumps = true
[[backends]]
name = "local"
type = "local"
key_files = ["keys/current.key", "/abs/older.key"]
generate_if_missing = false
[encrypt]
with = ["local"]
"#;

const LOCAL_YAML: &str = r#"server:
  socket: /tmp/polykms-fuzz.sock
  apis: [v2]
  status_version: v2beta1
http:
  listen: "127.0.0.1:8095"
health:
  probe_interval: 30s
backends:
  - name: local
    type: local
    key_files: [keys/current.key]
encrypt:
  with: [local]
"#;

#[cfg(any(
    feature = "aws",
    feature = "vault",
    feature = "gcp",
    feature = "azure",
    feature = "kmip"
))]
fn with_backend(body: &str) -> String {
    format!(
        "[server]\nsocket = \"/tmp/polykms-fuzz.sock\"\n[[backends]]\nname = \"remote\"\n{body}\n\
         [[backends]]\nname = \"local\"\ntype = \"local\"\nkey_files = [\"k\"]\n\
         [encrypt]\nwith = [\"remote\", \"local\"]\n"
    )
}

/// Writes `body` to a file with extension `ext` and loads it. Any `Ok` or `Err` is fine; a
/// panic fails the property.
fn load(dir: &Path, ext: &str, body: &[u8]) -> Result<Config, ConfigError> {
    let path = dir.join(format!("c.{ext}"));
    std::fs::write(&path, body).expect("the temp dir is writable");
    Config::load(&path)
}

/// Names the loader knows, mixed with names it does not, so documents reach deep into the
/// typed structs as well as the unknown-field checks.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "socket", "apis", "status_version", "provider_name", "default_timeout", "listen",
            "format", "level", "probe_interval", "unhealthy_probe_interval", "probe_timeout",
            "cache_size", "cache_ttl", "lock_memory", "disable_core_dumps", "name", "type",
            "key_files", "generate_if_missing", "with", "key", "region", "endpoint", "auth",
            "method", "address", "mount", "timeout_ms", "vault_url", "key_name", "token_file",
            "role_id_file", "secret_id_file", "credentials_file", "encryption_context",
            "key_uid", "client_cert_file", "client_key_file", "kmip_version", "username_file",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
    ]
}

fn table_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "[server]", "[http]", "[log]", "[health]", "[decrypt]", "[security]",
            "[[backends]]", "[encrypt]", "[backends]", "[[encrypt]]", "[server.x]",
        ])
        .prop_map(str::to_string),
        1 => "\\[[a-z.]{1,10}\\]",
    ]
}

/// Scalar TOML values, including the edge cases of the types the loader parses.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "\"v2\"",
            "\"v1beta1\"",
            "\"v2beta1\"",
            "\"local\"",
            "\"gcp\"",
            "\"aws\"",
            "\"vault\"",
            "\"azure\"",
            "\"kmip\"",
            "\"1.4\"",
            "\"\"",
            "\"0s\"",
            "\"1ms\"",
            "\"-1s\"",
            "\"18446744073709551615s\"",
            "\"99999999999h\"",
            "\"@abstract\"",
            "\"unix:///x.sock\"",
            "\"relative.sock\"",
            "\"/\"",
            "\"127.0.0.1:0\"",
            "\"[::1]:99999\"",
            "\"json\"",
            "\"auto\"",
            "\"anonymous\"",
            "\"approle\"",
            "true",
            "false",
            "0",
            "-1",
            "9223372036854775807",
            "18446744073709551616",
            "1e308",
            "nan",
            "inf",
            "1979-05-27T07:32:00Z",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| format!("{s:?}")),
        "[a-z0-9 ./:@_-]{0,40}".prop_map(|s| format!("{s:?}")),
    ]
}

/// A value: scalars, arrays and inline tables, nested (deep nesting included).
fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

/// A random TOML document: table headers and `key = value` lines.
fn toml_document() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        1 => table_name(),
        4 => (key(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

/// The same grammar as YAML (flow style for nested values, which YAML accepts).
fn yaml_document() -> impl Strategy<Value = String> {
    let entry = (key(), value(), any::<bool>()).prop_map(|(k, v, nested)| {
        let v = v.replace(" = ", ": ");
        if nested {
            format!("{k}:\n  - {v}")
        } else {
            format!("{k}: {v}")
        }
    });
    prop::collection::vec(entry, 0..16).prop_map(|lines| lines.join("\n"))
}

/// One edit of a document.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceValue(usize, String),
    InsertLine(usize, String),
    FlipByte(usize, u8),
    Truncate(usize),
    InsertBytes(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let idx = any::<usize>();
    prop_oneof![
        idx.prop_map(Mutation::DeleteLine),
        idx.prop_map(Mutation::DuplicateLine),
        (idx, idx).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (idx, value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        (idx, (key(), value()))
            .prop_map(|(i, (k, v))| Mutation::InsertLine(i, format!("{k} = {v}"))),
        (idx, table_name()).prop_map(|(i, t)| Mutation::InsertLine(i, t)),
        (idx, any::<u8>()).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        idx.prop_map(Mutation::Truncate),
        (idx, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::InsertBytes(i, b)),
    ]
}

fn apply(doc: &str, m: &Mutation) -> Vec<u8> {
    let mut lines: Vec<String> = doc.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
        Mutation::ReplaceValue(i, v) if !lines.is_empty() => {
            let l = &mut lines[i % n];
            if let Some(eq) = l.find(['=', ':']) {
                let sep = &l[eq..=eq];
                *l = format!("{} {sep} {v}", &l[..eq]);
            }
        }
        Mutation::InsertLine(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
        Mutation::FlipByte(..) | Mutation::Truncate(_) | Mutation::InsertBytes(..) => {
            return apply_bytes(doc.as_bytes().to_vec(), m);
        }
        _ => {}
    }
    lines.join("\n").into_bytes()
}

fn apply_bytes(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let n = bytes.len().max(1);
    match m {
        Mutation::FlipByte(i, b) if !bytes.is_empty() => bytes[i % n] ^= b | 1,
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::InsertBytes(i, b) => {
            let at = i % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        _ => {}
    }
    bytes
}

#[test]
fn every_seed_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    for (ext, doc) in seeds() {
        if let Err(e) = load(dir.path(), ext, doc.as_bytes()) {
            panic!("seed does not load ({e}):\n{doc}");
        }
    }
}

#[test]
fn random_toml_documents_are_ok_or_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    runner(3000)
        .run(&toml_document(), |doc| {
            let _ = load(dir.path(), "toml", doc.as_bytes());
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_yaml_documents_are_ok_or_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    runner(2000)
        .run(&yaml_document(), |doc| {
            let _ = load(dir.path(), "yaml", doc.as_bytes());
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_valid_configs_are_ok_or_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds();
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..4));
    runner(20_000)
        .run(&strategy, |(seed, mutations)| {
            let (ext, doc) = &seeds[seed];
            let mut body = doc.clone().into_bytes();
            for m in &mutations {
                body = apply(&String::from_utf8_lossy(&body), m);
            }
            let _ = load(dir.path(), ext, &body);
            Ok(())
        })
        .unwrap();
}

#[test]
fn raw_bytes_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = (
        prop::sample::select(vec!["toml", "yaml"]),
        prop::collection::vec(any::<u8>(), 0..512),
    );
    runner(10_000)
        .run(&strategy, |(ext, bytes)| {
            // Random bytes can form a valid document only by naming backends and encrypt.with.
            if let Ok(c) = load(dir.path(), ext, &bytes) {
                prop_assert!(!c.backends.is_empty() && !c.encrypt.with.is_empty());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn deeply_nested_documents_are_config_errors_not_stack_overflows() {
    let dir = tempfile::tempdir().unwrap();
    for depth in [64, 512, 4096, 20_000] {
        let toml = format!("x = {}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(load(dir.path(), "toml", toml.as_bytes()).is_err());
        let inline = format!("x = {}{}", "{ a = ".repeat(depth), "}".repeat(depth));
        assert!(load(dir.path(), "toml", inline.as_bytes()).is_err());
        let yaml = format!("x: {}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(load(dir.path(), "yaml", yaml.as_bytes()).is_err());
    }
}
