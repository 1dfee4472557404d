//! Uploads to one repository of a registry, by the distribution API: a
//! blob's existence (HEAD), a cross-repository mount from another
//! repository of the same registry, a blob streamed up in chunks (POST,
//! PATCH per chunk, PUT with its digest), and a manifest (PUT).

use std::io::{self, Write};
use std::sync::Arc;

use super::transport::registry_error;
use super::{Registry, Target};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Bytes per PATCH: memory stays bounded whatever the blob's size.
pub const CHUNK: usize = 8 << 20;

pub struct Pusher {
    pub registry: Arc<Registry>,
    pub repository: String,
}

impl Pusher {
    /// Whether the repository has the blob already.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let suffix = format!("blobs/{digest}");
        let resp = self.send("HEAD", Target::Suffix(&suffix), &[], None)?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(self.error(format!("HEAD of blob {digest} answered {s}"))),
        }
    }

    /// Asks the registry to mount the blob from `from` (a repository of
    /// the same registry): true if it did, false if an upload is needed.
    pub fn mount_blob(&self, digest: &Digest, from: &str) -> Result<bool> {
        let suffix = format!("blobs/uploads/?mount={digest}&from={from}");
        let resp = self.send("POST", Target::Suffix(&suffix), &[], None)?;
        match resp.status {
            201 => Ok(true),
            // Not mountable here: an upload was opened instead, left to
            // the registry to expire.
            202 => Ok(false),
            s => Err(self.error(format!("mounting blob {digest} from {from} answered {s}"))),
        }
    }

    /// Starts a chunked upload; write the blob into it, then `finish`.
    pub fn upload(&self) -> Result<Upload<'_>> {
        let resp = self.send("POST", Target::Suffix("blobs/uploads/"), &[], None)?;
        if resp.status != 202 {
            return Err(self.error(format!("starting an upload answered {}", resp.status)));
        }
        Ok(Upload {
            pusher: self,
            location: location(&resp, self)?,
            buffer: Vec::with_capacity(CHUNK),
            sent: 0,
        })
    }

    /// PUTs a small blob (a config) whole, unless it is there or can be
    /// mounted from `mount_from` (a repository of the same registry).
    pub fn put_small_blob(&self, data: &[u8], mount_from: Option<&str>) -> Result<Digest> {
        let digest = Digest::of_bytes(data);
        if self.has_blob(&digest)? {
            return Ok(digest);
        }
        if let Some(from) = mount_from.filter(|f| *f != self.repository) {
            if self.mount_blob(&digest, from)? {
                return Ok(digest);
            }
        }
        let mut up = self.upload()?;
        up.write_all(data).map_err(|e| self.error(e.to_string()))?;
        up.finish(&digest)?;
        Ok(digest)
    }

    /// PUTs the manifest under `reference` (a tag or its digest).
    pub fn put_manifest(&self, reference: &str, media_type: &str, data: &[u8]) -> Result<()> {
        let suffix = format!("manifests/{reference}");
        let headers = [("Content-Type", media_type.to_string())];
        let resp = self.send("PUT", Target::Suffix(&suffix), &headers, Some(data))?;
        let status = resp.status;
        if status != 201 {
            let said = resp
                .read_small(64 << 10, "the error", self.registry.name())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Err(self.error(format!(
                "PUT of the manifest answered {status}: {}",
                said.trim()
            )));
        }
        Ok(())
    }

    fn send(
        &self,
        method: &str,
        target: Target<'_>,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<super::transport::Response> {
        self.registry
            .send_for_push(method, &self.repository, target, headers, body)
    }

    fn error(&self, reason: String) -> Error {
        registry_error(
            self.registry.name(),
            format!("{}: {reason}", self.repository),
        )
    }
}

fn location(resp: &super::transport::Response, p: &Pusher) -> Result<String> {
    resp.header("Location")
        .map(str::to_string)
        .ok_or_else(|| p.error("an upload answer without a Location".into()))
}

/// A blob being uploaded: written in, sent a chunk at a time.
pub struct Upload<'a> {
    pusher: &'a Pusher,
    location: String,
    buffer: Vec<u8>,
    sent: u64,
}

impl Upload<'_> {
    fn send_chunk(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let end = self.sent + self.buffer.len() as u64 - 1;
        let headers = [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Range", format!("{}-{end}", self.sent)),
        ];
        let loc = self.location.clone();
        let resp = self.pusher.send(
            "PATCH",
            Target::Location(&loc),
            &headers,
            Some(&self.buffer),
        )?;
        if resp.status != 202 {
            return Err(self.pusher.error(format!(
                "uploading bytes {}-{end} answered {}",
                self.sent, resp.status
            )));
        }
        self.location = location(&resp, self.pusher)?;
        self.sent = end + 1;
        self.buffer.clear();
        Ok(())
    }

    /// Sends the rest and closes the upload as `digest`.
    pub fn finish(mut self, digest: &Digest) -> Result<()> {
        self.send_chunk()?;
        let sep = if self.location.contains('?') {
            '&'
        } else {
            '?'
        };
        let loc = format!("{}{sep}digest={digest}", self.location);
        let resp = self
            .pusher
            .send("PUT", Target::Location(&loc), &[], Some(&[]))?;
        if resp.status != 201 {
            return Err(self.pusher.error(format!(
                "closing the upload of {digest} answered {}",
                resp.status
            )));
        }
        Ok(())
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == CHUNK {
            self.send_chunk().map_err(io::Error::other)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
