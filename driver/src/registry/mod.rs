//! The registry client, in layers as containerd's `remotes/docker` and
//! distribution's `registry/client` are: `reference` parses what the user
//! typed; `transport` speaks HTTP(S) to one registry; `auth` wraps it with
//! credentials and tokens (`credentials` finds them); `resolver` turns a
//! reference into a verified manifest and config; `fetcher` streams one
//! layer blob, resumably; `pusher` uploads blobs and manifests. `pull`
//! and `push` (beside `import`) put them to work on the
//! store.

pub mod auth;
pub mod credentials;
pub mod fetcher;
pub mod pusher;
pub mod reference;
pub mod resolver;
pub mod tls;
pub mod transport;

use std::path::PathBuf;

use auth::Authorizer;
use credentials::Credentials;
use transport::{registry_error, Response, Transport, TransportOptions};

use crate::digest::Digest;
use crate::error::Result;

/// How to reach registries and who to be there.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    pub transport: TransportOptions,
    /// Used for every registry when given (`--creds`).
    pub credentials: Option<Credentials>,
    /// Looked in otherwise, in order (see credentials::default_auth_files).
    pub auth_files: Vec<PathBuf>,
}

/// One registry, authorized: what the resolver and the fetcher ask.
pub struct Registry {
    auth: Authorizer,
}

impl Registry {
    /// `registry` is `host[:port]` (the reference's API host).
    pub fn connect(registry: &str, opts: &RegistryOptions) -> Result<Registry> {
        let credentials = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => credentials::lookup(&opts.auth_files, credentials_key(registry))?,
        };
        let transport = Transport::new(registry, &opts.transport)?;
        Ok(Registry {
            auth: Authorizer::new(transport, credentials),
        })
    }

    pub fn name(&self) -> &str {
        self.auth.registry()
    }

    /// How often, and after how long, a blob cut off mid-stream is
    /// fetched again from where it stopped.
    pub fn blob_retries(&self) -> (u32, std::time::Duration) {
        let t = self.auth.transport_options();
        (t.attempts, t.backoff)
    }

    /// GET `/v2/REPO/SUFFIX` (`manifests/REF`, `blobs/DIGEST`) with pull
    /// rights on REPO.
    pub fn get(&self, repo: &str, suffix: &str, headers: &[(&str, String)]) -> Result<Response> {
        let url = format!("{}/v2/{repo}/{suffix}", self.auth.base_url()?);
        self.auth.send(
            "GET",
            &url,
            &format!("repository:{repo}:pull"),
            headers,
            None,
        )
    }

    /// `method` on `/v2/REPO/SUFFIX`, or on `location` (an upload's,
    /// absolute or relative to the registry), with push rights on REPO.
    pub fn send_for_push(
        &self,
        method: &str,
        repo: &str,
        target: Target<'_>,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let base = self.auth.base_url()?;
        let url = match target {
            Target::Suffix(s) => format!("{base}/v2/{repo}/{s}"),
            Target::Location(l) => url::Url::parse(&base)
                .and_then(|b| b.join(l))
                .map_err(|e| registry_error(self.name(), format!("upload location {l:?}: {e}")))?
                .to_string(),
        };
        let scope = format!("repository:{repo}:pull,push");
        self.auth.send(method, &url, &scope, headers, body)
    }

    /// A small blob (a config), read whole and verified.
    pub fn fetch_small_blob(&self, repo: &str, digest: &Digest, what: &str) -> Result<Vec<u8>> {
        let resp = self.get(repo, &format!("blobs/{digest}"), &[])?;
        if resp.status != 200 {
            return Err(registry_error(
                self.name(),
                format!("{what} {digest}: blob request answered {}", resp.status),
            ));
        }
        let body = resp.read_small(resolver::DOCUMENT_MAX, what, self.name())?;
        let actual = Digest::of_bytes(&body);
        if &actual != digest {
            return Err(registry_error(
                self.name(),
                format!("{what}: the blob's bytes hash to {actual}, not {digest}"),
            ));
        }
        Ok(body)
    }
}

/// Where a push request goes.
pub enum Target<'a> {
    /// `/v2/REPO/` + this.
    Suffix(&'a str),
    /// Where the registry said an upload continues.
    Location(&'a str),
}

/// Credentials for Docker Hub are filed under docker.io, not its API host.
fn credentials_key(api_host: &str) -> &str {
    if api_host == reference::DOCKER_HUB_API {
        reference::DOCKER_HUB
    } else {
        api_host
    }
}
