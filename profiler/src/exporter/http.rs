//! The HTTP front of `serve`: `/metrics` with content negotiation
//! (OpenMetrics or Prometheus text 0.0.4), on the recording's own tokio
//! runtime. A scrape is a request to the recording loop, which drains the
//! ring buffer and encodes; this side only carries bytes.

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::chunks::Chunks;
use super::Format;

/// One scrape, for the recording loop to answer.
pub struct ScrapeRequest {
    pub format: Format,
    pub reply: oneshot::Sender<Chunks>,
}

/// Accepts connections until the runtime ends.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<ScrapeRequest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of fds and the like: wait and go on serving.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, scrapes.clone()));
            // A client that hangs up mid-request is its own business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    scrapes: mpsc::Sender<ScrapeRequest>,
) -> Result<Response<Chunks>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n"));
    }
    match req.uri().path() {
        "/metrics" => {}
        "/" => {
            return Ok(plain(
                StatusCode::OK,
                "strata-prof: copy-on-write cost of overlayfs; metrics at /metrics\n",
            ))
        }
        _ => {
            return Ok(plain(
                StatusCode::NOT_FOUND,
                "not found; metrics are at /metrics\n",
            ))
        }
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = negotiate(accept);
    let (reply, body) = oneshot::channel();
    let answered = match scrapes.send(ScrapeRequest { format, reply }).await {
        Ok(()) => body.await.ok(),
        Err(_) => None,
    };
    Ok(match answered {
        Some(text) => Response::builder()
            .header(CONTENT_TYPE, format.content_type())
            .body(text)
            .expect("static headers are valid"),
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "strata-prof is stopping or could not read its probes\n",
        ),
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response<Chunks> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Chunks::from(text))
        .expect("static headers are valid")
}

/// The format an Accept header prefers: OpenMetrics where it is asked for
/// with a weight at least that of plain text, else text 0.0.4 (also for
/// no header, `*/*`, or anything unparsable).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "*/*" | "text/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_curl_gets_text() {
        // What Prometheus 2.42 sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(
            negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }
}
