//! A minimal Jolokia client: JMX as JSON over HTTP to the agent on localhost.
//!
//! One short HTTP/1.1 connection per call: it is loopback, and a fresh connection can
//! never be a stale pooled one left over from a database restart.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum JolokiaError {
    /// The agent does not answer: the JVM is not running (or hangs).
    #[error("jolokia at {addr} unreachable: {msg}")]
    Unreachable { addr: String, msg: String },
    #[error("jolokia call timed out after {0:?}")]
    Timeout(Duration),
    #[error("jolokia protocol error: {0}")]
    Protocol(String),
    /// The agent answered with an error for this request (e.g. the MBean is not
    /// registered yet, status 404).
    #[error("jolokia error {status} ({error_type}): {message}")]
    Remote {
        status: i64,
        error_type: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Jolokia {
    addr: String,
}

impl Jolokia {
    pub fn new(host: &str, port: u16) -> Self {
        Jolokia {
            addr: format!("{host}:{port}"),
        }
    }

    /// Sends several requests in one round trip; each gets its own result.
    pub async fn bulk(
        &self,
        requests: &[Value],
        timeout: Duration,
    ) -> Result<Vec<Result<Value, JolokiaError>>, JolokiaError> {
        let body = Value::Array(requests.to_vec());
        let reply = tokio::time::timeout(timeout, self.post(body))
            .await
            .map_err(|_| JolokiaError::Timeout(timeout))??;
        let Value::Array(items) = reply else {
            return Err(JolokiaError::Protocol("bulk reply is not an array".into()));
        };
        if items.len() != requests.len() {
            return Err(JolokiaError::Protocol(format!(
                "{} replies for {} requests",
                items.len(),
                requests.len()
            )));
        }
        Ok(items.into_iter().map(single).collect())
    }

    pub async fn read(
        &self,
        mbean: &str,
        attribute: &str,
        timeout: Duration,
    ) -> Result<Value, JolokiaError> {
        let req = json!({"type": "read", "mbean": mbean, "attribute": attribute});
        let reply = tokio::time::timeout(timeout, self.post(req))
            .await
            .map_err(|_| JolokiaError::Timeout(timeout))??;
        single(reply)
    }

    pub async fn exec(
        &self,
        mbean: &str,
        operation: &str,
        arguments: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value, JolokiaError> {
        let req =
            json!({"type": "exec", "mbean": mbean, "operation": operation, "arguments": arguments});
        let reply = tokio::time::timeout(timeout, self.post(req))
            .await
            .map_err(|_| JolokiaError::Timeout(timeout))??;
        single(reply)
    }

    async fn post(&self, body: Value) -> Result<Value, JolokiaError> {
        let unreachable = |msg: String| JolokiaError::Unreachable {
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
        let req = hyper::Request::post("/jolokia/")
            .header(hyper::header::HOST, self.addr.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| JolokiaError::Protocol(e.to_string()))?;
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
                return Err(JolokiaError::Protocol(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )));
            }
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| JolokiaError::Protocol(format!("invalid JSON: {e}")))
        }
        .await;
        conn.abort();
        result
    }
}

/// One reply of the agent: its `value` on status 200, else the error it carries.
fn single(reply: Value) -> Result<Value, JolokiaError> {
    let status = reply.get("status").and_then(Value::as_i64).unwrap_or(0);
    if status == 200 {
        return Ok(reply.get("value").cloned().unwrap_or(Value::Null));
    }
    Err(JolokiaError::Remote {
        status,
        error_type: reply
            .get("error_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        message: reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error message")
            .to_string(),
    })
}
