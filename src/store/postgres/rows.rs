//! The store's SQL. An instance's rows are upserted with absolute values in bulk (`UNNEST`,
//! a statement per table: a publish cut short is completed by the next, as the values are
//! absolute), and an override change is logged, made current and announced (`pg_notify`)
//! in one statement, so one transaction.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::audit::SeenBy;
use crate::audit::{Bucket, CertificateSummary, ClientRecord, SeenCertificate, Totals};
use crate::policy::{Mode, Reason, Verdict};
use crate::store::{FleetPicture, InstanceBatch, InstanceInfo, OverrideChange, RouteTotals};

type Result<T> = std::result::Result<T, tokio_postgres::Error>;

pub async fn publish(client: &Client, me: &InstanceInfo, batch: &InstanceBatch) -> Result<()> {
    if !batch.records.is_empty() {
        let mut cols: [Vec<Option<String>>; 10] = Default::default();
        let (mut counts, mut first, mut last) = (Vec::new(), Vec::new(), Vec::new());
        for (route, r) in &batch.records {
            let values = [
                Some(route.to_string()),
                Some(r.client.clone()),
                Some(r.issuer()),
                Some(r.reason.as_str().to_string()),
                r.detail.clone(),
                Some(r.last_verdict.label().to_string()),
                Some(r.last_mode.as_str().to_string()),
                r.certificate.as_ref().and_then(|c| serde_json::to_string(c).ok()),
                Some(serde_json::to_string(&r.sources).unwrap_or_else(|_| "[]".into())),
                r.grpc_method.clone(),
            ];
            for (col, v) in cols.iter_mut().zip(values) {
                col.push(v);
            }
            counts.push(r.count as i64);
            first.push(r.first_seen);
            last.push(r.last_seen);
        }
        client
            .execute(
                "INSERT INTO clients (instance, route, client, issuer, reason, detail, last_verdict, last_mode,
                                      certificate, sources, grpc_method, count, first_seen, last_seen)
                 SELECT $1, route, client, issuer, reason, detail, verdict, mode, cert::jsonb, sources::jsonb, grpc,
                        count, first_seen, last_seen
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                             $9::text[], $10::text[], $11::text[], $12::int8[], $13::int8[], $14::int8[])
                      AS t(route, client, issuer, reason, detail, verdict, mode, cert, sources, grpc,
                           count, first_seen, last_seen)
                 ON CONFLICT (route, client, issuer, reason, instance) DO UPDATE SET
                    detail = excluded.detail, last_verdict = excluded.last_verdict, last_mode = excluded.last_mode,
                    certificate = excluded.certificate, sources = excluded.sources,
                    grpc_method = coalesce(excluded.grpc_method, clients.grpc_method),
                    count = excluded.count, first_seen = least(clients.first_seen, excluded.first_seen),
                    last_seen = greatest(clients.last_seen, excluded.last_seen)",
                &[
                    &me.id, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6], &cols[7], &cols[8],
                    &cols[9], &counts, &first, &last,
                ],
            )
            .await?;
    }
    if !batch.minutes.is_empty() {
        let mut routes = Vec::new();
        let mut cols: [Vec<i64>; 7] = Default::default();
        for (route, b) in &batch.minutes {
            routes.push(route.to_string());
            cols[0].push(b.minute);
            for (col, v) in cols[1..].iter_mut().zip(b.counts.as_columns()) {
                col.push(v);
            }
        }
        client
            .execute(
                "INSERT INTO minutes (instance, route, minute, requests, would_reject, rejected, shadow_requests,
                                      shadow_newly_rejected, shadow_newly_passed)
                 SELECT $1, * FROM UNNEST($2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
                                          $8::int8[], $9::int8[])
                 ON CONFLICT (route, minute, instance) DO UPDATE SET requests = excluded.requests,
                    would_reject = excluded.would_reject, rejected = excluded.rejected,
                    shadow_requests = excluded.shadow_requests, shadow_newly_rejected = excluded.shadow_newly_rejected,
                    shadow_newly_passed = excluded.shadow_newly_passed",
                &[
                    &me.id, &routes, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6],
                ],
            )
            .await?;
    }
    if !batch.route_totals.is_empty() {
        let routes: Vec<String> = batch.route_totals.iter().map(|(r, _, _)| r.to_string()).collect();
        let requests: Vec<i64> = batch.route_totals.iter().map(|(_, q, _)| *q as i64).collect();
        let rejected: Vec<i64> = batch.route_totals.iter().map(|(_, _, x)| *x as i64).collect();
        client
            .execute(
                "INSERT INTO route_totals (instance, started_at, route, requests, rejected, updated_at)
                 SELECT $1, $2, route, requests, rejected, $3
                 FROM UNNEST($4::text[], $5::int8[], $6::int8[]) AS t(route, requests, rejected)
                 ON CONFLICT (route, instance, started_at) DO UPDATE SET requests = excluded.requests,
                    rejected = excluded.rejected, updated_at = excluded.updated_at",
                &[
                    &me.id,
                    &me.started_at,
                    &crate::proxy::unix_now(),
                    &routes,
                    &requests,
                    &rejected,
                ],
            )
            .await?;
    }
    if !batch.certificates.is_empty() {
        let mut text: [Vec<String>; 5] = Default::default();
        let mut nums: [Vec<i64>; 4] = Default::default();
        for c in &batch.certificates {
            for (col, v) in text
                .iter_mut()
                .zip([&c.sha256, &c.client, &c.subject, &c.issuer, &c.serial])
            {
                col.push(v.clone());
            }
            for (col, v) in nums
                .iter_mut()
                .zip([c.not_after, c.first_seen, c.last_seen, c.handshakes as i64])
            {
                col.push(v);
            }
        }
        client
            .execute(
                "INSERT INTO certificates (instance, sha256, client, subject, issuer, serial, not_after, first_seen,
                                           last_seen, handshakes)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[],
                                          $8::int8[], $9::int8[], $10::int8[])
                 ON CONFLICT (sha256, instance) DO UPDATE SET last_seen = excluded.last_seen,
                    handshakes = excluded.handshakes",
                &[
                    &me.id, &text[0], &text[1], &text[2], &text[3], &text[4], &nums[0], &nums[1], &nums[2], &nums[3],
                ],
            )
            .await?;
    }
    Ok(())
}

