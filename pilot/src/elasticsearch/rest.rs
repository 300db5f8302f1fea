//! A minimal Elasticsearch REST client: JSON over plain HTTP/1.1 to the node's own HTTP
//! port (loopback in a pod).
//!
//! One short connection per call, as the Jolokia client: it is local, and a fresh
//! connection can never be a stale pooled one left over from a restart of Elasticsearch.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Nothing answers on the HTTP port: Elasticsearch is not running (or hangs).
    #[error("Elasticsearch at {addr} unreachable: {msg}")]
    Unreachable { addr: String, msg: String },
    #[error("Elasticsearch call timed out after {0:?}")]
    Timeout(Duration),
    #[error("Elasticsearch answered {status} to {what}: {body}")]
    Http {
        status: u16,
        what: String,
        body: String,
    },
    #[error("Elasticsearch answer to {what} is not JSON: {msg}")]
    Protocol { what: String, msg: String },
}

impl RestError {
    /// True when the process did not answer at all (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RestError::Unreachable { .. } | RestError::Timeout(_))
    }

    /// A client error (4xx): the request itself is wrong, asking again will not help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, RestError::Http { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

#[derive(Debug, Clone)]
pub struct Rest {
    addr: String,
}

impl Rest {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Rest {
            addr: addr.to_string(),
        }
    }

    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Value, RestError> {
        self.call(Method::GET, path, None, timeout).await
    }

    pub async fn put(
        &self,
        path: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, RestError> {
        self.call(Method::PUT, path, Some(body), timeout).await
    }

    pub async fn post(&self, path: &str, timeout: Duration) -> Result<Value, RestError> {
        self.call(Method::POST, path, None, timeout).await
    }

    pub async fn delete(&self, path: &str, timeout: Duration) -> Result<Value, RestError> {
        self.call(Method::DELETE, path, None, timeout).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, RestError> {
        let what = format!("{method} {path}");
        tokio::time::timeout(timeout, self.send(method, path, body, what))
            .await
            .map_err(|_| RestError::Timeout(timeout))?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: String,
    ) -> Result<Value, RestError> {
        let unreachable = |msg: String| RestError::Unreachable {
            addr: self.addr.clone(),
            msg,
        };
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| RestError::Protocol {
                what: what.clone(),
                msg: e.to_string(),
            })?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes);
                return Err(RestError::Http {
                    status: status.as_u16(),
                    what: what.clone(),
                    body: text.chars().take(600).collect(),
                });
            }
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice::<Value>(&bytes).map_err(|e| RestError::Protocol {
                what: what.clone(),
                msg: e.to_string(),
            })
        }
        .await;
        conn.abort();
        result
    }
}

/// Percent-encodes a query parameter value (node names are DNS labels, but a name from the
/// caller is never trusted to be one).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("es-0.pool_a"), "es-0.pool_a");
        assert_eq!(encode("a,b c&"), "a%2Cb%20c%26");
    }

    #[test]
    fn client_errors_are_refusals_but_not_timeouts() {
        let http = |status| RestError::Http {
            status,
            what: "GET /".into(),
            body: String::new(),
        };
        assert!(http(400).is_refusal());
        assert!(!http(429).is_refusal());
        assert!(!http(503).is_refusal());
        assert!(!http(503).is_unreachable());
        assert!(RestError::Timeout(Duration::from_secs(1)).is_unreachable());
    }
}
