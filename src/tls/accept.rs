//! The listener side of the handshake: server certificate by SNI, an optional request for
//! a client certificate, and the capture of what the client presented.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use openssl::ssl::{NameType, SslMode, SslOptions, SslSessionCacheMode, SslVerifyMode};
use openssl::stack::Stack;
use openssl::x509::X509Name;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;

use super::connection::ConnectionTls;
use super::peer::{LeafCache, PeerCertificate};
use crate::audit::Recorder;
use crate::policy::{normalize_host, SharedSnapshot, Snapshot};

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
        let installed = ext::ssl_use_certificate(ssl, &cert.chain[0])
            .and_then(|_| cert.chain[1..].iter().try_for_each(|c| ext::ssl_add_chain_cert(ssl, c)))
            .and_then(|_| ext::ssl_use_private_key(ssl, &cert.key));
        if let Err(e) = installed {
            tracing::error!(listener = %self.listener, error = %e, "cannot install server certificate");
            return;
        }
        if snapshot.wants_client_cert(sni.as_deref()) {
            // Optional: the handshake never fails for want of a certificate; the route decides.
            ssl.set_verify(SslVerifyMode::PEER);
            if let Some(names) = acceptable_ca_names(&snapshot, sni.as_deref()) {
                ssl.set_client_ca_list(names);
            }
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

/// The subjects of the anchors the host's routes trust, so browsers and other clients that
/// hold several certificates offer the right one (stage 3: user and device certificates).
fn acceptable_ca_names(snapshot: &Snapshot, sni: Option<&str>) -> Option<Stack<X509Name>> {
    let config = &snapshot.config;
    let routes: Vec<usize> = match sni {
        Some(host) => config.table.routes_of_host(host).collect(),
        None => (0..config.routes.len()).collect(),
    };
    let mut bundles: Vec<usize> = routes.iter().filter_map(|&r| config.routes[r].trust).collect();
    bundles.sort_unstable();
    bundles.dedup();
    // more names than a CertificateRequest can carry would fail every handshake on the
    // host: send none (check and the admin page warn about it)
    let bytes: usize = bundles.iter().map(|&b| config.bundles[b].ca_name_bytes).sum();
    if bytes > crate::policy::MAX_CA_NAMES_BYTES {
        return None;
    }
    let mut names = Stack::new().ok()?;
    for b in bundles {
        for anchor in config.bundles[b].anchors.anchors() {
            names.push(anchor.subject_name().to_owned().ok()?).ok()?;
        }
    }
    Some(names)
}
