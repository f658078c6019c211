use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::paths::{self, Grant, Need};
use super::*;

fn load(dir: &Path, text: &str) -> (Config, PathBuf) {
    let path = dir.join("polykms.toml");
    std::fs::write(&path, text).unwrap();
    (Config::load(&path).unwrap(), path)
}

fn local_config(socket: &Path, key: &Path) -> String {
    format!(
        "[server]\nsocket = {socket:?}\n[http]\nlisten = \"\"\n[[backends]]\nname = \"local\"\n\
         type = \"local\"\nkey_files = [{key:?}]\n[encrypt]\nwith = [\"local\"]\n"
    )
}

fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn grant_of(needs: &[Need], path: &Path) -> Option<Grant> {
    needs.iter().find(|n| n.path == path).map(|n| n.grant)
}

#[test]
fn a_named_file_is_allowed_through_its_directory_unless_that_is_top_level() {
    assert_eq!(
        paths::scope_of(Path::new("/etc/polykms/keys/current.key")),
        Path::new("/etc/polykms/keys")
    );
    assert_eq!(
        paths::scope_of(Path::new("/etc/polykms/config.toml")),
        Path::new("/etc/polykms")
    );
    assert_eq!(
        paths::scope_of(Path::new("/etc/k.key")),
        Path::new("/etc/k.key")
    );
    assert_eq!(paths::scope_of(Path::new("/k.key")), Path::new("/k.key"));
}

#[test]
fn the_start_set_names_config_key_socket_and_system_paths_and_nothing_else() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let key = keys.path().join("k.key");
    let (config, path) = load(
        cfg_dir.path(),
        &local_config(&run.path().join("kms.sock"), &key),
    );
    let needs = paths::for_start(&config, &path, &env_of(&[]));
    assert_eq!(grant_of(&needs, cfg_dir.path()), Some(Grant::READ));
    assert_eq!(grant_of(&needs, keys.path()), Some(Grant::READ));
    assert_eq!(grant_of(&needs, run.path()), Some(Grant::SOCKET));
    assert_eq!(
        grant_of(&needs, Path::new("/usr/lib")),
        Some(Grant::READ_EXEC)
    );
    assert_eq!(grant_of(&needs, Path::new("/etc/ssl")), Some(Grant::READ));
    assert_eq!(
        grant_of(&needs, Path::new("/etc/resolv.conf")),
        Some(Grant::READ)
    );
    // Nothing writable but the socket directory and /dev/null.
    let writable: Vec<_> = needs
        .iter()
        .filter(|n| n.grant.write)
        .map(|n| &n.path)
        .collect();
    assert_eq!(writable, vec![Path::new("/dev/null")]);
    // A local-only config does not open the cloud SDKs' files, even when their variables are set.
    let token = keys.path().join("web-identity-token");
    let needs = paths::for_start(
        &config,
        &path,
        &env_of(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token),
            ("HOME", Path::new("/root")),
        ]),
    );
    assert!(!needs.iter().any(|n| n.why.contains("AWS")), "{needs:#?}");
    assert!(
        !needs.iter().any(|n| n.path.ends_with(".aws")),
        "{needs:#?}"
    );
}

#[test]
fn sandbox_read_paths_and_a_named_socket_group_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let text = local_config(&dir.path().join("kms.sock"), &dir.path().join("k.key")).replace(
        "[server]\n",
        "[server]\nsandbox_read_paths = [\"/opt/hsm\"]\nsocket_mode = \"0660\"\nsocket_group = \"root\"\n",
    );
    let (config, path) = load(dir.path(), &text);
    let needs = paths::for_start(&config, &path, &env_of(&[]));
    let hsm = needs
        .iter()
        .find(|n| n.path == Path::new("/opt/hsm"))
        .unwrap();
    assert_eq!((hsm.grant, hsm.optional), (Grant::READ_EXEC, false));
    assert_eq!(grant_of(&needs, Path::new("/etc/group")), Some(Grant::READ));
}

#[test]
fn relative_sandbox_read_paths_are_a_config_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("polykms.toml");
    let text = local_config(&dir.path().join("kms.sock"), &dir.path().join("k.key")).replace(
        "[server]\n",
        "[server]\nsandbox_read_paths = [\"opt/hsm\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    let err = Config::load(&path).unwrap_err().0;
    assert!(err.contains("server.sandbox_read_paths"), "{err}");
}

#[cfg(feature = "aws")]
#[test]
fn an_aws_backend_opens_the_files_the_aws_sdk_reads_by_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tempfile::tempdir().unwrap();
    let token = tokens.path().join("token");
    let text = "[http]\nlisten = \"\"\n[[backends]]\nname = \"aws\"\ntype = \"aws\"\n\
                key = \"alias/k\"\nregion = \"eu-west-1\"\n[encrypt]\nwith = [\"aws\"]\n";
    let (config, _) = load(dir.path(), text);
    let home = Path::new("/home/polykms");
    let needs = paths::for_backends(
        &config,
        &env_of(&[("AWS_WEB_IDENTITY_TOKEN_FILE", &token), ("HOME", home)]),
    );
    assert_eq!(grant_of(&needs, tokens.path()), Some(Grant::READ));
    let aws_dir = needs.iter().find(|n| n.path == home.join(".aws")).unwrap();
    assert!(aws_dir.optional, "~/.aws is read only when it exists");
}

#[cfg(feature = "pkcs11")]
#[test]
fn the_softhsm_token_directory_is_read_from_its_config() {
    let conf = "# comment\ndirectories.tokendir = /var/lib/softhsm/tokens/ \nlog.level = INFO\n";
    assert_eq!(
        paths::softhsm_token_dir(conf),
        Some(PathBuf::from("/var/lib/softhsm/tokens/"))
    );
    assert_eq!(
        paths::softhsm_token_dir("# directories.tokendir = /x\n"),
        None
    );
}

