//! Which proxy a request takes: the `proxy` key over `HTTPS_PROXY` / `HTTP_PROXY` /
//! `ALL_PROXY` (upper case first, then lower case), `no_proxy` over `NO_PROXY`, and proxy
//! credentials from `proxy_credentials_file` or the proxy URL of the environment.

use std::fmt;
use std::path::Path;

use http::Uri;
use http::uri::Scheme;
use percent_encoding::percent_decode_str;
use polykms_backend::SensitiveString;

use crate::{NetError, NetworkConfig, NoProxy};

const HTTPS_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
const HTTP_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// Where a proxy setting came from, for `polykms check` and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// The backend's `proxy` key.
    Config,
    /// An environment variable (its name).
    Env(&'static str),
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySource::Config => f.write_str("config proxy"),
            ProxySource::Env(name) => f.write_str(name),
        }
    }
}

/// Basic credentials for the proxy; the password never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    user: String,
    password: SensitiveString,
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyAuth([REDACTED])")
    }
}

impl ProxyAuth {
    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password; the name makes every use visible in review.
    pub fn expose_password(&self) -> &str {
        self.password.expose()
    }
}

/// One proxy: its address (scheme, host, port; no credentials), credentials and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    uri: Uri,
    auth: Option<ProxyAuth>,
    source: ProxySource,
}

impl ProxyRoute {
    /// `http://host:port/`, without credentials.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Credentials to send as `Proxy-Authorization: Basic`.
    pub fn auth(&self) -> Option<&ProxyAuth> {
        self.auth.as_ref()
    }

    /// Which setting chose this proxy.
    pub fn source(&self) -> ProxySource {
        self.source
    }
}

/// The resolved proxy rules of one backend: the resolver "which proxy for this URL".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    http: Option<ProxyRoute>,
    https: Option<ProxyRoute>,
    no_proxy: NoProxy,
}

impl Proxies {
    /// Applies the config keys over the variables that `env` returns.
    pub(crate) fn resolve(
        config: &NetworkConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, NetError> {
        let lookup = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|&n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        let (mut http, mut https) = match config.proxy.as_deref().map(str::trim) {
            Some("") => (None, None),
            Some(url) => {
                let route = parse_route(url, ProxySource::Config)?;
                if route.auth.is_some() {
                    return Err(NetError::new(
                        "proxy",
                        "credentials must not be inline; put user:password in \
                         proxy_credentials_file",
                    ));
                }
                (Some(route.clone()), Some(route))
            }
            None => {
                let from_env = |names: &[&'static str]| {
                    lookup(names)
                        .map(|(name, value)| parse_route(&value, ProxySource::Env(name)))
                        .transpose()
                };
                (from_env(&HTTP_VARS)?, from_env(&HTTPS_VARS)?)
            }
        };
        if let Some(path) = &config.proxy_credentials_file {
            let auth = read_credentials(path)?;
            for route in [&mut http, &mut https].into_iter().flatten() {
                route.auth = Some(auth.clone());
            }
        }
        let no_proxy = match &config.no_proxy {
            Some(list) => NoProxy::parse(list.iter().map(String::as_str)),
            None => lookup(&NO_PROXY_VARS)
                .map(|(_, v)| NoProxy::parse([v.as_str()]))
                .unwrap_or_default(),
        };
        Ok(Proxies {
            http,
            https,
            no_proxy,
        })
    }

    /// The proxy a request to `uri` goes through, or `None` to connect directly.
    pub fn route_for(&self, uri: &Uri) -> Option<&ProxyRoute> {
        let route = self.scheme_route(uri)?;
        (!self.bypasses(uri)).then_some(route)
    }

    /// Whether a proxy is set for `uri`'s scheme but `no_proxy` sends it direct.
    pub fn bypasses(&self, uri: &Uri) -> bool {
        let (Some(_), Some(host)) = (self.scheme_route(uri), uri.host()) else {
            return false;
        };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&Scheme::HTTPS) {
                443
            } else {
                80
            });
        self.no_proxy.matches(host, port)
    }

    /// Whether any request could go through a proxy.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The distinct proxies in use (at most two: one for http://, one for https://).
    pub fn routes(&self) -> Vec<&ProxyRoute> {
        let mut out: Vec<&ProxyRoute> = Vec::new();
        for route in [&self.http, &self.https].into_iter().flatten() {
            if !out
                .iter()
                .any(|r| r.uri == route.uri && r.auth == route.auth)
            {
                out.push(route);
            }
        }
        out
    }

    fn scheme_route(&self, uri: &Uri) -> Option<&ProxyRoute> {
        match uri.scheme_str() {
            Some("https") => self.https.as_ref(),
            Some("http") => self.http.as_ref(),
            _ => None,
        }
    }
}

/// Parses a proxy URL; a bare `host:port` means `http://host:port`. Messages name the source
/// and never echo the value, which may hold credentials.
fn parse_route(value: &str, source: ProxySource) -> Result<ProxyRoute, NetError> {
    let field = match source {
        ProxySource::Config => "proxy",
        ProxySource::Env(name) => name,
    };
    let bad = |reason: &str| NetError::new(field, reason);
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|_| bad("not a proxy URL (expected http://host:port)"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    if scheme != "http" && scheme != "https" {
        return Err(bad("only http:// and https:// proxies are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("the proxy URL has no host"))?;
    let (userinfo, host_port) = match authority.as_str().rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority.as_str()),
    };
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(bad("the proxy URL has no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a proxy URL has no path or query"));
    }
    let auth = userinfo.map(|info| {
        let (user, password) = info.split_once(':').unwrap_or((info, ""));
        ProxyAuth {
            user: percent_decode_str(user).decode_utf8_lossy().into_owned(),
            password: SensitiveString::new(percent_decode_str(password).decode_utf8_lossy()),
        }
    });
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(host_port)
        .path_and_query("/")
        .build()
        .map_err(|_| bad("not a proxy URL (expected http://host:port)"))?;
    let port = match host_port.rsplit_once(']') {
        Some((_, tail)) => tail.strip_prefix(':'),
        None => host_port.split_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad("not a proxy URL (expected http://host:port)"));
    }
    Ok(ProxyRoute { uri, auth, source })
}

/// Reads `user:password` (first line) from `proxy_credentials_file`; messages never show it.
fn read_credentials(path: &Path) -> Result<ProxyAuth, NetError> {
    let field = "proxy_credentials_file";
    let text = std::fs::read_to_string(path)
        .map(SensitiveString::new)
        .map_err(|e| NetError::new(field, format!("cannot read {}: {e}", path.display())))?;
    let line = text
        .expose()
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r');
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(ProxyAuth {
            user: user.to_owned(),
            password: SensitiveString::new(password),
        }),
        _ => Err(NetError::new(
            field,
            format!(
                "{} must hold user:password on its first line",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
