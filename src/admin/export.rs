//! Sorting and CSV export of recorded clients, and the certificates view.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::audit::{ClientRecord, Recorder, WATCH_DAYS};
use crate::policy::Snapshot;
use crate::tls::{describe, unix_time};

pub fn sort(clients: &mut [ClientRecord], by: Option<&str>, order: Option<&str>) -> Result<(), String> {
    let descending = match order {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(o) => return Err(format!("order {o:?} (expected asc or desc)")),
    };
    let not_after = |c: &ClientRecord| c.certificate.as_ref().map_or(i64::MAX, |c| c.not_after);
    match by.unwrap_or("count") {
        "count" => clients.sort_by_key(|c| c.count),
        "last_seen" => clients.sort_by_key(|c| c.last_seen),
        "first_seen" => clients.sort_by_key(|c| c.first_seen),
        "not_after" => clients.sort_by_key(not_after),
        "client" => clients.sort_by(|a, b| a.client.cmp(&b.client)),
        "reason" => clients.sort_by_key(|c| c.reason),
        other => {
            return Err(format!(
                "sort {other:?} (expected count, last_seen, first_seen, not_after, client or reason)"
            ))
        }
    }
    if descending {
        clients.reverse();
    }
    Ok(())
}

pub fn csv_response(route: &str, clients: &[ClientRecord]) -> Response {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "client",
        "issuer",
        "reason",
        "last_verdict",
        "count",
        "first_seen",
        "last_seen",
        "not_after",
        "serial",
        "sha256",
        "sources",
        "detail",
    ]);
    for c in clients {
        let cert = c.certificate.as_ref();
        let sources: Vec<String> = c.sources.iter().map(|s| s.to_string()).collect();
        let _ = w.write_record([
            c.client.clone(),
            cert.map(|c| c.issuer.clone()).unwrap_or_default(),
            c.reason.to_string(),
            c.last_verdict.label().to_string(),
            c.count.to_string(),
            rfc3339(c.first_seen),
            rfc3339(c.last_seen),
            cert.map(|c| rfc3339(c.not_after)).unwrap_or_default(),
            cert.map(|c| c.serial.clone()).unwrap_or_default(),
            cert.map(|c| c.sha256.clone()).unwrap_or_default(),
            sources.join(" "),
            c.detail.clone().unwrap_or_default(),
        ]);
    }
    let body = w.into_inner().unwrap_or_default();
    let filename: String = route
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}-rejections.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Client certificates seen that expire within 30 days, and the gateway's own
/// certificates with the days they have left.
pub fn certificates(snapshot: &Snapshot, recorder: &Recorder, now: i64) -> serde_json::Value {
    let days_left = |not_after: i64| (not_after - now).div_euclid(86_400);
    let clients: Vec<serde_json::Value> = recorder
        .read(|a| a.expiring.expiring_before(now + WATCH_DAYS * 86_400))
        .into_iter()
        .map(|c| {
            let mut v = serde_json::to_value(&c).unwrap_or_default();
            v["days_left"] = days_left(c.not_after).into();
            v["expired"] = (c.not_after <= now).into();
            v
        })
        .collect();
    let mut own = Vec::new();
    let mut push = |kind: &str, owner: String, cert: &openssl::x509::X509Ref, source: &std::path::Path| {
        let not_after = unix_time(cert.not_after()).unwrap_or(0);
        own.push(serde_json::json!({
            "kind": kind,
            "owner": owner,
            "certificate": describe(cert),
            "not_after": not_after,
            "days_left": days_left(not_after),
            "expired": not_after <= now,
            "source": source,
        }));
    };
    let config = &snapshot.config;
    for l in &config.listeners {
        for c in &l.certificates {
            push(
                "server",
                format!("listener {} ({})", l.name, c.hosts.join(", ")),
                &c.chain[0],
                &c.source,
            );
        }
    }
    for b in &config.bundles {
        let source = b.sources.first().cloned().unwrap_or_default();
        for a in b.anchors.anchors() {
            push("trust_anchor", format!("trust bundle {}", b.name), a, &source);
        }
        for i in b.anchors.intermediates() {
            push(
                "intermediate",
                format!("trust bundle {}", b.name),
                i,
                b.sources.get(1).unwrap_or(&source),
            );
        }
    }
    for r in &config.routes {
        if let Some(tls) = &r.upstream.tls {
            let source = tls.sources.first().cloned().unwrap_or_default();
            for ca in tls.ca.iter() {
                push("upstream_ca", format!("route {}", r.name), ca, &source);
            }
            if let Some(ck) = &tls.client_cert {
                push(
                    "upstream_client",
                    format!("route {}", r.name),
                    ck.leaf(),
                    tls.sources.last().unwrap_or(&source),
                );
            }
        }
    }
    own.sort_by_key(|v| v["not_after"].as_i64());
    let crls: Vec<serde_json::Value> = config
        .bundles
        .iter()
        .filter(|b| b.crl_stale == crate::policy::CrlStale::FailClosed)
        .flat_map(|b| {
            b.crl_next_updates.iter().map(move |(issuer, next)| {
                serde_json::json!({
                    "bundle": b.name,
                    "issuer": issuer,
                    "next_update": next,
                    "days_left": days_left(*next),
                    "stale": *next <= now,
                })
            })
        })
        .collect();
    let bundles: Vec<serde_json::Value> = config
        .bundles
        .iter()
        .filter(|b| b.crl_stale == crate::policy::CrlStale::FailClosed)
        .map(|b| {
            let relaxed: Vec<&str> = b.anchors.relaxed().checks().map(|c| c.as_str()).collect();
            serde_json::json!({
                "name": b.name,
                "anchors": b.anchors.anchors().len(),
                "intermediates": b.anchors.intermediates().len(),
                "checks_revocation": b.anchors.checks_revocation(),
                "max_chain_depth": b.anchors.max_depth(),
                "profile": if relaxed.is_empty() { "strict".to_string() } else { format!("strict, relaxing {}", relaxed.join(", ")) },
                "relaxed": relaxed,
            })
        })
        .collect();
    serde_json::json!({ "watch_days": WATCH_DAYS, "clients": clients, "gateway": own, "crls": crls, "bundles": bundles })
}
