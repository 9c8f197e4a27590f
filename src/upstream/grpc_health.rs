//! The standard gRPC health check (`grpc.health.v1.Health/Check`) as a Pingora health
//! check: one unary call over the pool's own HTTP/2 connector, TLS and client certificate,
//! healthy when the backend answers grpc-status 0 and SERVING.

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector as HttpConnector;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;

const CHECK_PATH: &[u8] = b"/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// A health answer is a few bytes; anything longer is not one.
const MAX_ANSWER: usize = 4096;

pub struct GrpcHealthCheck {
    pub consecutive_success: usize,
    pub consecutive_failure: usize,
    /// Address, TLS and HTTP version; the address is replaced per backend.
    pub peer_template: HttpPeer,
    /// `:authority` of the check (the upstream SNI, else `localhost`).
    pub authority: String,
    /// The service asked about; empty asks about the server as a whole.
    pub service: String,
    connector: HttpConnector,
}

impl GrpcHealthCheck {
    pub fn new(peer_template: HttpPeer, authority: &str, service: &str) -> Self {
        GrpcHealthCheck {
            consecutive_success: 1,
            consecutive_failure: 1,
            peer_template,
            authority: authority.to_string(),
            service: service.to_string(),
            connector: HttpConnector::new(None),
        }
    }
}

fn unhealthy(why: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::Custom("unhealthy"), why.into())
}

#[async_trait]
impl HealthCheck for GrpcHealthCheck {
    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.consecutive_success
        } else {
            self.consecutive_failure
        }
    }

    async fn check(&self, target: &Backend) -> Result<()> {
        let mut peer = self.peer_template.clone();
        peer._address = target.addr.clone();
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        let HttpSession::H2(h2) = &mut session else {
            return Err(unhealthy("the backend did not negotiate HTTP/2, which gRPC needs"));
        };
        let mut req = RequestHeader::build("POST", CHECK_PATH, None)?;
        req.insert_header(http::header::HOST, self.authority.as_str())?;
        req.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
        req.insert_header(http::header::TE, "trailers")?;
        h2.write_request_header(Box::new(req), false)?;
        h2.write_request_body(request_message(&self.service), true).await?;
        h2.read_response_header().await?;
        let resp = h2.response_header().ok_or_else(|| unhealthy("no response header"))?;
        if resp.status != 200 {
            return Err(unhealthy(format!("HTTP status {}", resp.status)));
        }
        // a trailers-only answer carries grpc-status in the headers
        let mut status = resp.headers.get("grpc-status").cloned();
        let mut body = BytesMut::new();
        while let Some(chunk) = h2.read_response_body().await? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(unhealthy("health answer too long"));
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(trailers) = h2.read_trailers().await? {
            status = trailers.get("grpc-status").cloned().or(status);
        }
        match status.as_ref().map(|s| s.as_bytes()) {
            Some(b"0") => {}
            Some(code) => return Err(unhealthy(format!("grpc-status {}", String::from_utf8_lossy(code)))),
            None => return Err(unhealthy("no grpc-status")),
        }
        match serving_status(&body) {
            Some(SERVING) => Ok(()),
            Some(other) => Err(unhealthy(format!("serving status {other} (1 is SERVING)"))),
            None => Err(unhealthy("the answer is not a HealthCheckResponse")),
        }
    }
}

/// A length-prefixed gRPC message holding `HealthCheckRequest { service }`.
fn request_message(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// `HealthCheckResponse.status` of one uncompressed, length-prefixed message; the field
/// is absent (0, UNKNOWN) in an empty message.
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&[compressed, a, b, c, d], message) = framed.split_first_chunk::<5>()?;
    if compressed != 0 || u32::from_be_bytes([a, b, c, d]) as usize != message.len() {
        return None;
    }
    let mut rest = message;
    let mut status = 0;
    while !rest.is_empty() {
        let (key, after) = varint(rest)?;
        rest = after;
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (value, after) = varint(rest)?;
                status = value;
                rest = after;
            }
            (_, 0) => rest = varint(rest)?.1,
            (_, 2) => {
                let (len, after) = varint(rest)?;
                rest = after.get(len as usize..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_are_encoded_and_read_as_protobuf() {
        assert_eq!(&request_message("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(&request_message("pay")[..], [0, 0, 0, 0, 5, 0x0a, 3, b'p', b'a', b'y']);
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(serving_status(&[0, 0, 0, 0, 3, 0x08, 1]), None, "length mismatch");
        assert_eq!(serving_status(&[1, 0, 0, 0, 2, 0x08, 1]), None, "compressed");
        assert_eq!(serving_status(&[0, 0, 0]), None);
    }
}
