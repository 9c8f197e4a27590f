//! The listener side of the handshake: server certificate by SNI, an optional request for
//! a client certificate, and the capture of what the client presented.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use std::collections::HashMap;

use openssl::error::ErrorStack;
use openssl::ssl::{
    AlpnError, NameType, SslAcceptor, SslContext, SslContextRef, SslMethod, SslMode, SslOptions, SslSessionCacheMode,
    SslVerifyMode,
};
use openssl::stack::Stack;
use openssl::x509::X509;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;

use super::connection::ConnectionTls;
use super::peer::{LeafCache, PeerCertificate};
use crate::audit::Recorder;
use crate::policy::{
    bundles_of, ca_names_bytes, normalize_host, BundleId, Route, RouteId, RouteTable, SharedSnapshot, TrustBundle,
    MAX_CA_NAMES_BYTES,
};

/// Handshake callbacks of one listener. They read the live snapshot, so server
/// certificates and certificate requests follow reloads and rollbacks.
pub struct HandshakeCallbacks {
    snapshot: SharedSnapshot,
    listener: String,
    recorder: Recorder,
    leaves: LeafCache,
}

impl HandshakeCallbacks {
    /// TLS settings for a listener: TLS 1.2+, HTTP/2 and HTTP/1.1, no renegotiation, and
    /// no session resumption. A resumed session would carry only the leaf (no chain) and
    /// the trust context of another connection; every connection verifies afresh instead.
    /// What OpenSSL reads from the context after the certificate callback switched it (see
    /// `request_context`) must be set there too.
    pub fn tls_settings(snapshot: SharedSnapshot, listener: &str, recorder: Recorder) -> pingora::Result<TlsSettings> {
        let callbacks = HandshakeCallbacks {
            snapshot,
            listener: listener.to_string(),
            recorder,
            leaves: LeafCache::default(),
        };
        let mut settings = TlsSettings::with_callbacks(Box::new(callbacks))?;
        settings.enable_h2();
        settings.set_options(SslOptions::NO_TICKET | SslOptions::NO_RENEGOTIATION);
        settings.set_session_cache_mode(SslSessionCacheMode::OFF);
        // An idle connection gives its ~34 KiB of TLS record buffers back (as nginx does).
        // Memory per idle connection: the listener reads unbuffered (see server.rs); OpenSSL
        // reads ahead into its own record buffer instead — as few syscalls as a 16 KiB
        // buffer — and gives that buffer (and the write buffer) back while the connection
        // is idle, as nginx does.
        settings.set_read_ahead(true);
        settings.set_mode(SslMode::RELEASE_BUFFERS);
        settings
            .set_num_tickets(0)
            .map_err(|e| pingora::Error::because(pingora::ErrorType::InternalError, "tls settings", e))?;
        super::ffi::defer_client_chain_verification(&mut settings);
        super::ffi::set_max_client_chain_bytes(&mut settings, MAX_CLIENT_CHAIN_BYTES);
        Ok(settings)
    }
}

/// The largest certificate chain a client may send: a few certificates fit many times
/// over; megabyte chains sent to exhaust memory or CPU fail the handshake.
pub const MAX_CLIENT_CHAIN_BYTES: usize = 32 * 1024;

/// Drops connections whose ClientHello does not arrive within the listener's
/// `handshake_timeout` (Pingora caps the whole handshake at 60 s), and anything that is
/// not TLS at all. The bytes read are put back for the handshake.
pub struct ClientHelloDeadline {
    pub snapshot: SharedSnapshot,
}

#[async_trait]
impl pingora::listeners::PreTlsProcess for ClientHelloDeadline {
    async fn process(&self, stream: &mut pingora::protocols::l4::stream::Stream) -> pingora::Result<()> {
        use pingora::protocols::GetSocketDigest;
        use tokio::io::AsyncReadExt;
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet().copied()));
        let timeout = self
            .snapshot
            .load()
            .config
            .listener_at(local)
            .map_or(std::time::Duration::from_secs(10), |l| l.handshake_timeout);
        let mut record = vec![0u8; 5];
        let read = async {
            stream.read_exact(&mut record).await?;
            // a TLS handshake record; anything else (plain HTTP, junk) is not for us
            if record[0] != 0x16 {
                return Err(std::io::Error::other("not a TLS handshake"));
            }
            let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
            if len > 16 * 1024 + 256 {
                return Err(std::io::Error::other("TLS record too long"));
            }
            record.resize(5 + len, 0);
            stream.read_exact(&mut record[5..]).await?;
            Ok(())
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(())) => {
                stream.rewind(&record);
                Ok(())
            }
            Ok(Err(e)) => pingora::Error::e_explain(pingora::ErrorType::HandshakeError, format!("before TLS: {e}")),
            Err(_) => pingora::Error::e_explain(
                pingora::ErrorType::HandshakeError,
                "no ClientHello within the handshake timeout",
            ),
        }
    }
}