#[cfg(feature = "pkcs11")]
#[test]
fn a_softhsm_backend_may_write_its_token_directory_and_load_its_module() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("hsm/softhsm2.conf");
    std::fs::create_dir(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\n", tokens.display()),
    )
    .unwrap();
    let text = "[http]\nlisten = \"\"\n[[backends]]\nname = \"hsm\"\ntype = \"pkcs11\"\n\
                module = \"/opt/vendor/lib/libsofthsm2.so\"\ntoken_label = \"t\"\n\
                pin_file = \"pin\"\nkey_label = \"k\"\n[encrypt]\nwith = [\"hsm\"]\n";
    let (config, _) = load(dir.path(), text);
    let needs = paths::for_backends(&config, &env_of(&[("SOFTHSM2_CONF", &conf)]));
    assert_eq!(grant_of(&needs, &tokens), Some(Grant::READ_WRITE));
    assert_eq!(grant_of(&needs, conf.parent().unwrap()), Some(Grant::READ));
    assert_eq!(
        grant_of(&needs, Path::new("/opt/vendor/lib")),
        Some(Grant::READ_EXEC)
    );
    assert_eq!(grant_of(&needs, dir.path()), Some(Grant::READ), "pin_file");
}

#[test]
fn a_reload_is_covered_in_the_same_directory_and_not_in_a_new_one() {
    let keys = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let rules = vec![Rule {
        path: std::fs::canonicalize(keys.path()).unwrap(),
        grant: Grant::READ,
        file_id: None,
    }];
    let need = |path: PathBuf, optional| Need {
        path,
        grant: Grant::READ,
        why: "a key file".into(),
        optional,
    };
    let next = [
        need(keys.path().to_path_buf(), false),
        need(elsewhere.path().to_path_buf(), false),
        need(elsewhere.path().join("absent"), true),
    ];
    let outside = uncovered(&rules, &next);
    assert_eq!(outside, vec![&next[1]]);
    // Reading is not writing.
    let write = Need {
        grant: Grant::READ_WRITE,
        ..need(keys.path().to_path_buf(), false)
    };
    assert_eq!(uncovered(&rules, std::slice::from_ref(&write)).len(), 1);
}

#[test]
fn a_file_rule_does_not_cover_a_file_replaced_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    std::fs::write(&key, "a").unwrap();
    let rules = vec![Rule {
        path: std::fs::canonicalize(&key).unwrap(),
        grant: Grant::READ,
        file_id: file_id(&key),
    }];
    let need = [Need {
        path: key.clone(),
        grant: Grant::READ,
        why: "a key file".into(),
        optional: false,
    }];
    std::fs::write(&key, "b").unwrap();
    assert!(
        uncovered(&rules, &need).is_empty(),
        "written in place: same inode"
    );
    std::fs::write(dir.path().join("new"), "c").unwrap();
    std::fs::rename(dir.path().join("new"), &key).unwrap();
    assert_eq!(uncovered(&rules, &need).len(), 1);
}

/// Landlock confines the thread that asks (and its children): run in a thread of its own, the
/// test confines only that thread. Skips where the kernel has no Landlock.
#[test]
fn enforced_the_sandbox_denies_what_the_config_does_not_name() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let key = keys.path().join("k.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    let socket = run.path().join("sub/kms.sock");
    let (config, path) = load(cfg_dir.path(), &local_config(&socket, &key));
    let other = outside.path().join("secret");
    let socket_in_thread = socket.clone();
    let result = std::thread::spawn(move || {
        let socket = socket_in_thread;
        let report = confine(&config, &path).unwrap();
        if !matches!(report.outcome, Outcome::Enforced { .. }) {
            return None;
        }
        let read_key = std::fs::read(&key).map(|_| ());
        let read_config = std::fs::read(&path).map(|_| ());
        let read_other = std::fs::read(&other).map(|_| ());
        let write_key_dir = std::fs::write(key.with_extension("new"), "x");
        let bind = std::os::unix::net::UnixListener::bind(&socket).map(|_| ());
        let file_in_socket_dir = std::fs::write(socket.with_extension("txt"), "x");
        let remove_socket = std::fs::remove_file(&socket);
        Some([
            read_key,
            read_config,
            read_other,
            write_key_dir,
            bind,
            file_in_socket_dir,
            remove_socket,
        ])
    })
    .join()
    .unwrap();
    let Some(
        [
            read_key,
            read_config,
            read_other,
            write_key_dir,
            bind,
            file_in_socket_dir,
            remove,
        ],
    ) = result
    else {
        eprintln!("skipped: this kernel has no Landlock");
        return;
    };
    assert!(
        read_key.is_ok() && read_config.is_ok(),
        "{read_key:?} {read_config:?}"
    );
    assert!(bind.is_ok() && remove.is_ok(), "{bind:?} {remove:?}");
    assert!(
        run.path().join("sub").is_dir(),
        "the socket directory is made first"
    );
    for denied in [read_other, write_key_dir, file_in_socket_dir] {
        assert_eq!(
            denied.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
    }
    // The rules are kept for reloads: a key in a directory not named at start is refused.
    let (moved, _) = load(
        cfg_dir.path(),
        &local_config(&socket, &outside.path().join("k2.key")),
    );
    let err = check_reload(&moved).unwrap_err().to_string();
    assert!(err.contains("sandbox") && err.contains("restart"), "{err}");
    let (same_dir, _) = load(
        cfg_dir.path(),
        &local_config(&socket, &keys.path().join("k2.key")),
    );
    check_reload(&same_dir).unwrap();
}
