use std::collections::HashMap;

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

fn resolve(config: &NetworkConfig, vars: &[(&str, &str)]) -> Proxies {
    Proxies::resolve(config, &env(vars)).unwrap()
}

fn via(p: &Proxies, url: &str) -> Option<String> {
    p.route_for(&url.parse().unwrap())
        .map(|r| format!("{} {}", r.uri(), r.source()))
}

#[test]
fn environment_picks_the_proxy_by_scheme_upper_case_first() {
    let p = resolve(
        &NetworkConfig::default(),
        &[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("http_proxy", "plain:8080"),
        ],
    );
    assert_eq!(
        via(&p, "https://kms.example").as_deref(),
        Some("http://upper:3128/ HTTPS_PROXY")
    );
    assert_eq!(
        via(&p, "http://vault:8200").as_deref(),
        Some("http://plain:8080/ http_proxy")
    );
    let lower = resolve(
        &NetworkConfig::default(),
        &[("https_proxy", "http://lower:3128")],
    );
    assert_eq!(
        via(&lower, "https://kms.example").as_deref(),
        Some("http://lower:3128/ https_proxy")
    );
    assert_eq!(via(&lower, "http://kms.example"), None);
}

#[test]
fn all_proxy_is_the_fallback_for_both_schemes() {
    let p = resolve(
        &NetworkConfig::default(),
        &[("ALL_PROXY", "http://all:1"), ("HTTP_PROXY", "http://h:2")],
    );
    assert_eq!(
        via(&p, "https://x").as_deref(),
        Some("http://all:1/ ALL_PROXY")
    );
    assert_eq!(
        via(&p, "http://x").as_deref(),
        Some("http://h:2/ HTTP_PROXY")
    );
}

#[test]
fn config_proxy_overrides_the_environment_for_both_schemes() {
    let config = NetworkConfig {
        proxy: Some("http://cfg:3128".into()),
        ..Default::default()
    };
    let p = resolve(&config, &[("HTTPS_PROXY", "http://env:1")]);
    assert_eq!(
        via(&p, "https://x").as_deref(),
        Some("http://cfg:3128/ config proxy")
    );
    assert_eq!(
        via(&p, "http://x").as_deref(),
        Some("http://cfg:3128/ config proxy")
    );
}

#[test]
fn empty_config_proxy_disables_the_environment() {
    let config = NetworkConfig {
        proxy: Some(String::new()),
        ..Default::default()
    };
    let p = resolve(
        &config,
        &[
            ("HTTPS_PROXY", "http://env:1"),
            ("HTTP_PROXY", "http://env:1"),
        ],
    );
    assert!(p.is_empty());
    assert_eq!(via(&p, "https://x"), None);
}

#[test]
fn no_proxy_from_config_replaces_the_environment_list() {
    let vars = [
        ("HTTPS_PROXY", "http://env:1"),
        ("NO_PROXY", "kms.internal"),
    ];
    let p = resolve(&NetworkConfig::default(), &vars);
    assert_eq!(via(&p, "https://kms.internal"), None);
    assert!(p.bypasses(&"https://kms.internal".parse().unwrap()));
    assert!(via(&p, "https://other").is_some());
    let config = NetworkConfig {
        no_proxy: Some(vec!["other".into()]),
        ..Default::default()
    };
    let p = resolve(&config, &vars);
    assert!(via(&p, "https://kms.internal").is_some());
    assert_eq!(via(&p, "https://other"), None);
}

#[test]
fn env_credentials_are_split_off_the_url_and_never_printed() {
    let p = resolve(
        &NetworkConfig::default(),
        &[("HTTPS_PROXY", "http://al%40ice:pa%3Ass@proxy:3128")],
    );
    let route = p.route_for(&"https://x".parse().unwrap()).unwrap();
    assert_eq!(route.uri().to_string(), "http://proxy:3128/");
    let auth = route.auth().unwrap();
    assert_eq!((auth.user(), auth.expose_password()), ("al@ice", "pa:ss"));
    assert!(!format!("{p:?}").contains("pa:ss"));
}

#[test]
fn credentials_file_applies_to_every_route_and_inline_config_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth");
    std::fs::write(&file, "svc-polykms:s3cret\n").unwrap();
    let config = NetworkConfig {
        proxy: Some("http://cfg:3128".into()),
        proxy_credentials_file: Some(file.clone()),
        ..Default::default()
    };
    let p = resolve(&config, &[]);
    for url in ["https://x", "http://x"] {
        let auth = p.route_for(&url.parse().unwrap()).unwrap().auth().unwrap();
        assert_eq!(
            (auth.user(), auth.expose_password()),
            ("svc-polykms", "s3cret")
        );
    }

    let inline = NetworkConfig {
        proxy: Some("http://u:s3cret@cfg:3128".into()),
        ..Default::default()
    };
    let err = Proxies::resolve(&inline, &env(&[])).unwrap_err();
    assert_eq!(err.field, "proxy");
    assert!(!err.to_string().contains("s3cret"), "{err}");

    std::fs::write(&file, "no-colon-here\n").unwrap();
    let err = Proxies::resolve(&config, &env(&[])).unwrap_err();
    assert_eq!(err.field, "proxy_credentials_file");
    assert!(!err.to_string().contains("no-colon-here"), "{err}");
}

#[test]
fn bad_proxy_urls_are_errors_naming_the_setting_without_the_value() {
    for (config, vars, field) in [
        (Some("socks5://p:1080"), vec![], "proxy"),
        (Some("http://:3128"), vec![], "proxy"),
        (Some("http://p:3128/path"), vec![], "proxy"),
        (
            None,
            vec![("HTTPS_PROXY", "ftp://u:hunter2@p")],
            "HTTPS_PROXY",
        ),
        (
            None,
            vec![("http_proxy", "http://u:hunter2@p:x")],
            "http_proxy",
        ),
    ] {
        let c = NetworkConfig {
            proxy: config.map(str::to_owned),
            ..Default::default()
        };
        let err = Proxies::resolve(&c, &env(&vars)).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
fn routes_lists_each_distinct_proxy_once() {
    let same = resolve(
        &NetworkConfig::default(),
        &[("HTTPS_PROXY", "http://p:1"), ("HTTP_PROXY", "http://p:1")],
    );
    assert_eq!(same.routes().len(), 1);
    let two = resolve(
        &NetworkConfig::default(),
        &[("HTTPS_PROXY", "http://p:1"), ("HTTP_PROXY", "http://q:1")],
    );
    assert_eq!(two.routes().len(), 2);
}
