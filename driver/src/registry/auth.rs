//! Auth as a layer around the transport, as containerd's `remotes/docker`
//! does it: a request goes out with what this registry last asked for; a
//! 401 names the scheme in `WWW-Authenticate` (`Basic`, or `Bearer`
//! with the token server's `realm`, `service` and `scope`), the token is
//! fetched (anonymously when there are no credentials) and the request
//! sent once more. Tokens are kept per scope and reused across blobs; a
//! 401 with a kept token fetches a fresh one.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use super::credentials::Credentials;
use super::transport::{registry_error, Response, Transport};
use crate::error::Result;

/// A token server's answer is small; anything bigger is not one.
const TOKEN_MAX: u64 = 1 << 20;

pub struct Authorizer {
    transport: Transport,
    credentials: Option<Credentials>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    /// The registry asked for Basic: send it up front from now on.
    basic: Mutex<bool>,
}

/// What a 401 asked for.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Authorizer {
    pub fn new(transport: Transport, credentials: Option<Credentials>) -> Authorizer {
        Authorizer {
            transport,
            credentials,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
        }
    }

    pub fn registry(&self) -> &str {
        &self.transport.registry
    }

    pub fn transport_options(&self) -> &super::transport::TransportOptions {
        self.transport.options()
    }

    pub fn base_url(&self) -> Result<String> {
        self.transport.base_url()
    }

    /// `method` on `url` with the authorization `scope` needs (e.g.
    /// `repository:library/debian:pull`).
    pub fn send(
        &self,
        method: &str,
        url: &str,
        scope: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let held = self.authorization(scope);
        let resp = self
            .transport
            .send_body(method, url, headers, held.as_deref(), body)?;
        if resp.status != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .header("WWW-Authenticate")
            .and_then(parse_challenge)
            .ok_or_else(|| {
                registry_error(self.registry(), "401 without a challenge this client knows")
            })?;
        let fresh = self.answer(&challenge, scope)?;
        let resp = self
            .transport
            .send_body(method, url, headers, Some(&fresh), body)?;
        if resp.status == 401 {
            return Err(registry_error(self.registry(), self.refused()));
        }
        Ok(resp)
    }

    fn authorization(&self, scope: &str) -> Option<String> {
        if let Some(t) = self
            .tokens
            .lock()
            .expect("no panics under the lock")
            .get(scope)
        {
            return Some(format!("Bearer {t}"));
        }
        let basic = *self.basic.lock().expect("no panics under the lock");
        match (&self.credentials, basic) {
            (Some(c), true) => Some(c.basic_header()),
            _ => None,
        }
    }

    fn answer(&self, challenge: &Challenge, scope: &str) -> Result<String> {
        match challenge {
            Challenge::Basic => {
                let creds = self.credentials.as_ref().ok_or_else(|| {
                    registry_error(
                        self.registry(),
                        "needs credentials (401, Basic): give --creds or log in to it",
                    )
                })?;
                *self.basic.lock().expect("no panics under the lock") = true;
                Ok(creds.basic_header())
            }
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                let scope_asked = asked.as_deref().unwrap_or(scope);
                let token = self.fetch_token(realm, service.as_deref(), scope_asked)?;
                self.tokens
                    .lock()
                    .expect("no panics under the lock")
                    .insert(scope.to_string(), token.clone());
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// GET `realm?service=...&scope=...`, with Basic credentials when
    /// there are some: the token flow of the distribution spec.
    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let mut url = url::Url::parse(realm).map_err(|e| {
            registry_error(
                self.registry(),
                format!("token realm {realm:?} is not a URL: {e}"),
            )
        })?;
        if url.scheme() != "https" && !self.base_url()?.starts_with("http://") {
            return Err(registry_error(
                self.registry(),
                format!("refused to send credentials to a plain-HTTP token realm {realm}"),
            ));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let basic = self.credentials.as_ref().map(Credentials::basic_header);
        let resp = self
            .transport
            .send("GET", url.as_str(), &[], basic.as_deref())?;
        if resp.status == 401 || resp.status == 403 {
            return Err(registry_error(self.registry(), self.refused()));
        }
        if resp.status != 200 {
            return Err(registry_error(
                self.registry(),
                format!(
                    "token server {} answered {}",
                    url.origin().ascii_serialization(),
                    resp.status
                ),
            ));
        }
        let body = resp.read_small(TOKEN_MAX, "the token answer", self.registry())?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            registry_error(self.registry(), "the token server's answer is not JSON")
        })?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| registry_error(self.registry(), "the token server gave no token"))
    }

    fn refused(&self) -> String {
        match &self.credentials {
            Some(c) => format!("refused the credentials of {:?} (401)", c.username),
            None => "needs credentials (401): give --creds or log in to it".into(),
        }
    }
}

/// `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k="v", k2=v2`: values quoted (commas inside allowed) or bare.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_as_docker_hub_and_distribution_send_them() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#;
        assert_eq!(
            parse_challenge(hub),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/debian:pull".into()),
            })
        );
        let two_scopes = r#"Bearer realm="http://127.0.0.1:1/t",scope="repository:a:pull,push""#;
        match parse_challenge(two_scopes) {
            Some(Challenge::Bearer { scope, service, .. }) => {
                assert_eq!(scope.as_deref(), Some("repository:a:pull,push"));
                assert_eq!(service, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }
}
