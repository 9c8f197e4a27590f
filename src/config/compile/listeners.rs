//! `listeners`: addresses, server certificates by SNI, handshake timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{At, Compiler};
use crate::config::raw::*;
use crate::policy::{Listener, ServerCertificate};
use crate::tls::unix_time;

impl Compiler<'_> {
    pub(super) fn listeners(&mut self, files: &[RawFile]) -> Vec<Listener> {
        let mut listeners: Vec<Listener> = Vec::new();
        let mut any = false;
        for (file, raw) in files.iter().enumerate() {
            for (i, l) in raw.listeners.iter().enumerate() {
                any = true;
                let base = format!("listeners[{i}]");
                let at = At { file, path: &base };
                if listeners.iter().any(|x| x.name == l.name) {
                    self.error(&at, format!("listener name {:?} is used twice", l.name));
                }
                let addr_path = format!("{base}.address");
                let address = match l.address.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.error(
                            &At { file, path: &addr_path },
                            format!(
                                "{:?} is not an address (expected IP:PORT, e.g. 0.0.0.0:8443)",
                                l.address
                            ),
                        );
                        None
                    }
                };
                if let Some(a) = address {
                    if listeners.iter().any(|x| x.address == a) {
                        self.error(
                            &At { file, path: &addr_path },
                            format!("address {a} is used by another listener"),
                        );
                    }
                }
                let certs_path = format!("{base}.tls.certificates");
                if l.tls.certificates.is_empty() {
                    self.error(
                        &At {
                            file,
                            path: &certs_path,
                        },
                        "no server certificate (expected at least one)",
                    );
                }
                let mut certificates = Vec::new();
                for (j, c) in l.tls.certificates.iter().enumerate() {
                    let cert_base = format!("{certs_path}[{j}]");
                    if let Some(cert) = self.server_certificate(file, &cert_base, c) {
                        certificates.push(Arc::new(cert));
                    }
                }
                let handshake_timeout = self.bounded_duration(
                    file,
                    &format!("{base}.handshake_timeout"),
                    l.handshake_timeout.as_deref(),
                    (
                        Duration::from_secs(10),
                        Duration::from_millis(100),
                        Duration::from_secs(60),
                    ),
                );
                let request_header_timeout = self.bounded_duration(
                    file,
                    &format!("{base}.request_header_timeout"),
                    l.request_header_timeout.as_deref(),
                    (
                        Duration::from_secs(30),
                        Duration::from_millis(100),
                        Duration::from_secs(300),
                    ),
                );
                let refusal_page = self.refusal_page(file, &format!("{base}.refusal_page"), l.refusal_page.as_ref());
                if let (
                    Some(address),
                    false,
                    Some(handshake_timeout),
                    Some(request_header_timeout),
                    Some(refusal_page),
                ) = (
                    address,
                    certificates.is_empty(),
                    handshake_timeout,
                    request_header_timeout,
                    refusal_page,
                ) {
                    listeners.push(Listener {
                        name: l.name.clone(),
                        address,
                        certificates,
                        handshake_timeout,
                        request_header_timeout,
                        refusal_page,
                    });
                }
            }
        }
        if !any && !self.sources.is_empty() {
            self.error(
                &At { file: 0, path: "" },
                "no listener in any policy file (expected a listeners: section)",
            );
        }
        listeners
    }

    /// A duration given as text, `default` when absent; `None` after reporting one outside
    /// `min..=max`. `bounds` is (default, min, max).
    fn bounded_duration(
        &mut self,
        file: usize,
        path: &str,
        text: Option<&str>,
        (default, min, max): (Duration, Duration, Duration),
    ) -> Option<Duration> {
        let Some(text) = text else { return Some(default) };
        match humantime::parse_duration(text) {
            Ok(d) if d >= min && d <= max => Some(d),
            _ => {
                self.error(
                    &At { file, path },
                    format!(
                        "{text:?} is not a duration between {} and {} (expected e.g. {})",
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        humantime::format_duration(default)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn server_certificate(
        &mut self,
        file: usize,
        base: &str,
        raw: &RawServerCertificate,
    ) -> Option<ServerCertificate> {
        let hosts_path = format!("{base}.hosts");
        if raw.hosts.is_empty() {
            self.error(
                &At {
                    file,
                    path: &hosts_path,
                },
                "no host names (expected the names this certificate serves)",
            );
        }
        let cert_path = format!("{base}.cert");
        let key_path = format!("{base}.key");
        let chain = self.certificates(&At { file, path: &cert_path }, &raw.cert);
        let key = self.private_key(&At { file, path: &key_path }, &raw.key);
        let (chain, key) = (chain?, key?);
        let matches = chain[0].public_key().map(|p| p.public_eq(&key)).unwrap_or(false);
        if !matches {
            self.error(
                &At { file, path: &key_path },
                format!(
                    "key {:?} does not match certificate {:?}",
                    raw.key.display().to_string(),
                    raw.cert.display().to_string()
                ),
            );
            return None;
        }
        let source = self.resolve(&At { file, path: base }, &raw.cert);
        Some(ServerCertificate {
            hosts: raw.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            not_after: unix_time(chain[0].not_after()).unwrap_or(0),
            chain,
            key,
            source,
        })
    }
}
