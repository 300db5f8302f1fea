//! A minimal HTTP/1.1 client for Elasticsearch's REST API on a pod IP (the host routes to pod
//! IPs): enough for the tests' index, bulk, count and settings calls, with no client library.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request; returns the status code and the JSON body (`Value::Null` when empty).
pub async fn call(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let request = async {
        let mut stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connect {address}"))?;
        let body = body.unwrap_or("");
        let content_type = if path.contains("_bulk") {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse(&raw)
    };
    tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .with_context(|| format!("{method} {path} timed out"))?
}

fn parse(raw: &[u8]) -> anyhow::Result<(u16, Value)> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP response: {text}");
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).with_context(|| format!("JSON body: {body}"))?
    };
    Ok((status, json))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A request that must answer 2xx.
pub async fn ok(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Value> {
    let (status, json) = call(address, method, path, body).await?;
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered {status}: {json}");
    }
    Ok(json)
}
