//! A small HTTP client for the admin API, for CLI commands such as `phasegate rollback`.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Where the admin API is and how to authenticate.
pub struct AdminClient {
    authority: String,
    token: Option<String>,
}

impl AdminClient {
    /// `url` like `http://127.0.0.1:9901`.
    pub fn new(url: &str, token: Option<String>) -> Result<AdminClient, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("{url:?} is not a URL (expected e.g. http://127.0.0.1:9901)"))?;
        if uri.scheme_str().is_some_and(|s| s != "http") {
            return Err(format!("{url:?}: only http:// is supported for the admin API"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host (expected e.g. http://127.0.0.1:9901)"))?
            .to_string();
        Ok(AdminClient { authority, token })
    }

    /// Sends a request; returns the status and the JSON body.
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.authority))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("admin API: {e}"))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority);
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("admin API: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("admin API: {e}"))?
            .to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, json))
    }
}

impl AdminClient {
    /// [`AdminClient::call`] from synchronous code (the CLI).
    pub fn call_blocking(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(self.call(method, path, body))
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The admin token from a file or `PHASEGATE_ADMIN_TOKEN`.
pub fn read_token(file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(format!("token file {} is empty", path.display()));
        }
        return Ok(Some(token));
    }
    Ok(std::env::var("PHASEGATE_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// The message of an admin API error answer: its `error`, with the status.
pub fn api_error(status: u16, answer: &serde_json::Value) -> String {
    format!("{} ({status})", answer["error"].as_str().unwrap_or(&answer.to_string()))
}

/// `GET path` for a read-only command: the JSON of a 200, else what went wrong.
pub fn get_json(admin: &str, path: &str) -> Result<serde_json::Value, String> {
    match AdminClient::new(admin, None)?.call_blocking(http::Method::GET, path, None)? {
        (200, v) => Ok(v),
        (status, v) => Err(api_error(status, &v)),
    }
}
