//! The Pingora proxy: glue between the handshake's evidence, the policy decision, the
//! audit record and the upstream. No business rules live here.

mod decide;
mod head_deadline;
mod headers;
mod in_flight;
mod refusal_page;
mod respond;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora_http::RequestHeader;

use crate::audit::{renewal_due, Recorder, RejectionEvent};
use crate::policy::{Mode, RefusalPage, Route, RouteId, SharedSnapshot, Snapshot, Verdict};
use crate::tls::{ConnectionTls, PeerCertificate};
use crate::upstream::Chosen;
pub use decide::{decide_request, RequestDecision};
pub use head_deadline::HeadDeadline;
use headers::carries_hop_by_hop_fields;
pub use headers::{prepare_upstream_request, strip_identity_headers};
pub use in_flight::{InFlight, InFlightGuard};
pub use respond::Refusal;
use respond::{respond, Answer};

/// A WebSocket close frame from the server (unmasked), status 1001 "going away".
const WEBSOCKET_CLOSE_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// Every backend of the pool is unhealthy, ejected or already tried: 503.
const NO_HEALTHY_UPSTREAM: ErrorType = ErrorType::Custom("no healthy upstream");

/// The proxy service. One per process; every listener shares it.
pub struct MtlsProxy {
    snapshot: SharedSnapshot,
    recorder: Recorder,
    instance: Arc<str>,
    next_request: AtomicU64,
    clock: fn() -> i64,
    in_flight: Arc<InFlight>,
}

/// Per-request state. The snapshot is loaded once, so the whole request — match, decision,
/// upstream — is decided by one configuration even if a reload lands meanwhile.
pub struct RequestCtx {
    request_id: u64,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<RouteId>,
    mode: Mode,
    verdict: Option<Verdict>,
    detail: Option<Arc<str>>,
    /// The path after normalization, when it differs from what the client sent.
    rewritten_path: Option<String>,
    xfcc: Option<http::HeaderValue>,
    peer: Option<Arc<crate::tls::PeerCertificate>>,
    /// The backend of the current attempt, and those already tried (retries).
    backend: Option<Chosen>,
    tried: Vec<std::net::SocketAddr>,
    /// An upgrade (WebSocket) or a gRPC call: waits on it use the stream idle timeout.
    streaming: bool,
    /// Pingora makes the context once the head is read and drops it when the request is done.
    _in_flight: InFlightGuard,
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl MtlsProxy {
    /// `in_flight` counts the requests being served, for a graceful stop.
    pub fn new(snapshot: SharedSnapshot, recorder: Recorder, instance: &str, in_flight: Arc<InFlight>) -> Self {
        MtlsProxy {
            snapshot,
            recorder,
            instance: instance.into(),
            next_request: AtomicU64::new(1),
            clock: unix_now,
            in_flight,
        }
    }

    fn request_id(&self, ctx: &RequestCtx) -> String {
        format!("{}-{:x}", self.instance, ctx.request_id)
    }

    /// A verified certificate inside the route's renewal window goes on the renewal list
    /// while the gateway can still name its holder.
    fn note_renewal(&self, conn: &ConnectionTls, route: &Route, peer: &Arc<PeerCertificate>, now: i64) {
        let due = peer
            .identity
            .as_ref()
            .is_ok_and(|id| renewal_due(id, route.renewal_window, now));
        if due && conn.first_renewal_note(&route.name) {
            self.recorder.renewal_due(route.name.clone(), peer.clone(), now);
        }
    }

    /// Answers in the backend's place, with the route's refusal page words over the listener's.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        snapshot: &Snapshot,
        route: Option<RouteId>,
        refusal: Refusal,
    ) -> Result<()> {
        let route = route.map(|r| &snapshot.config.routes[r]);
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let listener = snapshot.config.listener_at(local);
        let id = self.request_id(ctx);
        let answer = Answer {
            route: route.map(|r| &*r.name),
            request_id: &id,
            page: RefusalPage::words(route.map(|r| &r.refusal_page), listener.map(|l| &l.refusal_page)),
            at: (self.clock)(),
        };
        respond(session, refusal, &answer).await
    }
}

#[async_trait]
impl ProxyHttp for MtlsProxy {
    type CTX = RequestCtx;

