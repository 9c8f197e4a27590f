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
use crate::upstream::{Balance, HealthProbe, HealthSpec, PassiveSpec, PoolSpec, Protocol, Target, Timeouts};

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
                stream_idle: duration(self, &t.stream_idle, "timeouts.stream_idle", d.stream_idle),
            };
        }
        if let Some(pe) = &raw.passive_ejection {
            spec.passive = PassiveSpec {
                max_failures: pe.max_failures,
                ejection: duration(self, &pe.ejection, "passive_ejection.ejection", spec.passive.ejection),
            };
        }
        if let Some(h) = &raw.health_check {
            if let Some(check) = self.health_probe(file, base, h) {
                spec.health = Some(HealthSpec {
                    check,
                    interval: duration(self, &h.interval, "health_check.interval", Duration::from_secs(5)),
                    timeout: duration(self, &h.timeout, "health_check.timeout", Duration::from_secs(1)),
                    healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
                    unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
                });
            }
        }
        spec.protocol = raw.protocol.unwrap_or_default();
        let needs_tls = matches!(spec.protocol, Protocol::H2 | Protocol::Auto);
        let p = format!("{base}.protocol");
        match (spec.protocol, raw.tls.is_some()) {
            (_, false) if needs_tls => {
                self.error(
                    &At { file, path: &p },
                    format!(
                    "protocol {} negotiates HTTP/2 by ALPN, which needs upstream tls (for cleartext HTTP/2 use h2c)",
                    serde_json::to_string(&spec.protocol).unwrap_or_default().trim_matches('"')
                ),
                )
            }
            (Protocol::H2c, true) => self.error(
                &At { file, path: &p },
                "h2c is cleartext HTTP/2; with upstream tls use h2 (or auto)",
            ),
            _ => {}
        }
        let grpc_check = spec
            .health
            .as_ref()
            .is_some_and(|h| matches!(h.check, HealthProbe::Grpc { .. }));
        if grpc_check && spec.protocol == Protocol::Http1 {
            let type_at = format!("{base}.health_check.type");
            self.error(
                &At { file, path: &type_at },
                "a grpc health check needs HTTP/2 to the backends (set protocol: h2c, h2 or auto)",
            );
        }
        let tls = match &raw.tls {
            None => Some(None),
            Some(t) => self.upstream_tls(file, &format!("{base}.tls"), t).map(Some),
        };
        (self.problems.len() == before).then_some(())?;
        Some(Upstream { pool: spec, tls: tls? })
    }

    /// What `health_check` asks of each backend; `None` after reporting why not.
    fn health_probe(&mut self, file: usize, base: &str, h: &RawHealthCheck) -> Option<HealthProbe> {
        let p = format!("{base}.health_check");
        let at = |field: &str| format!("{p}.{field}");
        let probe = match (h.kind.as_str(), &h.path, &h.service) {
            ("tcp", None, None) => HealthProbe::Tcp,
            ("http", None, None) => HealthProbe::Http { path: "/".into() },
            ("http", Some(path), None) if path.starts_with('/') => HealthProbe::Http { path: path.clone() },
            ("grpc", None, service) => HealthProbe::Grpc {
                service: service.clone().unwrap_or_default(),
            },
            ("http", Some(path), None) => {
                let path_at = at("path");
                self.error(
                    &At { file, path: &path_at },
                    format!("{path:?} is not a path (expected e.g. /healthz)"),
                );
                return None;
            }
            ("tcp" | "grpc", Some(_), _) => {
                let path_at = at("path");
                self.error(
                    &At { file, path: &path_at },
                    format!("a {} check has no path (use type: http)", h.kind),
                );
                return None;
            }
            ("tcp" | "http", _, Some(_)) => {
                let service_at = at("service");
                self.error(
                    &At {
                        file,
                        path: &service_at,
                    },
                    format!("a {} check has no service (use type: grpc)", h.kind),
                );
                return None;
            }
            (other, _, _) => {
                let type_at = at("type");
                self.error(
                    &At { file, path: &type_at },
                    format!("{other:?} is not a check type (expected tcp, http or grpc)"),
                );
                return None;
            }
        };
        Some(probe)
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
