//! Which outbound HTTP proxy reaches an upstream. A backend's `proxy` setting wins (`""` =
//! none); without one, the environment is read the way curl reads it: `https_proxy`/
//! `HTTPS_PROXY` for https upstreams, `http_proxy`/`HTTP_PROXY` for plain ones,
//! `all_proxy`/`ALL_PROXY` for either, and `no_proxy`/`NO_PROXY` for the hosts reached
//! directly (names, `.domain` suffixes, IP addresses, CIDR ranges, `*`). Unlike curl, and
//! like Go, an environment proxy never applies to a loopback host (`localhost`,
//! 127.0.0.0/8, ::1): a sidecar Ollama or the demo fleet keeps working in a shell that sets
//! `http_proxy`. Only `http://` proxies. Credentials in the proxy URL become the
//! `Proxy-Authorization: Basic` value and never reach messages.
//!
//! This is configuration (checked by `Config::validate`); reaching an upstream through the
//! proxy is `upstream::proxy`.

use std::net::IpAddr;

use base64::Engine as _;

/// curl's default when the proxy URL names no port.
const DEFAULT_PORT: u16 = 1080;

/// One proxy, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Basic …` from the URL's user info.
    pub authorization: Option<String>,
    /// `http://host:port`, without credentials: what messages show.
    pub shown: String,
}

/// The proxy for an upstream on `host`: `configured` (a backend's `proxy`) when set, else
/// the environment's. An unusable proxy URL is an error, so that it is not silently bypassed.
pub fn choose(https: bool, host: &str, configured: Option<&str>) -> Result<Option<Proxy>, String> {
    match configured.map(str::trim) {
        Some("") => Ok(None),
        Some(url) => parse(url).map(Some),
        None => from_vars(https, host, |name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }),
    }
}

/// [`choose`] for the upstream `url` (`http[s]://host…`).
pub fn for_url(url: &str, configured: Option<&str>) -> Result<Option<Proxy>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    choose(uri.scheme_str() == Some("https"), host, configured)
}

fn from_vars(
    https: bool,
    host: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, String> {
    let names: [&str; 4] = if https {
        ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let Some((name, url)) = names.iter().find_map(|n| var(n).map(|v| (*n, v))) else {
        return Ok(None);
    };
    let no_proxy = var("no_proxy")
        .or_else(|| var("NO_PROXY"))
        .unwrap_or_default();
    if loopback(host) || bypassed(&no_proxy, host) {
        return Ok(None);
    }
    parse(url.trim())
        .map(Some)
        .map_err(|e| format!("proxy from {name}: {e}"))
}

/// `[http://][user[:password]@]host[:port][/]`.
fn parse(url: &str) -> Result<Proxy, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "only http:// proxies are supported, not {scheme}://"
            ));
        }
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        return Err("the proxy URL names no host".into());
    }
    let authorization = userinfo.map(|u| {
        let decoded = percent_encoding::percent_decode_str(u).collect::<Vec<u8>>();
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(decoded)
        )
    });
    Ok(Proxy {
        shown: format!("http://{}", host_port(host, port)),
        host: host.to_string(),
        port,
        authorization,
    })
}

/// `host:port`, an IPv6 host in brackets: a `CONNECT` target, or a URL's authority.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let bad_port = |p: &str| format!("bad proxy port `{p}`");
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed `[` in the proxy host")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, p.parse().map_err(|_| bad_port(p))?)),
            None if after.is_empty() => Ok((host, DEFAULT_PORT)),
            None => Err(format!("bad proxy host `{s}`")),
        };
    }
    match s.rsplit_once(':') {
        Some((host, p)) => Ok((host, p.parse().map_err(|_| bad_port(p))?)),
        None => Ok((s, DEFAULT_PORT)),
    }
}

fn loopback(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Does `no_proxy` (comma-separated) exempt `host`?
fn bypassed(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/')) {
                return in_cidr(ip, net, bits);
            }
            let name = entry.trim_start_matches('.');
            let name = name.trim_start_matches('[').trim_end_matches(']');
            host == name || host.ends_with(&format!(".{name}"))
        })
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn picks_the_variable_of_the_scheme_lowercase_first() {
        let vars = env(&[
            ("https_proxy", "http://low:3128"),
            ("HTTPS_PROXY", "http://up:3128"),
            ("HTTP_PROXY", "plain:8080"),
        ]);
        let https = from_vars(true, "ollama.com", &vars).unwrap().unwrap();
        assert_eq!((https.host.as_str(), https.port), ("low", 3128));
        let http = from_vars(false, "gpu1", &vars).unwrap().unwrap();
        assert_eq!(http.shown, "http://plain:8080");
        assert_eq!(from_vars(true, "x", env(&[])).unwrap(), None);
        let all = from_vars(false, "gpu1", env(&[("ALL_PROXY", "http://any")])).unwrap();
        assert_eq!(all.unwrap().port, DEFAULT_PORT);
    }

    #[test]
    fn credentials_become_basic_auth_and_stay_out_of_messages() {
        let p = parse("http://bob:p%40ss@proxy.corp:3128/").unwrap();
        assert_eq!(p.authorization.as_deref(), Some("Basic Ym9iOnBAc3M="));
        assert_eq!(p.shown, "http://proxy.corp:3128");
        let v6 = parse("http://[fd00::1]:3128").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.shown.as_str()),
            ("fd00::1", "http://[fd00::1]:3128")
        );
        let bad = from_vars(
            true,
            "x",
            env(&[("HTTPS_PROXY", "socks5://u:secret@p:1080")]),
        );
        let e = bad.unwrap_err();
        assert!(e.contains("only http://") && !e.contains("secret"), "{e}");
        assert!(parse("http://proxy:port").is_err());
    }

    #[test]
    fn no_proxy_names_suffixes_ips_ranges_and_star() {
        let rules = "localhost, .internal,10.0.0.0/8 ,fd00::/8,[::1], Example.COM";
        for host in [
            "localhost",
            "gpu.internal",
            "internal",
            "10.1.2.3",
            "fd00::5",
            "::1",
            "api.example.com",
        ] {
            assert!(bypassed(rules, host), "{host}");
        }
        for host in [
            "ollama.com",
            "notinternal",
            "11.0.0.1",
            "fe80::1",
            "127.0.0.1",
        ] {
            assert!(!bypassed(rules, host), "{host}");
        }
        assert!(bypassed("*", "anything"));
        let vars = env(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", ".internal")]);
        assert_eq!(from_vars(true, "gpu.internal", &vars).unwrap(), None);
        assert!(from_vars(true, "ollama.com", &vars).unwrap().is_some());
    }

    #[test]
    fn loopback_never_takes_the_environment_proxy_but_a_configured_one_wins() {
        let vars = env(&[("http_proxy", "http://p:3128")]);
        for host in [
            "localhost",
            "gpu.localhost",
            "127.0.0.1",
            "127.3.2.1",
            "::1",
        ] {
            assert_eq!(from_vars(false, host, &vars).unwrap(), None, "{host}");
        }
        assert!(from_vars(false, "10.0.0.7", &vars).unwrap().is_some());
        let set = choose(false, "localhost", Some("http://q:8080"))
            .unwrap()
            .unwrap();
        assert_eq!(set.shown, "http://q:8080");
        assert_eq!(choose(true, "ollama.com", Some("")).unwrap(), None);
        assert!(choose(true, "ollama.com", Some("https://q")).is_err());
    }
}