    /// No HTTP modules: Pingora's default is a response compression module, switched off,
    /// that still ran its filters on every request. The gateway forwards bodies as the
    /// backend sent them.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: self.next_request.fetch_add(1, Ordering::Relaxed),
            snapshot: None,
            route: None,
            mode: Mode::Off,
            verdict: None,
            detail: None,
            rewritten_path: None,
            xfcc: None,
            peer: None,
            backend: None,
            tried: Vec::new(),
            streaming: false,
            _in_flight: self.in_flight.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // A request sent before the previous answer arrived is served after it, in order
        // (RFC 9112 §9.3.2), instead of turning the one in progress into a 400. Each goes
        // through this filter on its own; framing that two parties could read differently
        // already closes the connection (see decide::read_head).
        session.set_pipelining_enabled(true);
        let snapshot = self.snapshot.load_full();
        let conn: Option<&ConnectionTls> = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|ssl| ssl.extension.get::<ConnectionTls>());
        if let Some(conn) = conn {
            conn.head_read();
        }

        let now = (self.clock)();
        let source = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let decided = match decide_request(&snapshot, conn, session.req_header(), source, now) {
            Ok(d) => d,
            Err(refusal) => {
                self.refuse(session, ctx, &snapshot, None, refusal).await?;
                return Ok(true);
            }
        };
        ctx.xfcc = decided.forwarded_certificate(conn);
        let route = &snapshot.config.routes[decided.route];
        let (decision, detail) = (decided.decision, decided.detail);
        let verdict = decision.verdict;

        let peer = conn.and_then(|c| c.peer.clone());
        if let (true, Some(conn), Some(peer)) = (decided.identity_verified, conn, &peer) {
            self.note_renewal(conn, route, peer, now);
        }
        let grpc = respond::is_grpc(session.req_header());
        ctx.streaming = grpc || session.is_upgrade_req();
        // a gRPC method is named by its path: /package.Service/Method
        let grpc_method = || grpc.then(|| session.req_header().uri.path().trim_start_matches('/').into());
        if !verdict.is_clean_pass() {
            self.recorder.record(RejectionEvent {
                route: route.name.clone(),
                mode: decision.mode,
                verdict,
                detail: detail.clone(),
                peer: peer.clone(),
                source,
                at: now,
                grpc_method: grpc_method(),
            });
        }
        if let Some(shadow) = &decided.shadow {
            self.recorder.record_shadow(
                shadow.diff,
                RejectionEvent {
                    route: route.name.clone(),
                    mode: Mode::Enforce,
                    verdict: Verdict::Reject(shadow.reason),
                    detail: shadow.detail.clone(),
                    peer: peer.clone(),
                    source,
                    at: now,
                    grpc_method: grpc_method(),
                },
            );
        }
        ctx.route = Some(decided.route);
        ctx.mode = decision.mode;
        ctx.verdict = Some(verdict);
        ctx.detail = detail;
        ctx.rewritten_path = decided.rewritten_path;
        ctx.peer = peer;
        ctx.snapshot = Some(snapshot.clone());

        if let Verdict::Reject(reason) = verdict {
            self.refuse(session, ctx, &snapshot, ctx.route, Refusal::Forbidden(reason))
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let (Some(snapshot), Some(route)) = (&ctx.snapshot, ctx.route) else {
            return Error::e_explain(InternalError, "no route decided before upstream selection");
        };
        if let Some(previous) = ctx.backend.take() {
            // a retry: release the failed attempt and do not pick that backend again
            previous.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            ctx.tried.push(previous.addr);
        }
        let pool = snapshot.pool(route);
        let Some(chosen) = pool.select((self.clock)(), &ctx.tried) else {
            return Error::e_explain(
                NO_HEALTHY_UPSTREAM,
                "every backend is unhealthy, ejected or already tried",
            );
        };
        chosen.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        chosen.stats.requests.fetch_add(1, Ordering::Relaxed);
        let upstream = &snapshot.config.routes[route].upstream;
        let mut peer = match &upstream.tls {
            None => HttpPeer::new(chosen.addr, false, String::new()),
            Some(tls) => {
                let mut peer = HttpPeer::new(chosen.addr, true, tls.sni.clone());
                peer.options.ca = Some(tls.ca.clone());
                peer.options.verify_cert = true;
                peer.options.verify_hostname = true;
                peer.client_cert_key = tls.client_cert.clone();
                peer.group_key = tls.trust_key;
                peer
            }
        };
        let (max, min) = upstream.pool.protocol.http_versions();
        peer.options.set_http_version(max, min);
        let t = upstream.pool.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect_total);
        // an upgraded or streaming exchange may stay quiet far longer than a response takes
        let read = if ctx.streaming { t.stream_idle } else { t.read };
        peer.options.read_timeout = Some(read);
        peer.options.write_timeout = Some(t.write);
        // nothing to strip: the same request, without the standard policy's lookups
        // (see carries_hop_by_hop_fields)
        if !carries_hop_by_hop_fields(session.req_header()) {
            peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
        }
        ctx.backend = Some(chosen);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (Some(snapshot), Some(route), Some(chosen)) = (&ctx.snapshot, ctx.route, &ctx.backend) else {
            return e;
        };
        let pool = snapshot.pool(route);
        pool.connect_failed(chosen, (self.clock)());
        // Nothing was sent, so an idempotent request may go to another backend.
        let attempts = ctx.tried.len() + 1;
        let another = || {
            let mut tried = ctx.tried.clone();
            tried.push(chosen.addr);
            pool.select((self.clock)(), &tried).is_some()
        };
        // Without another backend to try, the client gets this failure (502/504), not 503.
        if attempts <= usize::from(pool.spec.retries) && session.req_header().method.is_idempotent() && another() {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(snapshot), Some(route), Some(chosen)) = (&ctx.snapshot, ctx.route, &ctx.backend) {
            snapshot.pool(route).connected(chosen);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        prepare_upstream_request(
            upstream_request,
            ctx.xfcc.take(),
            ctx.verdict,
            ctx.rewritten_path.take(),
        )
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let refusal = match e.etype() {
            t if *t == NO_HEALTHY_UPSTREAM => Refusal::NoHealthyUpstream,
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => Refusal::UpstreamTimeout,
            HTTPStatus(code) if *code < 500 => Refusal::ClientError(*code),
            _ if matches!(e.esource(), ErrorSource::Downstream) => Refusal::ClientError(400),
            _ => Refusal::UpstreamFailed,
        };
        let code = refusal.status();
        let client_gone = matches!(e.etype(), WriteError | ReadError | ConnectionClosed)
            && matches!(e.esource(), ErrorSource::Downstream);
        // Once the response has begun (an upgraded WebSocket, a gRPC stream mid-way), an
        // answer of our own would be bytes inside that stream: the connection just closes.
        let response_started = session.response_written().map(|r| r.status.as_u16());
        match response_started {
            None if !client_gone => {
                let snapshot = ctx.snapshot.clone().unwrap_or_else(|| self.snapshot.load_full());
                let _ = self.refuse(session, ctx, &snapshot, ctx.route, refusal).await;
            }
            // an upgraded WebSocket that went quiet (or lost its backend) ends with a close
            // frame the client understands: 1001, going away
            Some(101) if !client_gone => {
                let close = bytes::Bytes::from_static(&WEBSOCKET_CLOSE_GOING_AWAY);
                let _ = session.write_response_body(Some(close), true).await;
            }
            _ => {}
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(chosen) = ctx.backend.take() {
            chosen.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        let (Some(snapshot), Some(route), Some(verdict)) = (&ctx.snapshot, ctx.route, ctx.verdict) else {
            return;
        };
        // Clean passes are logged at debug: build nothing for a line nobody reads.
        let level_on = if verdict.is_clean_pass() {
            tracing::enabled!(target: "audit", tracing::Level::DEBUG)
        } else {
            tracing::enabled!(target: "audit", tracing::Level::INFO)
        };
        if !level_on {
            return;
        }
        let route = &snapshot.config.routes[route];
        let client = match ctx.peer.as_deref().map(|p| &p.identity) {
            Some(Ok(id)) => id.display_name(),
            Some(Err(_)) => "malformed-certificate".to_string(),
            None => "none".to_string(),
        };
        let source = session.client_addr().map(|a| a.to_string()).unwrap_or_default();
        let reason = verdict.reason().map_or("", |r| r.as_str());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if verdict.is_clean_pass() {
            tracing::debug!(target: "audit", instance = %self.instance, request.id = %self.request_id(ctx), route.name = %route.name, route.mode = %ctx.mode, client.id = %client, client.addr = %source, decision = verdict.label(), status);
        } else {
            tracing::info!(target: "audit", instance = %self.instance, request.id = %self.request_id(ctx), route.name = %route.name, route.mode = %ctx.mode, client.id = %client, client.addr = %source, decision = verdict.label(), reason, detail = ctx.detail.as_deref().unwrap_or(""), status);
        }
    }
}
