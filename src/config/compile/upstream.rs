//! `routes[].upstream`: backends, pools, health checks, timeouts, upstream TLS.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openssl::sha::Sha256;

use super::{At, Compiler};
use crate::config::raw::*;
use crate::policy::{Upstream, UpstreamTls};
use crate::tls::unix_time;
use crate::upstream::{Balance, HealthSpec, PassiveSpec, PoolSpec, Target, Timeouts};

impl Compiler<'_> {
    pub(super) fn upstream(&mut self, file: usize, base: &str, raw: &RawUpstream) -> Option<Upstream> {
        let before = self.problems.len();
        let mut targets = Vec::new();
        let resolve = |text: &str| {
            text.to_socket_addrs()
                .ok()
                .map(|a| a.collect::<Vec<_>>())
                .filter(|a| !a.is_empty())
        };
        if let Some(address) = &raw.address {
            match resolve(address) {
                Some(addrs) => targets.push(Target::Address {
                    addr: addrs[0],
                    weight: 1,
                }),
                None => {
                    let p = format!("{base}.address");
                    self.error(
                        &At { file, path: &p },
                        format!("{address:?} is not a reachable address (expected HOST:PORT)"),
                    );
                }
            }
        }
        for (i, b) in raw.backends.iter().enumerate() {
            let p = format!("{base}.backends[{i}]");
            match (resolve(&b.address), b.weight) {
                (_, Some(0)) => self.error(
                    &At { file, path: &p },
                    "weight 0 sends nothing (expected 1 or more; remove the backend instead)",
                ),
                (Some(addrs), w) => targets.push(Target::Address {
                    addr: addrs[0],
                    weight: w.unwrap_or(1),
                }),
                (None, _) => self.error(
                    &At { file, path: &p },
                    format!("{:?} is not a reachable address (expected HOST:PORT)", b.address),
                ),
            }
        }
        if let Some(dns) = &raw.dns {
            let p = format!("{base}.dns");
            let parsed = dns
                .rsplit_once(':')
                .and_then(|(h, port)| Some((h.to_string(), port.parse::<u16>().ok()?)));
            match (parsed, resolve(dns)) {
                (Some((host, port)), Some(resolved)) => targets.push(Target::Dns {
                    host,
                    port,
                    weight: 1,
                    resolved,
                }),
                (None, _) => self.error(&At { file, path: &p }, format!("{dns:?} is not HOST:PORT")),
                (Some(_), None) => self.error(&At { file, path: &p }, format!("{dns:?} does not resolve")),
            }
        }
        if targets.is_empty() && self.problems.len() == before {
            self.error(
                &At { file, path: base },
                "no backend (expected address, backends or dns)",
            );
        }
        let duration = |c: &mut Self, text: &Option<String>, field: &str, default: Duration| -> Duration {
            match text {
                None => default,
                Some(t) => match humantime::parse_duration(t) {
                    Ok(d) if !d.is_zero() => d,
                    _ => {
                        let p = format!("{base}.{field}");
                        c.error(
                            &At { file, path: &p },
                            format!("{t:?} is not a duration (expected e.g. 5s, 500ms)"),
                        );
                        default
                    }
                },
            }
        };
        let mut spec = PoolSpec::single(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        spec.targets = targets;
        spec.balance = raw.balance.unwrap_or(Balance::RoundRobin);
        spec.retries = raw.retries.unwrap_or(1).min(5);
        spec.dns_refresh = duration(self, &raw.dns_refresh, "dns_refresh", spec.dns_refresh);
        if let Some(t) = &raw.timeouts {
            let d = Timeouts::default();
            spec.timeouts = Timeouts {
                connect: duration(self, &t.connect, "timeouts.connect", d.connect),
                connect_total: duration(self, &t.connect_total, "timeouts.connect_total", d.connect_total),
                read: duration(self, &t.read, "timeouts.read", d.read),
                write: duration(self, &t.write, "timeouts.write", d.write),
            };
        }
        if let Some(pe) = &raw.passive_ejection {
            spec.passive = PassiveSpec {
                max_failures: pe.max_failures,
                ejection: duration(self, &pe.ejection, "passive_ejection.ejection", spec.passive.ejection),
            };
        }
        if let Some(h) = &raw.health_check {
            let http_path = match (h.kind.as_str(), &h.path) {
                ("tcp", None) => Some(None),
                ("http", Some(path)) if path.starts_with('/') => Some(Some(path.clone())),
                ("http", None) => Some(Some("/".to_string())),
                ("tcp", Some(_)) => {
                    let p = format!("{base}.health_check.path");
                    self.error(&At { file, path: &p }, "a tcp check has no path (use type: http)");
                    None
                }
                ("http", Some(path)) => {
                    let p = format!("{base}.health_check.path");
                    self.error(
                        &At { file, path: &p },
                        format!("{path:?} is not a path (expected e.g. /healthz)"),
                    );
                    None
                }
                (other, _) => {
                    let p = format!("{base}.health_check.type");
                    self.error(
                        &At { file, path: &p },
                        format!("{other:?} is not a check type (expected tcp or http)"),
                    );
                    None
                }
            };
            if let Some(http_path) = http_path {
                spec.health = Some(HealthSpec {
                    http_path,
                    interval: duration(self, &h.interval, "health_check.interval", Duration::from_secs(5)),
                    timeout: duration(self, &h.timeout, "health_check.timeout", Duration::from_secs(1)),
                    healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
                    unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
                });
            }
        }
        let tls = match &raw.tls {
            None => Some(None),
            Some(t) => self.upstream_tls(file, &format!("{base}.tls"), t).map(Some),
        };
        (self.problems.len() == before).then_some(())?;
        Some(Upstream { pool: spec, tls: tls? })
    }

    pub(super) fn upstream_tls(&mut self, file: usize, base: &str, raw: &RawUpstreamTls) -> Option<UpstreamTls> {
        let at = At { file, path: base };
        let sni = match raw.sni.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            _ => {
                let p = format!("{base}.sni");
                self.error(&At { file, path: &p }, "upstream TLS needs sni: the backend certificate is verified against it, and without it verification would be off");
                None
            }
        };
        let ca = match &raw.ca {
            Some(p) => {
                let path = format!("{base}.ca");
                self.ca_certificates(&At { file, path: &path }, p)
            }
            None => {
                self.error(
                    &at,
                    "upstream TLS needs ca: the CA that issued the backend's certificate",
                );
                None
            }
        };
        let mut sources: Vec<PathBuf> = raw.ca.iter().map(|p| self.resolve(&at, p)).collect();
        let (client_cert, client_cert_not_after) = match (&raw.client_cert, &raw.client_key) {
            (None, None) => (Some(None), None),
            (Some(cert), Some(key)) => {
                let cert_path = format!("{base}.client_cert");
                let key_path = format!("{base}.client_key");
                let chain = self.certificates(&At { file, path: &cert_path }, cert);
                let pkey = self.private_key(&At { file, path: &key_path }, key);
                sources.push(self.resolve(&at, cert));
                match (chain, pkey) {
                    (Some(chain), Some(pkey)) => {
                        if !chain[0].public_key().map(|p| p.public_eq(&pkey)).unwrap_or(false) {
                            self.error(
                                &At { file, path: &key_path },
                                format!(
                                    "key {:?} does not match certificate {:?}",
                                    key.display().to_string(),
                                    cert.display().to_string()
                                ),
                            );
                            (None, None)
                        } else {
                            let not_after = unix_time(chain[0].not_after());
                            (
                                Some(Some(Arc::new(pingora::utils::tls::CertKey::new(chain, pkey)))),
                                not_after,
                            )
                        }
                    }
                    _ => (None, None),
                }
            }
            _ => {
                self.error(&at, "client_cert and client_key go together (expected both or neither)");
                (None, None)
            }
        };
        let ca = ca?;
        let mut fingerprint = Sha256::new();
        for cert in &ca {
            fingerprint.update(&cert.to_der().unwrap_or_default());
        }
        let digest = fingerprint.finish();
        Some(UpstreamTls {
            sni: sni?,
            trust_key: u64::from_be_bytes(digest[..8].try_into().expect("8 of 32 bytes")),
            ca: Arc::new(ca.into_boxed_slice()),
            client_cert: client_cert?,
            client_cert_not_after,
            sources,
        })
    }
}
