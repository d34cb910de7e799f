//! How a zone reaches global's KDS port: a TCP connection, through the company's forward proxy
//! (HTTP CONNECT, optionally with basic auth) where one is set, then TLS inside that tunnel.
//!
//! The proxy comes from `multizone.zone.kds.proxyUrl`, or else from the environment as gRPC
//! clients (Kuma's among them) read it: `HTTPS_PROXY` / `https_proxy`, unless `NO_PROXY` /
//! `no_proxy` exempts global's host.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// A proxy setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("{setting}: {url:?} is not a URL")]
    Url {
        setting: &'static str,
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "{setting}: {url:?} must be an http:// proxy URL (the TLS to global runs inside the tunnel)"
    )]
    Scheme { setting: &'static str, url: String },
    #[error("{setting}: {url:?} names no host")]
    NoHost { setting: &'static str, url: String },
}

/// Why a tunnel through the proxy could not be opened (each names the proxy, without its
/// credentials).
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("forward proxy {proxy}: cannot connect")]
    Connect {
        proxy: String,
        #[source]
        source: std::io::Error,
    },
    #[error("forward proxy {proxy} refused CONNECT {target}: {status}{hint}")]
    Refused {
        proxy: String,
        target: String,
        status: String,
        hint: &'static str,
    },
    #[error("forward proxy {proxy} answered CONNECT {target} with no HTTP status line")]
    NotHttp { proxy: String, target: String },
    #[error("forward proxy {proxy}: its answer to CONNECT {target} exceeds {MAX_ANSWER} bytes")]
    AnswerTooLong { proxy: String, target: String },
    #[error("forward proxy {proxy}: reading its answer to CONNECT {target}")]
    Read {
        proxy: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// Headers of a proxy's CONNECT answer are small; a proxy sending more is broken or hostile.
const MAX_ANSWER: usize = 16 * 1024;

/// A forward proxy that tunnels TCP with HTTP CONNECT.
#[derive(Clone)]
pub struct ForwardProxy {
    /// An IPv6 address in brackets.
    host: String,
    port: u16,
    /// `Proxy-Authorization` header value, when the URL carries credentials.
    authorization: Option<String>,
}

impl std::fmt::Debug for ForwardProxy {
    // Never prints the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardProxy")
            .field("url", &self.to_string())
            .field("authenticates", &self.authorization.is_some())
            .finish()
    }
}

/// The URL without credentials, for logs and errors.
impl std::fmt::Display for ForwardProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

impl ForwardProxy {
    /// `http://[user:password@]host[:port]` (port 80 by default, as curl and Go assume);
    /// `setting` names where the URL came from, for errors. A bare `host:port` is read as
    /// `http://host:port`, as gRPC and curl read it.
    pub fn parse(setting: &'static str, raw: &str) -> Result<ForwardProxy, ProxyConfigError> {
        let raw = raw.trim();
        let shown = without_credentials(raw);
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|source| ProxyConfigError::Url {
            setting,
            url: shown.clone(),
            source,
        })?;
        if url.scheme() != "http" {
            return Err(ProxyConfigError::Scheme {
                setting,
                url: shown.clone(),
            });
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            Some(host) => host.to_string(),
            None => {
                return Err(ProxyConfigError::NoHost {
                    setting,
                    url: shown.clone(),
                });
            }
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let authorization = (!url.username().is_empty()).then(|| {
            use base64::Engine;
            let user = decode(url.username());
            let password = decode(url.password().unwrap_or_default());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        });
        Ok(ForwardProxy {
            host,
            port,
            authorization,
        })
    }

    /// The proxy the environment sets for global at `host:port`, if any.
    pub fn from_env(host: &str, port: u16) -> Result<Option<ForwardProxy>, ProxyConfigError> {
        let read = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let Some((setting, url)) = read(["HTTPS_PROXY", "https_proxy"]) else {
            return Ok(None);
        };
        // As Go's proxy lookup: a global on this host is never dialed through a proxy.
        if is_loopback(host) {
            return Ok(None);
        }
        if let Some((_, exempt)) = read(["NO_PROXY", "no_proxy"])
            && no_proxy_exempts(&exempt, host, port)
        {
            return Ok(None);
        }
        ForwardProxy::parse(setting, &url).map(Some)
    }

