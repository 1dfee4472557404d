//! The HTTP layer under the registry client: one registry's TLS (system
//! roots, `--tls-ca` files and `certs.d/HOST/*.crt`, verified unless the
//! user marked the registry insecure), which scheme it speaks, redirects
//! (bounded, never downgraded to plain HTTP, credentials dropped when the
//! host changes) and retries of 5xx, 429 and lost connections with
//! backoff. It knows nothing of auth: see `auth`, the layer above.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};

/// How strata talks to registries; the same for every one of a pull.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// `host[:port]`s allowed plain HTTP and unverified TLS (docker's
    /// `--insecure-registry`). Loopback registries are allowed plain HTTP
    /// without being listed, as docker allows them; their TLS, when they
    /// speak it, is still verified.
    pub insecure: Vec<String>,
    /// CA certificates (PEM) trusted beside the system's.
    pub ca_files: Vec<PathBuf>,
    /// Directories holding `HOST[:PORT]/*.crt`, as docker's and
    /// containerd's `certs.d`.
    pub certs_dirs: Vec<PathBuf>,
    pub connect_timeout: Duration,
    /// The longest a read may wait for a byte: a registry that stops
    /// sending fails the read.
    pub read_timeout: Duration,
    /// Tries of a request that met 5xx, 429 or a lost connection.
    pub attempts: u32,
    /// The first backoff; it doubles per try. A `Retry-After` is honoured
    /// up to `max_wait`.
    pub backoff: Duration,
    pub max_wait: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            insecure: Vec::new(),
            ca_files: Vec::new(),
            certs_dirs: vec![
                PathBuf::from("/etc/strata/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ],
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Redirects followed for one request before it is called a loop.
const MAX_REDIRECTS: usize = 8;

pub struct Transport {
    /// `host[:port]`, as errors name it.
    pub registry: String,
    agent: ureq::Agent,
    plain_allowed: bool,
    /// The scheme found to work, once one has.
    scheme: Mutex<Option<&'static str>>,
    opts: TransportOptions,
}

/// A response, whatever its status (the layer above decides what a 401
/// or a 404 means).
pub struct Response {
    pub status: u16,
    inner: ureq::Response,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.header(name)
    }
    pub fn into_reader(self) -> Box<dyn Read + Send + Sync> {
        self.inner.into_reader()
    }
    /// The body, refused past `max` bytes without reading it all.
    pub fn read_small(self, max: u64, what: &str, registry: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.into_reader()
            .take(max + 1)
            .read_to_end(&mut data)
            .map_err(|e| registry_error(registry, format!("reading {what}: {e}")))?;
        if data.len() as u64 > max {
            return Err(registry_error(
                registry,
                format!("{what} is larger than the {} MiB limit", max >> 20),
            ));
        }
        Ok(data)
    }
}

pub fn registry_error(registry: &str, reason: impl Into<String>) -> Error {
    Error::Registry {
        registry: registry.to_string(),
        reason: reason.into(),
    }
}

impl Transport {
    pub fn new(registry: &str, opts: &TransportOptions) -> Result<Transport> {
        let insecure = opts.insecure.iter().any(|h| h == registry);
        let tls = super::tls::client_config(registry, opts, !insecure)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(opts.connect_timeout)
            .timeout_read(opts.read_timeout)
            .timeout_write(opts.read_timeout)
            .redirects(0)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Transport {
            registry: registry.to_string(),
            agent,
            plain_allowed: insecure || is_loopback(registry),
            scheme: Mutex::new(None),
            opts: opts.clone(),
        })
    }

    pub fn options(&self) -> &TransportOptions {
        &self.opts
    }

    /// `scheme://host[:port]` with the scheme this registry speaks: HTTPS,
    /// or plain HTTP where allowed and HTTPS cannot connect.
    pub fn base_url(&self) -> Result<String> {
        if let Some(s) = *self.scheme.lock().expect("no panics under the lock") {
            return Ok(format!("{s}://{}", self.registry));
        }
        let https = format!("https://{}/v2/", self.registry);
        let scheme = match self.agent.head(&https).call() {
            Ok(_) | Err(ureq::Error::Status(..)) => "https",
            Err(ureq::Error::Transport(t)) => {
                if !self.plain_allowed || certificate_problem(&t).is_some() {
                    return Err(self.transport_error(&https, &t));
                }
                "http"
            }
        };
        *self.scheme.lock().expect("no panics under the lock") = Some(scheme);
        Ok(format!("{scheme}://{}", self.registry))
    }

    /// Sends `method` to `url` with `headers`, `authorization` (dropped if
    /// a redirect leaves the host), following redirects and retrying
    /// what is worth retrying.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<Response> {
        self.send_body(method, url, headers, authorization, None)
    }

    /// `send` with a request body (an upload's chunk, a manifest), sent
    /// again on a retry or a redirect.
    pub fn send_body(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        authorization: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.opts.attempts;
            match self.send_once(method, url, headers, authorization, body) {
                Ok(r) if (r.status == 429 || r.status >= 500) && !last => {
                    let wait = retry_after(&r).unwrap_or(self.backoff(attempt));
                    std::thread::sleep(wait.min(self.opts.max_wait));
                }
                Ok(r) if r.status == 429 || r.status >= 500 => {
                    return Err(registry_error(
                        &self.registry,
                        format!(
                            "{method} {} answered {} after {attempt} tries",
                            shown(url),
                            r.status
                        ),
                    ))
                }
                Ok(r) => return Ok(r),
                Err(Retry::No(e)) => return Err(e),
                Err(Retry::Yes(e)) if last => return Err(e),
                Err(Retry::Yes(_)) => std::thread::sleep(self.backoff(attempt)),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.opts.backoff * 2u32.saturating_pow(attempt.saturating_sub(1).min(16))
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        mut authorization: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::result::Result<Response, Retry> {
        let mut url = url::Url::parse(url)
            .map_err(|e| Retry::No(registry_error(&self.registry, format!("bad URL: {e}"))))?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.request(method, url.as_str());
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = authorization {
                req = req.set("Authorization", a);
            }
            let sent = match body {
                Some(b) => req.send_bytes(b),
                None => req.call(),
            };
            let resp = match sent {
                Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    let e = self.transport_error(url.as_str(), &t);
                    return Err(if certificate_problem(&t).is_some() {
                        Retry::No(e)
                    } else {
                        Retry::Yes(e)
                    });
                }
            };
            let status = resp.status();
            if !(300..400).contains(&status) || status == 304 {
                return Ok(Response {
                    status,
                    inner: resp,
                });
            }
            let next = self.redirect_target(&url, &resp).map_err(Retry::No)?;
            if next.host_str() != url.host_str() || next.port() != url.port() {
                // Credentials are for this registry, not wherever it sends
                // us (a blob store's signed URL needs none).
                authorization = None;
            }
            url = next;
        }
        Err(Retry::No(registry_error(
            &self.registry,
            format!(
                "more than {MAX_REDIRECTS} redirects (a loop?) at {}",
                shown(url.as_str())
            ),
        )))
    }

    fn redirect_target(&self, from: &url::Url, resp: &ureq::Response) -> Result<url::Url> {
        let location = resp.header("Location").ok_or_else(|| {
            registry_error(
                &self.registry,
                format!("redirect {} without a Location", resp.status()),
            )
        })?;
        let next = from
            .join(location)
            .map_err(|e| registry_error(&self.registry, format!("redirect to a bad URL: {e}")))?;
        match (from.scheme(), next.scheme()) {
            (_, "https") | ("http", "http") => Ok(next),
            (f, t) => Err(registry_error(
                &self.registry,
                format!(
                    "refused a redirect from {f} to {t} ({})",
                    shown(next.as_str())
                ),
            )),
        }
    }

    fn transport_error(&self, url: &str, t: &ureq::Transport) -> Error {
        let reason = match certificate_problem(t) {
            Some(p) => format!(
                "TLS certificate not trusted ({p}); give its CA with --tls-ca, or put it in certs.d/{}/ca.crt",
                self.registry
            ),
            None => format!("{}: {}", shown(url), t.message().unwrap_or("connection failed")),
        };
        let reason = match std::error::Error::source(t) {
            Some(more) if certificate_problem(t).is_none() => format!("{reason} ({more})"),
            _ => reason,
        };
        registry_error(&self.registry, reason)
    }
}

enum Retry {
    Yes(Error),
    No(Error),
}

/// A URL as errors show it: without its query, where a blob store's
/// signature would be.
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn retry_after(r: &Response) -> Option<Duration> {
    r.header("Retry-After")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What rustls said was wrong with the certificate, if that is what
/// failed.
fn certificate_problem(t: &ureq::Transport) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = source {
        if let Some(rustls::Error::InvalidCertificate(c)) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("{c:?}"));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(rustls::Error::InvalidCertificate(c)) =
                io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                return Some(format!("{c:?}"));
            }
        }
        source = e.source();
    }
    None
}

/// PEM certificates of one file.
pub(super) fn read_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Invalid(format!("CA file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_registries_by_name_and_address() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.4.5",
            "[::1]:443",
            "localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
