//! A scrape's text as a queue of shared chunks, and the HTTP body that
//! sends them. With every label set filled a scrape is ~8.6 MB, almost all
//! of it series that did not change (see exporter::duration): each keeps
//! its encoded lines as one `Bytes`, so a scrape hands out references to
//! them instead of copying them into one fresh string (a new 9 MB buffer
//! is ~2,100 page faults, which under load cost more than the encoding).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};

#[derive(Debug, Default)]
pub struct Chunks {
    queue: VecDeque<Bytes>,
    len: u64,
}

impl Chunks {
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len() as u64;
            self.queue.push_back(chunk);
        }
    }

    /// The whole text's length in bytes (the response's Content-Length).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text in one string: for tests and tools, not for serving.
    pub fn to_text(&self) -> String {
        let mut text = Vec::with_capacity(self.len as usize);
        for c in &self.queue {
            text.extend_from_slice(c);
        }
        // Every chunk is a whole encoded line (or several) of a String.
        String::from_utf8(text).expect("scrape chunks are UTF-8")
    }
}

impl From<&'static str> for Chunks {
    fn from(text: &'static str) -> Chunks {
        let mut c = Chunks::default();
        c.push(Bytes::from_static(text.as_bytes()));
        c
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = this.queue.pop_front().map(|chunk| {
            this.len -= chunk.len() as u64;
            Ok(Frame::data(chunk))
        });
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.queue.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body sends every byte once, in order, and its Content-Length
    /// is exactly what it sends.
    #[test]
    fn the_body_sends_exactly_its_text() {
        let mut chunks = Chunks::default();
        for part in ["# HELP a\n", "", "a_total 1\n", "b_total 2\n"] {
            chunks.push(Bytes::from(part.to_string()));
        }
        let text = chunks.to_text();
        assert_eq!(text, "# HELP a\na_total 1\nb_total 2\n");
        assert_eq!(chunks.size_hint().exact(), Some(text.len() as u64));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut sent = Vec::new();
        let mut body = Pin::new(&mut chunks);
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            let data = frame.unwrap().into_data().unwrap();
            sent.extend_from_slice(&data);
            assert_eq!(
                body.size_hint().exact(),
                Some((text.len() - sent.len()) as u64)
            );
        }
        assert!(body.is_end_stream());
        assert_eq!(sent, text.as_bytes());
    }
}