pub async fn append_override(client: &Client, change: &OverrideChange) -> Result<u64> {
    let value = change.value.as_ref().and_then(|v| serde_json::to_string(v).ok());
    let row = client
        .query_one(
            // the version is taken under the log lock (held to the commit); a clear is an
            // upsert of no value, so the route's row always holds its latest change
            "WITH locked AS (SELECT pg_advisory_xact_lock($6)),
             logged AS (
                 INSERT INTO override_log (route, value, instance, at)
                 SELECT $1, $2::text::jsonb, $3, $4 FROM locked
                 RETURNING version),
             set_current AS (
                 INSERT INTO overrides (route, value, version)
                 SELECT $1, $2::text::jsonb, version FROM logged
                 ON CONFLICT (route) DO UPDATE SET value = excluded.value, version = excluded.version
                 WHERE overrides.version < excluded.version),
             announced AS (
                 SELECT pg_notify($5, version::text) FROM logged)
             SELECT version, (SELECT count(*) FROM announced) FROM logged",
            &[
                &change.route,
                &value,
                &change.instance,
                &change.at,
                &super::CHANNEL,
                &super::LOG_LOCK,
            ],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn change_of(
    version: i64,
    route: String,
    value: Option<serde_json::Value>,
    instance: String,
    at: i64,
) -> OverrideChange {
    OverrideChange {
        version: version as u64,
        route,
        value: value.and_then(|v| serde_json::from_value(v).ok()),
        instance,
        at,
    }
}

pub async fn overrides_since(client: &Client, version: u64) -> Result<Vec<OverrideChange>> {
    let rows = client
        .query(
            "SELECT version, route, value, instance, at FROM override_log WHERE version > $1 ORDER BY version",
            &[&(version as i64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| change_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

pub async fn current_overrides(client: &Client) -> Result<(u64, Vec<OverrideChange>)> {
    let top: i64 = client
        .query_one("SELECT coalesce(max(version), 0) FROM override_log", &[])
        .await?
        .get(0);
    let rows = client
        .query(
            "SELECT o.version, o.route, o.value, l.instance, l.at FROM overrides o
             JOIN override_log l ON l.version = o.version",
            &[],
        )
        .await?;
    Ok((
        top as u64,
        rows.into_iter()
            .map(|r| change_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect(),
    ))
}

pub async fn heartbeat(client: &Client, me: &InstanceInfo) -> Result<()> {
    client
        .execute(
            "INSERT INTO instances (id, version, started_at, generation, content_hash, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, started_at = excluded.started_at,
                generation = excluded.generation, content_hash = excluded.content_hash, last_seen = excluded.last_seen",
            &[
                &me.id,
                &me.version,
                &me.started_at,
                &(me.generation as i64),
                &me.content_hash,
                &me.last_seen,
            ],
        )
        .await?;
    Ok(())
}

pub async fn instances(client: &Client) -> Result<Vec<InstanceInfo>> {
    let rows = client
        .query(
            "SELECT id, version, started_at, generation, content_hash, last_seen FROM instances ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| InstanceInfo {
            id: r.get(0),
            version: r.get(1),
            started_at: r.get(2),
            generation: r.get::<_, i64>(3) as u64,
            content_hash: r.get(4),
            last_seen: r.get(5),
        })
        .collect())
}

/// Every instance's records, summed per (route, client, issuer, reason); the newest
/// instance's row gives the detail, verdict and certificate.
pub async fn picture(client: &Client, since: i64, minutes_since: i64) -> Result<FleetPicture> {
    let mut picture = FleetPicture::default();
    let rows = client
        .query(
            "SELECT route, client, reason,
                    (array_agg(detail ORDER BY last_seen DESC))[1],
                    (array_agg(last_verdict ORDER BY last_seen DESC))[1],
                    (array_agg(last_mode ORDER BY last_seen DESC))[1],
                    sum(count)::int8, min(first_seen), max(last_seen),
                    (array_agg(certificate::text ORDER BY last_seen DESC))[1],
                    jsonb_agg(sources), (array_agg(grpc_method ORDER BY last_seen DESC))[1],
                    array_agg(instance ORDER BY instance), array_agg(count ORDER BY instance),
                    array_agg(last_seen ORDER BY instance)
             FROM clients WHERE last_seen >= $1
             GROUP BY route, client, issuer, reason",
            &[&since],
        )
        .await?;
    for r in rows {
        let Some(reason) = Reason::from_code(r.get::<_, &str>(2)) else {
            continue;
        };
        let Some(last_verdict) = Verdict::from_label(r.get(4), Some(reason)) else {
            continue;
        };
        let Ok(last_mode) = r.get::<_, &str>(5).parse::<Mode>() else {
            continue;
        };
        let certificate: Option<CertificateSummary> = r
            .get::<_, Option<String>>(9)
            .and_then(|c| serde_json::from_str(&c).ok());
        let mut sources: Vec<std::net::IpAddr> = Vec::new();
        let all: serde_json::Value = r.get(10);
        for list in all.as_array().into_iter().flatten() {
            for ip in list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str()?.parse().ok())
            {
                if !sources.contains(&ip) && sources.len() < crate::audit::RECENT_SOURCES {
                    sources.push(ip);
                }
            }
        }
        let instances: Vec<String> = r.get(12);
        let counts: Vec<i64> = r.get(13);
        let last: Vec<i64> = r.get(14);
        let seen_by = instances
            .into_iter()
            .zip(counts)
            .zip(last)
            .map(|((instance, count), last_seen)| SeenBy {
                instance,
                count: count.max(0) as u64,
                last_seen,
            })
            .collect();
        picture.records.push((
            r.get(0),
            ClientRecord {
                client: r.get(1),
                reason,
                detail: r.get(3),
                last_verdict,
                last_mode,
                count: r.get::<_, i64>(6).max(0) as u64,
                first_seen: r.get(7),
                last_seen: r.get(8),
                certificate,
                sources,
                grpc_method: r.get(11),
                seen_by,
            },
        ));
    }
    let minute_since = minutes_since - minutes_since.rem_euclid(60);
    let rows = client
        .query(
            "SELECT route, minute, sum(requests)::int8, sum(would_reject)::int8, sum(rejected)::int8,
                    sum(shadow_requests)::int8, sum(shadow_newly_rejected)::int8, sum(shadow_newly_passed)::int8
             FROM minutes WHERE minute >= $1 GROUP BY route, minute ORDER BY route, minute",
            &[&minute_since],
        )
        .await?;
    for r in rows {
        let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
        picture.minutes.push((
            r.get(0),
            Bucket {
                minute: r.get(1),
                counts: Totals {
                    requests: n(2),
                    would_reject: n(3),
                    rejected: n(4),
                    shadow_requests: n(5),
                    shadow_newly_rejected: n(6),
                    shadow_newly_passed: n(7),
                },
            },
        ));
    }
    let rows = client
        .query(
            "SELECT sha256, (array_agg(client ORDER BY last_seen DESC))[1], (array_agg(subject))[1],
                    (array_agg(issuer))[1], (array_agg(serial))[1], max(not_after), min(first_seen),
                    max(last_seen), sum(handshakes)::int8
             FROM certificates WHERE last_seen >= $1 GROUP BY sha256",
            &[&since],
        )
        .await?;
    for r in rows {
        picture.certificates.push(SeenCertificate {
            sha256: r.get(0),
            client: r.get(1),
            subject: r.get(2),
            issuer: r.get(3),
            serial: r.get(4),
            not_after: r.get(5),
            first_seen: r.get(6),
            last_seen: r.get(7),
            handshakes: r.get::<_, i64>(8).max(0) as u64,
        });
    }
    Ok(picture)
}

pub async fn route_totals(client: &Client) -> Result<RouteTotals> {
    let rows = client
        .query(
            "SELECT route, sum(requests)::int8, sum(rejected)::int8 FROM route_totals GROUP BY route",
            &[],
        )
        .await?;
    let mut out = HashMap::new();
    for r in rows {
        out.insert(
            r.get(0),
            (r.get::<_, i64>(1).max(0) as u64, r.get::<_, i64>(2).max(0) as u64),
        );
    }
    Ok(out)
}

/// History past the retention goes; so do the totals of processes long gone and the log
/// entries that no current override or recent change needs.
pub async fn prune(client: &Client, before: i64) -> Result<()> {
    client
        .execute("DELETE FROM clients WHERE last_seen < $1", &[&before])
        .await?;
    client
        .execute("DELETE FROM minutes WHERE minute < $1", &[&before])
        .await?;
    client
        .execute("DELETE FROM certificates WHERE last_seen < $1", &[&before])
        .await?;
    client
        .execute(
            "DELETE FROM route_totals WHERE updated_at < $1",
            &[&(crate::proxy::unix_now() - 3600)],
        )
        .await?;
    client
        .execute(
            "DELETE FROM override_log l WHERE l.at < $1 AND NOT EXISTS (SELECT 1 FROM overrides o WHERE o.version = l.version)",
            &[&before],
        )
        .await?;
    client
        .execute("DELETE FROM instances WHERE last_seen < $1", &[&before])
        .await?;
    Ok(())
}
