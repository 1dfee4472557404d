//! Docker image references: `[host[:port]/]path[:tag][@sha256:...]`, with
//! docker's defaults (`docker.io`, `library/`, `latest`).

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry docker.io names, and the host its API is served from.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (docker.io when none was).
    pub registry: String,
    /// The repository path, `library/` added on docker.io.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |why: &str| Error::Invalid(format!("image reference {s:?}: {why}"));
        if s.is_empty() || s.len() > 255 + 128 + 72 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a port's
        // ':' comes before a '/').
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_host(first) => (first.to_string(), path.to_string()),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if registry != registry.to_lowercase() {
            return Err(bad("the registry host must be lowercase"));
        }
        if !path.split('/').all(valid_component) {
            return Err(bad(
                "repository path components are lowercase [a-z0-9] joined by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What the registry API is asked for the manifest by: the digest
    /// when there is one (the tag is then only a name), else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host (and port) the registry's HTTP API is at.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The name an image pulled by this reference is stored under:
    /// `host/path:tag`, or `host/path@digest` for a digest alone.
    pub fn image_name(&self) -> String {
        let base = format!("{}/{}", self.registry, self.repository);
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{base}:{t}"),
            (None, Some(d)) => format!("{base}@{d}"),
            (None, None) => format!("{base}:latest"),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// docker's rule: the first component names a host when it has a '.' or
/// a ':' or is `localhost`.
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn valid_tag(t: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    !t.is_empty()
        && t.len() <= 128
        && t.bytes().all(ok)
        && !t.starts_with('.')
        && !t.starts_with('-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (
            r.registry,
            r.repository,
            r.tag,
            r.digest.map(|d| d.to_string()),
        )
    }

    #[test]
    fn docker_hub_defaults() {
        let p = parts("debian");
        assert_eq!(p.0, "docker.io");
        assert_eq!(p.1, "library/debian");
        assert_eq!(p.2.as_deref(), Some("latest"));
        assert_eq!(parts("user/app:1.2").1, "user/app");
        assert_eq!(
            Reference::parse("debian").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn host_port_tag_and_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let p = parts(&format!("127.0.0.1:5000/team/app:v1@{d}"));
        assert_eq!(p.0, "127.0.0.1:5000");
        assert_eq!(p.1, "team/app");
        assert_eq!(p.2.as_deref(), Some("v1"));
        assert_eq!(p.3.as_deref(), Some(d.as_str()));
        let r = Reference::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.image_name(), format!("localhost/app@{d}"));
        // A port alone is not a tag.
        assert_eq!(parts("host:5000/app").2.as_deref(), Some("latest"));
    }

    #[test]
    fn bad_references_are_refused_saying_why() {
        for bad in [
            "",
            "UPPER/case",
            "app:",
            "app:-tag",
            "a//b",
            "app@sha256:123",
            "app..x",
            "Host.example/app",
        ] {
            let e = Reference::parse(bad).unwrap_err().to_string();
            assert!(e.contains("image reference"), "{bad}: {e}");
        }
    }
}