    /// A TCP connection to `target` (`host:port`, an IPv6 host in brackets) through the proxy.
    pub async fn tunnel(&self, target: &str) -> Result<TcpStream, TunnelError> {
        let proxy = || self.to_string();
        let mut tcp = TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
            .await
            .map_err(|source| TunnelError::Connect {
                proxy: proxy(),
                source,
            })?;
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        let read_error = |source| TunnelError::Read {
            proxy: proxy(),
            target: target.to_string(),
            source,
        };
        tcp.write_all(request.as_bytes())
            .await
            .map_err(read_error)?;
        // Read a byte at a time up to the empty line that ends the answer's head: what follows
        // is already the server's (a plaintext HTTP/2 server speaks first), so none of it may
        // be consumed here. A hundred-odd reads, once per connection.
        let mut answer = Vec::with_capacity(256);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= MAX_ANSWER {
                return Err(TunnelError::AnswerTooLong {
                    proxy: proxy(),
                    target: target.to_string(),
                });
            }
            let byte = tcp.read_u8().await.map_err(read_error)?;
            answer.push(byte);
        }
        let head = String::from_utf8_lossy(&answer);
        let status_line = head.lines().next().unwrap_or_default().trim();
        let code = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|code| code.parse::<u16>().ok());
        let Some(code) = code else {
            return Err(TunnelError::NotHttp {
                proxy: proxy(),
                target: target.to_string(),
            });
        };
        if !(200..300).contains(&code) {
            // 407 is the proxy's own "who are you"; some (tinyproxy among them) answer 401.
            let hint = match (code, self.authorization.is_some()) {
                (401 | 407, false) => {
                    " (the proxy wants credentials: give them in the proxy URL, http://user:password@host:port)"
                }
                (401 | 407, true) => " (the proxy refused the credentials in the proxy URL)",
                _ => "",
            };
            return Err(TunnelError::Refused {
                proxy: proxy(),
                target: target.to_string(),
                status: status_line.to_string(),
                hint,
            });
        }
        Ok(tcp)
    }
}

/// A proxy URL as errors may show it: whatever precedes the last `@` of its authority (user
/// and password) is cut, even from a URL too broken to parse.
fn without_credentials(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host_part = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    if scheme.is_empty() {
        host_part.to_string()
    } else {
        format!("{scheme}://{host_part}")
    }
}

