//! The polykms configuration files the bench writes: the local backend (the plugin under
//! load) and an encrypt backend that cannot be reached (Status while unhealthy).

use std::net::SocketAddr;
use std::path::Path;

/// polykms on the local key-file backend with default settings, logging at `log_level`;
/// `cache_size` sets `[decrypt] cache_size` (None: the default, a 1024-seed cache; 0: off).
pub fn local(
    socket: &Path,
    http: SocketAddr,
    key_file: &Path,
    log_level: &str,
    cache_size: Option<usize>,
) -> String {
    let cache = match cache_size {
        Some(n) => format!("[decrypt]\ncache_size = {n}\n"),
        None => String::new(),
    };
    format!(
        r#"{head}{cache}[[backends]]
name = "local"
type = "local"
key_files = [{key}]
[encrypt]
with = ["local"]
"#,
        head = head(socket, http, log_level),
        key = toml_string(key_file),
    )
}

/// polykms whose only encrypt backend is a Vault at a closed local port: it starts, its
/// prober fails, and Status reports unhealthy from memory.
pub fn unreachable_vault(socket: &Path, http: SocketAddr, port: u16, token_file: &Path) -> String {
    format!(
        r#"{head}[health]
unhealthy_probe_interval = "200ms"
probe_timeout = "500ms"
[[backends]]
name = "vault-down"
type = "vault"
address = "http://127.0.0.1:{port}"
key = "bench"
timeout_ms = 500
auth = {{ method = "token", token_file = {token} }}
[encrypt]
with = ["vault-down"]
"#,
        head = head(socket, http, "info"),
        token = toml_string(token_file),
    )
}

/// `[server]`, `[http]` and `[log]` (JSON at `log_level`) of every config the bench writes.
fn head(socket: &Path, http: SocketAddr, log_level: &str) -> String {
    format!(
        r#"[server]
socket = {socket}
[http]
listen = "{http}"
[log]
format = "json"
level = "{log_level}"
"#,
        socket = toml_string(socket),
    )
}

/// A path as a TOML basic string.
fn toml_string(path: &Path) -> String {
    let mut out = String::from("\"");
    for c in path.to_string_lossy().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_toml() {
        assert_eq!(toml_string(Path::new("/tmp/a\"b\\c")), r#""/tmp/a\"b\\c""#);
    }

    #[test]
    fn local_config_sets_the_cache_size_only_when_asked() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("literal address");
        let plain = local(Path::new("/s"), addr, Path::new("/k"), "info", None);
        assert!(!plain.contains("[decrypt]"));
        assert!(plain.contains("key_files = [\"/k\"]"));
        let off = local(Path::new("/s"), addr, Path::new("/k"), "warn", Some(0));
        assert!(off.contains("[decrypt]\ncache_size = 0\n"));
        assert!(off.contains("level = \"warn\""));
    }
}