#[async_trait]
impl TlsAccept for HandshakeCallbacks {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let snapshot = self.snapshot.load();
        let sni = ssl
            .servername(NameType::HOST_NAME)
            .map(|s| normalize_host(s).into_owned());
        let Some(listener) = snapshot.config.listener(&self.listener) else {
            return; // no certificate: the handshake fails, which is right for a listener gone
        };
        let cert = sni
            .as_deref()
            .and_then(|host| certificate_for(listener, host))
            .unwrap_or(&listener.certificates[0]);
        let wants_cert = snapshot.wants_client_cert(sni.as_deref());
        if wants_cert {
            // The host's CA names come with a context prebuilt for them. Switching replaces
            // the connection's certificate slot, so it comes before the certificate goes in.
            if let Some(context) = snapshot.config.certificate_requests.context(sni.as_deref()) {
                if let Err(e) = ssl.set_ssl_context(context) {
                    tracing::error!(listener = %self.listener, error = %e, "cannot switch to the host's CA names; sending none");
                }
            }
        }
        let installed = ext::ssl_use_certificate(ssl, &cert.chain[0])
            .and_then(|_| cert.chain[1..].iter().try_for_each(|c| ext::ssl_add_chain_cert(ssl, c)))
            .and_then(|_| ext::ssl_use_private_key(ssl, &cert.key));
        if let Err(e) = installed {
            tracing::error!(listener = %self.listener, error = %e, "cannot install server certificate");
            return;
        }
        if wants_cert {
            // Optional: the handshake never fails for want of a certificate; the route decides.
            ssl.set_verify(SslVerifyMode::PEER);
        }
    }

    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let sni = ssl
            .servername(NameType::HOST_NAME)
            .map(|s| normalize_host(s).into_owned().into_boxed_str());
        let requested = ssl.verify_mode().contains(SslVerifyMode::PEER);
        let peer = PeerCertificate::from_handshake(ssl, &self.leaves);
        self.recorder.handshakes().count(requested, peer.is_some());
        let header_timeout = self
            .snapshot
            .load()
            .config
            .listener(&self.listener)
            .map_or(std::time::Duration::from_secs(30), |l| l.request_header_timeout);
        let connection = ConnectionTls::new(sni, requested, peer).with_request_header_timeout(header_timeout);
        if let Some(peer) = &connection.peer {
            self.recorder.certificate_seen(peer, crate::proxy::unix_now());
        }
        Some(Arc::new(connection))
    }
}

fn certificate_for<'a>(
    listener: &'a crate::policy::Listener,
    host: &str,
) -> Option<&'a Arc<crate::policy::ServerCertificate>> {
    listener
        .certificates
        .iter()
        .find(|c| c.hosts.iter().any(|h| h == host))
        .or_else(|| {
            // `*.example` covers `api.example`
            let parent = host.split_once('.')?.1;
            listener
                .certificates
                .iter()
                .find(|c| c.hosts.iter().any(|h| h.strip_prefix("*.") == Some(parent)))
        })
}

/// What each host's CertificateRequest names, prebuilt once per config: one TLS context per
/// distinct set of CA names (the subjects of the anchors the host's routes trust), which a
/// handshake switches to instead of copying the names into every connection. Browsers and
/// other clients that hold several certificates offer the right one by them (stage 3: user
/// and device certificates); a bundle of a hundred CAs cost a hundred name copies per
/// handshake and tens of KiB per connection.
#[derive(Default)]
pub struct CertificateRequests {
    by_host: HashMap<Box<str>, usize>,
    /// Without SNI the request may go to any route.
    without_sni: Option<usize>,
    contexts: Vec<SslContext>,
}

impl CertificateRequests {
    pub fn build(bundles: &[TrustBundle], routes: &[Route], table: &RouteTable) -> CertificateRequests {
        let mut built = CertificateRequests::default();
        let mut by_bundles: HashMap<Vec<BundleId>, Option<usize>> = HashMap::new();
        let mut context_for = |routes_here: &mut dyn Iterator<Item = RouteId>| {
            *by_bundles.entry(bundles_of(routes, routes_here)).or_insert_with_key(|used| {
                // more names than a CertificateRequest can carry would fail every handshake
                // on the host: send none (check and the admin page warn about it)
                if used.is_empty() || ca_names_bytes(bundles, used) > MAX_CA_NAMES_BYTES {
                    return None;
                }
                let anchors = used.iter().flat_map(|&b| bundles[b].anchors.anchors());
                match request_context(anchors) {
                    Ok(context) => {
                        built.contexts.push(context);
                        Some(built.contexts.len() - 1)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the context for a CertificateRequest's CA names; sending none");
                        None
                    }
                }
            })
        };
        let mut by_host = HashMap::new();
        for host in table.hosts() {
            if let Some(i) = context_for(&mut table.routes_of_host(host)) {
                by_host.insert(host.into(), i);
            }
        }
        let without_sni = context_for(&mut (0..routes.len()));
        built.by_host = by_host;
        built.without_sni = without_sni;
        built
    }

    /// The context holding the CA names for a handshake with this SNI, if it names any.
    pub fn context(&self, sni: Option<&str>) -> Option<&SslContextRef> {
        let i = match sni {
            Some(host) => *self.by_host.get(host)?,
            None => self.without_sni?,
        };
        self.contexts.get(i).map(|c| &**c)
    }
}

/// A context like the listener's own (Pingora's Mozilla intermediate settings) for what
/// OpenSSL reads from the context after the switch: the deferred chain verification, DH
/// parameters and, for TLS 1.2, the ALPN choice; and the CA names. Versions, ciphers,
/// groups, options, buffers and the chain size limit stay with the connection.
fn request_context<'a>(anchors: impl Iterator<Item = &'a X509>) -> Result<SslContext, ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    super::ffi::defer_client_chain_verification(&mut builder);
    builder.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", offered).ok_or(AlpnError::NOACK)
    });
    let mut names = Stack::new()?;
    for anchor in anchors {
        names.push(anchor.subject_name().to_owned()?)?;
    }
    builder.set_client_ca_list(names);
    Ok(builder.build().into_context())
}