/// Whether a `NO_PROXY` list exempts `host:port`, with the rules Go (and so Kuma's gRPC) uses:
/// `*` exempts everything; an entry is a host name (which also matches its subdomains; with a
/// leading dot, only its subdomains), an IP address or a CIDR range, each but the range
/// optionally with `:port`.
pub fn no_proxy_exempts(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.to_ascii_lowercase();
            // A CIDR range: its own syntax, never with a port.
            if let Some((net, bits)) = entry.split_once('/') {
                return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_range(ip, net, bits),
                    _ => false,
                };
            }
            let (name, entry_port) = split_port(&entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let name = name.trim_matches(['[', ']']);
            if let (Some(ip), Ok(entry_ip)) = (host_ip, name.parse::<IpAddr>()) {
                return ip == entry_ip;
            }
            let (subdomains_only, name) = match name.strip_prefix("*.").or(name.strip_prefix('.')) {
                Some(parent) => (true, parent),
                None => (false, name),
            };
            !name.is_empty()
                && ((!subdomains_only && host == name) || host.ends_with(&format!(".{name}")))
        })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` into its parts; an IPv6 address without brackets has no port.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(p) => (name, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// How long dialing global may take in all: TCP, the proxy's CONNECT, and TLS.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why global could not be dialed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to global at {target}")]
    Tcp {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    #[error("TLS handshake with global at {target}")]
    Tls {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dialing global at {target} took longer than {after:?}")]
    Timeout { target: String, after: Duration },
}

/// A byte stream to global, TLS or not.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Opens a connection to global at `target` (`host:port`): directly or through `proxy`, then
/// TLS with `tls` when given.
pub async fn open(
    target: &str,
    host: &str,
    port: u16,
    proxy: Option<&ForwardProxy>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Io>, DialError> {
    let tcp = match proxy {
        Some(proxy) => proxy.tunnel(target).await?,
        None => TcpStream::connect((host, port))
            .await
            .map_err(|source| DialError::Tcp {
                target: target.to_string(),
                source,
            })?,
    };
    // KDS deltas are small and latency-bound; Nagle would hold them back.
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let tls_error = |source| DialError::Tls {
        target: target.to_string(),
        source,
    };
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| tls_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(tls_error)?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_with_credentials_kept_out_of_sight() {
        let p = ForwardProxy::parse("test", "http://zone%40acme:p%3Ass@proxy.corp:3128").unwrap();
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        assert!(!format!("{p:?}").contains("p:ss"));
        use base64::Engine;
        let expected = base64::engine::general_purpose::STANDARD.encode("zone@acme:p:ss");
        assert_eq!(
            p.authorization.as_deref(),
            Some(&*format!("Basic {expected}"))
        );

        let bare = ForwardProxy::parse("test", "10.0.0.1:8888").unwrap();
        assert_eq!(bare.to_string(), "http://10.0.0.1:8888");
        assert!(bare.authorization.is_none());
        assert_eq!(
            ForwardProxy::parse("test", "http://proxy").unwrap().port,
            80
        );
        assert_eq!(
            ForwardProxy::parse("test", "http://[::1]:3128")
                .unwrap()
                .host,
            "[::1]"
        );

        let https = ForwardProxy::parse("KUMA_X", "https://u:pw@proxy:443").unwrap_err();
        assert!(https.to_string().starts_with("KUMA_X: "), "{https}");
        let broken = ForwardProxy::parse("KUMA_X", "http://u:p#w@proxy:3128/x").unwrap_err();
        for e in [https, broken] {
            let chain = model::error_chain(&e);
            assert!(!chain.contains("pw") && !chain.contains("p#w"), "{chain}");
        }
        assert!(matches!(
            ForwardProxy::parse("test", "http://"),
            Err(ProxyConfigError::Url { .. } | ProxyConfigError::NoHost { .. })
        ));
    }

    #[test]
    fn no_proxy_follows_go_rules() {
        let list = "localhost, .internal.corp,example.com:5685, 10.0.0.0/8 ,192.168.1.7,[::1]";
        for (host, port, exempt) in [
            ("localhost", 5685, true),
            ("global.internal.corp", 5685, true),
            ("internal.corp", 5685, false),
            ("example.com", 5685, true),
            ("kds.example.com", 5685, true),
            ("example.com", 443, false),
            ("notexample.com", 5685, false),
            ("10.20.30.40", 5685, true),
            ("11.0.0.1", 5685, false),
            ("192.168.1.7", 1, true),
            ("[::1]", 5685, true),
            ("mesh.sync.konghq.com", 443, false),
        ] {
            assert_eq!(no_proxy_exempts(list, host, port), exempt, "{host}:{port}");
        }
        assert!(no_proxy_exempts("*", "anything", 1));
        assert!(!no_proxy_exempts("", "anything", 1));
    }

    /// A proxy that answers CONNECT with `answer`, and what it received.
    async fn fake_proxy(answer: &'static str) -> (ForwardProxy, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let proxy =
            ForwardProxy::parse("test", &format!("http://user:secret@127.0.0.1:{port}")).unwrap();
        (proxy, received)
    }

    #[tokio::test]
    async fn a_tunnel_opens_on_2xx_and_names_the_proxy_and_status_otherwise() {
        let (proxy, received) =
            fake_proxy("HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\n").await;
        proxy.tunnel("global.example:5685").await.unwrap();
        let request = received.await.unwrap();
        assert!(
            request.starts_with("CONNECT global.example:5685 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=\r\n"));

        let (proxy, _) = fake_proxy("HTTP/1.0 407 Proxy Authentication Required\r\n\r\n").await;
        let e = proxy.tunnel("global.example:5685").await.unwrap_err();
        let message = e.to_string();
        assert!(message.contains(&proxy.to_string()), "{message}");
        assert!(
            message.contains("407 Proxy Authentication Required"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");

        let (proxy, _) = fake_proxy("SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(matches!(
            proxy.tunnel("g:1").await,
            Err(TunnelError::NotHttp { .. })
        ));
        // A plaintext server behind the tunnel may speak first; its bytes stay in the stream.
        let (proxy, _) = fake_proxy("HTTP/1.1 200 OK\r\n\r\nserver speaks").await;
        let mut tunnel = proxy.tunnel("g:1").await.unwrap();
        let mut first = String::new();
        tunnel.read_to_string(&mut first).await.unwrap();
        assert_eq!(first, "server speaks");
    }
}
