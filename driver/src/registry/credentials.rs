//! Registry credentials: `--creds`, then the auth files docker, podman and
//! skopeo write (`auths` entries, `credHelpers` and `credsStore`).
//!
//! The library reads no environment: the front door says which files to
//! look in (`default_auth_files` is what the CLI passes). A secret never
//! appears in Debug output or in an error.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// `USER:PASSWORD`, as `--creds` takes it (skopeo's form).
    pub fn parse(s: &str) -> Result<Credentials> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials::new(u, p)),
            _ => Err(Error::Invalid(
                "--creds takes USER:PASSWORD (the password may be empty)".into(),
            )),
        }
    }

    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// Where credentials are looked up, in order: podman's and skopeo's
/// (`$REGISTRY_AUTH_FILE`, then `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`), then docker's
/// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
pub fn default_auth_files(env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        files.push(Path::new(&d).join("containers/auth.json"));
    }
    let home = env("HOME");
    if let Some(h) = &home {
        files.push(Path::new(h).join(".config/containers/auth.json"));
    }
    match (env("DOCKER_CONFIG"), &home) {
        (Some(d), _) => files.push(Path::new(&d).join("config.json")),
        (None, Some(h)) => files.push(Path::new(h).join(".docker/config.json")),
        (None, None) => {}
    }
    files
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The credentials for `registry` (`host[:port]`, docker.io for Docker
/// Hub) from the first of `files` that has any. Missing files are skipped;
/// a file that is there but unreadable or malformed is an error naming it.
pub fn lookup(files: &[PathBuf], registry: &str) -> Result<Option<Credentials>> {
    for path in files {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Invalid(format!("auth file {}: {e}", path.display()))),
        };
        let file: AuthFile = serde_json::from_slice(&data).map_err(|e| {
            Error::Invalid(format!("auth file {}: not valid JSON: {e}", path.display()))
        })?;
        if let Some(found) = from_file(&file, registry, path)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn from_file(file: &AuthFile, registry: &str, path: &Path) -> Result<Option<Credentials>> {
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| auth_key_host(k) == registry)
        .map(|(_, v)| v)
        .or(file.creds_store.as_ref());
    for (key, entry) in &file.auths {
        if auth_key_host(key) != registry {
            continue;
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            return decode_auth(auth, registry, path).map(Some);
        }
    }
    match helper {
        Some(h) => run_helper(h, registry),
        None => Ok(None),
    }
}

/// An `auths` key's host: keys are `host[:port]`, `https://host/...`, or
/// docker's legacy `https://index.docker.io/v1/` for Docker Hub.
fn auth_key_host(key: &str) -> &str {
    let host = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => super::reference::DOCKER_HUB,
        h => h,
    }
}

fn decode_auth(auth: &str, registry: &str, path: &Path) -> Result<Credentials> {
    let bad = || {
        Error::Invalid(format!(
            "auth file {}: the entry for {registry} is not base64 of USER:PASSWORD",
            path.display()
        ))
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (u, p) = raw.split_once(':').ok_or_else(bad)?;
    Ok(Credentials::new(u, p))
}

/// `docker-credential-HELPER get`, the registry on its stdin, as docker
/// runs it.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        username: String,
        secret: String,
    }
    let program = format!("docker-credential-{helper}");
    let failed = |why: String| Error::Registry {
        registry: registry.to_string(),
        reason: format!("credential helper {program}: {why}"),
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(registry.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    written.map_err(|e| failed(format!("writing its input: {e}")))?;
    if !out.status.success() {
        // "credentials not found" is an answer, not a failure.
        let said = String::from_utf8_lossy(&out.stdout);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("exited with {}", out.status)));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|_| failed("its answer is not the JSON docker's helpers print".into()))?;
    Ok(Some(Credentials::new(answer.username, answer.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_files_are_read_in_order_and_keys_normalised() {
        let dir = std::env::temp_dir().join(format!("strata-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let podman = dir.join("auth.json");
        let docker = dir.join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &podman,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}}}}}}"#,
                b64("alice:s3cret")
            ),
        )
        .unwrap();
        std::fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"127.0.0.1:5000":{{"auth":"{}"}}}}}}"#,
                b64("bob:hub"),
                b64("bob:other")
            ),
        )
        .unwrap();
        let files = [dir.join("missing.json"), podman, docker];
        let local = lookup(&files, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local, Credentials::new("alice", "s3cret"));
        let hub = lookup(&files, "docker.io").unwrap().unwrap();
        assert_eq!(hub, Credentials::new("bob", "hub"));
        assert_eq!(lookup(&files, "elsewhere.example").unwrap(), None);
        assert!(!format!("{local:?}").contains("s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_malformed_auth_file_is_named() {
        let dir = std::env::temp_dir().join(format!("strata-creds-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("auth.json");
        std::fs::write(&f, "{not json").unwrap();
        let e = lookup(std::slice::from_ref(&f), "x.example").unwrap_err();
        assert!(e.to_string().contains("auth.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
