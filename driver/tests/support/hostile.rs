//! A registry that lies, stalls or attacks, on 127.0.0.1: it serves one
//! valid image (manifest, config, one gzip layer) by the distribution
//! API, and a test's `Script` decides, request by request, what it does
//! instead. Requests are recorded for the tests' assertions. Dropping it
//! stops accepting; stalled connections end when their test does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_driver::digest::Digest;

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

/// What to answer.
pub enum Reply {
    /// What a well-behaved registry would send.
    Normal,
    Status(u16, Vec<(String, String)>, Vec<u8>),
    /// The normal answer's headers and its first `n` body bytes, then the
    /// connection closes.
    CutAfter(usize),
    /// The normal answer's headers and first `n` bytes, then silence
    /// until the test ends.
    StallAfter(usize),
}

pub type Script = Box<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

pub struct Image {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layer: Vec<u8>,
    pub layer_digest: Digest,
}

pub struct Hostile {
    pub host: String,
    pub repo: &'static str,
    pub requests: Arc<Mutex<Vec<Request>>>,
    /// Body bytes sent of layer blobs, over all requests.
    pub layer_bytes_sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    pub fn start(image: Image, script: Script) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new((image, script, requests.clone(), sent.clone(), stop.clone()));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if state.4.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    let (image, script, requests, sent, stop) = &*state;
                    serve(conn, image, script, requests, sent, stop);
                });
            }
        });
        Hostile {
            host,
            repo: "test/app",
            requests,
            layer_bytes_sent: sent,
            stop,
        }
    }

    pub fn reference(&self) -> String {
        format!("{}/{}:v1", self.host, self.repo)
    }

    pub fn requests_for(&self, path_part: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.contains(path_part))
            .cloned()
            .collect()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host); // wakes the accept loop
    }
}

fn serve(
    conn: TcpStream,
    image: &Image,
    script: &Script,
    requests: &Mutex<Vec<Request>>,
    sent: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        let n = {
            let mut all = requests.lock().unwrap();
            all.push(req.clone());
            all.iter().filter(|r| r.path == req.path).count()
        };
        let (status, headers, body) = normal(image, &req);
        let is_layer = req.path.ends_with(&format!("blobs/{}", image.layer_digest));
        let reply = script(&req, n);
        let (status, headers, body, limit, stall) = match reply {
            Reply::Normal => (status, headers, body, None, false),
            Reply::Status(s, h, b) => (s, h, b, None, false),
            Reply::CutAfter(k) => (status, headers, body, Some(k), false),
            Reply::StallAfter(k) => (status, headers, body, Some(k), true),
        };
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in &headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        let upto = limit.unwrap_or(body.len()).min(body.len());
        if req.method != "HEAD" {
            for chunk in body[..upto].chunks(16 * 1024) {
                if conn.write_all(chunk).is_err() {
                    return;
                }
                if is_layer {
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            }
        }
        let _ = conn.flush();
        if stall {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        if limit.is_some() {
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if let Some(len) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

/// What a well-behaved registry answers, honouring Range on blobs.
fn normal(image: &Image, req: &Request) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let manifest_type = "application/vnd.oci.image.manifest.v1+json".to_string();
    let p = req.path.as_str();
    if p == "/v2/" {
        return (200, vec![], b"{}".to_vec());
    }
    if p.contains("/manifests/") {
        return (
            200,
            vec![
                ("Content-Type".into(), manifest_type),
                (
                    "Docker-Content-Digest".into(),
                    image.manifest_digest.to_string(),
                ),
            ],
            image.manifest.clone(),
        );
    }
    let blob = if p.ends_with(image.config_digest.as_str()) {
        &image.config
    } else if p.ends_with(image.layer_digest.as_str()) {
        &image.layer
    } else {
        return (
            404,
            vec![],
            b"{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}".to_vec(),
        );
    };
    let start = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    match start {
        Some(s) if s < blob.len() => (
            206,
            vec![(
                "Content-Range".into(),
                format!("bytes {s}-{}/{}", blob.len() - 1, blob.len()),
            )],
            blob[s..].to_vec(),
        ),
        _ => (200, vec![], blob.clone()),
    }
}
