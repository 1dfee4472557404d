//! The token server of the token-auth registry test, on 127.0.0.1: the
//! challenge flow Docker Hub uses. `GET /token?service=S&scope=S` with
//! optional Basic credentials answers a JWT (ES256) granting what the
//! caller may have: anyone may pull `public/*`; `tester` may pull and
//! push anything. The registry trusts the signing key through its
//! `rootcertbundle` and finds it by the token's `kid`, the libtrust
//! fingerprint of the key.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

pub const SERVICE: &str = "strata-test-registry";
pub const ISSUER: &str = "strata-test-issuer";
pub const USER: (&str, &str) = ("tester", "t0ken-pass");

pub struct TokenServer {
    pub realm: String,
    /// The PEM certificate of the signing key, for the registry.
    pub bundle: PathBuf,
    /// Tokens issued so far.
    pub issued: Arc<AtomicUsize>,
}

impl TokenServer {
    pub fn start(dir: &Path) -> TokenServer {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let bundle = dir.join("token-ca.pem");
        std::fs::write(&bundle, cert.pem()).unwrap();
        let kid = libtrust_key_id(&rcgen::PublicKeyData::subject_public_key_info(&key));
        let rng = ring::rand::SystemRandom::new();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h
                        .strip_prefix("Authorization: Basic ")
                        .or_else(|| h.strip_prefix("authorization: Basic "))
                    {
                        auth = base64::engine::general_purpose::STANDARD
                            .decode(v.trim())
                            .ok()
                            .and_then(|b| String::from_utf8(b).ok());
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let answer = answer(&path, auth.as_deref(), &kid, &signer, &rng);
                if answer.0 == 200 {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let mut conn = conn;
                let _ = write!(conn, "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", answer.0, answer.1.len(), answer.1);
            }
        });
        TokenServer {
            realm,
            bundle,
            issued,
        }
    }
}

fn answer(
    path: &str,
    auth: Option<&str>,
    kid: &str,
    signer: &EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
) -> (u16, String) {
    let url = url::Url::parse(&format!("http://token{path}")).unwrap();
    let user = match auth {
        None => None,
        Some(a) if a == format!("{}:{}", USER.0, USER.1) => Some(USER.0),
        Some(_) => return (401, r#"{"details":"wrong credentials"}"#.into()),
    };
    let mut access = Vec::new();
    for (k, scope) in url.query_pairs() {
        if k != "scope" {
            continue;
        }
        let parts: Vec<&str> = scope.split(':').collect();
        if parts.len() != 3 || parts[0] != "repository" {
            continue;
        }
        let (name, wanted) = (parts[1], parts[2].split(','));
        let actions: Vec<&str> = wanted
            .filter(|a| user.is_some() || (*a == "pull" && name.starts_with("public/")))
            .collect();
        access.push(serde_json::json!({"type": "repository", "name": name, "actions": actions}));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": kid});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user.unwrap_or(""), "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", rand_u64(rng)), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = signer.sign(rng, signing_input.as_bytes()).unwrap();
    let token = format!("{signing_input}.{}", b64(sig.as_ref()));
    (
        200,
        serde_json::json!({"token": token, "expires_in": 300}).to_string(),
    )
}

fn rand_u64(rng: &ring::rand::SystemRandom) -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(rng, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// libtrust's key ID: the first 240 bits of sha256(SPKI DER), base32,
/// in twelve groups of four joined by ':'.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let bits = &hash.as_ref()[..30];
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut n = 0;
    for &b in bits {
        acc = (acc << 8) | b as u32;
        n += 8;
        while n >= 5 {
            n -= 5;
            out.push(ALPHABET[((acc >> n) & 31) as usize] as char);
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}
