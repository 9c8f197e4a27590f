//! The durable audit history: SQLite in the state directory. Only a dedicated writer thread
//! touches it; the aggregator hands it a batch of what changed once a second, so the
//! request path never waits on disk and `kill -9` loses at most the last second.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::certs::SeenCertificate;
use super::renewals::Renewal;
use super::series::Bucket;
use super::store::{CertificateSummary, ClientRecord};
use super::Totals;
use crate::policy::{Mode, Reason, Verdict};

const SCHEMA_VERSION: i64 = 2;

/// What changed since the last flush.
#[derive(Default)]
pub struct FlushBatch {
    pub records: Vec<(Arc<str>, ClientRecord)>,
    pub minutes: Vec<(Arc<str>, Bucket)>,
    pub certificates: Vec<SeenCertificate>,
    pub renewals: Vec<(Arc<str>, Renewal)>,
    /// Delete history older than this (Unix seconds), when set.
    pub prune_before: Option<i64>,
    /// Told once the batch is written (or failed): a graceful stop waits for it.
    pub done: Vec<mpsc::Sender<()>>,
}

impl FlushBatch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.minutes.is_empty()
            && self.certificates.is_empty()
            && self.renewals.is_empty()
            && self.prune_before.is_none()
    }

    /// Folds a batch that could not be handed over into this one.
    pub fn merge(&mut self, older: FlushBatch) {
        let mut records = older.records;
        records.append(&mut self.records);
        self.records = records;
        self.minutes.extend(older.minutes);
        self.certificates.extend(older.certificates);
        let mut renewals = older.renewals;
        renewals.append(&mut self.renewals);
        self.renewals = renewals;
        self.prune_before = self.prune_before.max(older.prune_before);
        self.done.extend(older.done);
    }
}

/// History read back at startup.
#[derive(Default)]
pub struct Loaded {
    pub records: Vec<(String, ClientRecord)>,
    pub minutes: Vec<(String, Bucket)>,
    pub certificates: Vec<SeenCertificate>,
    pub renewals: Vec<(String, Renewal)>,
}

/// Health of the durable store, shown by the admin API and counted in metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StoreStatus {
    pub path: Option<PathBuf>,
    pub flushes: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("audit store {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

impl StoreError {
    pub fn io(path: &Path, e: std::io::Error) -> StoreError {
        StoreError {
            path: path.to_path_buf(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        }
    }
}

pub struct AuditStore {
    conn: Connection,
    path: PathBuf,
}

impl AuditStore {
    pub fn open(path: &Path) -> Result<AuditStore, StoreError> {
        let err = |source| StoreError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(err)?;
        // One process owns its state directory. Exclusive locking, set before WAL, keeps
        // the WAL index in the heap instead of a memory-mapped `-shm` file: a mapped file
        // that cannot be extended (immutable, a full or failing disk) raises SIGBUS and
        // would take the gateway down; a failed write is only an error.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(err)?;
        conn.pragma_update(None, "mmap_size", 0).map_err(err)?;
        // WAL: a crash mid-write leaves the last committed batch intact.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS clients (
                route TEXT NOT NULL, client TEXT NOT NULL, issuer TEXT NOT NULL, reason TEXT NOT NULL,
                detail TEXT, last_verdict TEXT NOT NULL, last_mode TEXT NOT NULL, count INTEGER NOT NULL,
                first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, certificate TEXT, sources TEXT NOT NULL,
                grpc_method TEXT, PRIMARY KEY (route, client, issuer, reason));
             CREATE INDEX IF NOT EXISTS clients_last_seen ON clients (last_seen);
             CREATE TABLE IF NOT EXISTS minutes (
                route TEXT NOT NULL, minute INTEGER NOT NULL, requests INTEGER NOT NULL,
                would_reject INTEGER NOT NULL, rejected INTEGER NOT NULL,
                shadow_requests INTEGER NOT NULL DEFAULT 0, shadow_newly_rejected INTEGER NOT NULL DEFAULT 0,
                shadow_newly_passed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (route, minute));
             CREATE TABLE IF NOT EXISTS certificates (
                sha256 TEXT PRIMARY KEY, client TEXT NOT NULL, subject TEXT NOT NULL, issuer TEXT NOT NULL,
                serial TEXT NOT NULL, not_after INTEGER NOT NULL, first_seen INTEGER NOT NULL,
                last_seen INTEGER NOT NULL, handshakes INTEGER NOT NULL);
             -- a new table needs no schema step: older stores gain it here, older binaries ignore it
             CREATE TABLE IF NOT EXISTS exempt_clients (
                route TEXT NOT NULL, client TEXT NOT NULL, issuer TEXT NOT NULL, reason TEXT NOT NULL,
                detail TEXT, last_verdict TEXT NOT NULL, last_mode TEXT NOT NULL, count INTEGER NOT NULL,
                first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, certificate TEXT, sources TEXT NOT NULL,
                grpc_method TEXT, PRIMARY KEY (route, client, issuer, reason));
             CREATE TABLE IF NOT EXISTS renewals (
                route TEXT NOT NULL, sha256 TEXT NOT NULL, client TEXT NOT NULL, certificate TEXT NOT NULL,
                first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, PRIMARY KEY (route, sha256));",
        )
        .map_err(err)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        match version {
            None => {
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", [SCHEMA_VERSION])
                    .map_err(err)?;
            }
            Some(SCHEMA_VERSION) => {}
            // version 1 had no gRPC method per client
            Some(1) => {
                conn.execute_batch(
                    "ALTER TABLE clients ADD COLUMN grpc_method TEXT;
                     UPDATE meta SET value = 2 WHERE key = 'schema';",
                )
                .map_err(err)?;
            }
            Some(_) => return Err(err(rusqlite::Error::InvalidQuery)),
        }
        Ok(AuditStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// Everything seen since `since`; per-minute counts since `minutes_since`.
    pub fn load(&self, since: i64, minutes_since: i64) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        let mut stmt = self
            .conn
            .prepare(
                // exempt clients are kept apart from the would-be-rejected (older versions kept
                // both in `clients`); a client's verdict says which set it goes back to
                "SELECT route, client, reason, detail, last_verdict, last_mode, count, first_seen, last_seen,
                        certificate, sources, grpc_method, 0 AS newer FROM clients WHERE last_seen >= ?1
                 UNION ALL
                 SELECT route, client, reason, detail, last_verdict, last_mode, count, first_seen, last_seen,
                        certificate, sources, grpc_method, 1 FROM exempt_clients WHERE last_seen >= ?1
                 ORDER BY newer",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, Option<String>>(11)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (
                route,
                client,
                reason,
                detail,
                verdict,
                mode,
                count,
                first_seen,
                last_seen,
                cert,
                sources,
                grpc_method,
            ) = row.map_err(|e| self.err(e))?;
            // A row this version cannot read is skipped rather than failing the start.
            let Some(reason) = Reason::from_code(&reason) else {
                continue;
            };
            let Some(last_verdict) = Verdict::from_label(&verdict, Some(reason)) else {
                continue;
            };
            let Ok(last_mode) = mode.parse::<Mode>() else { continue };
            let certificate: Option<CertificateSummary> = cert.and_then(|c| serde_json::from_str(&c).ok());
            loaded.records.push((
                route,
                ClientRecord {
                    client,
                    reason,
                    detail,
                    last_verdict,
                    last_mode,
                    count: count.max(0) as u64,
                    first_seen,
                    last_seen,
                    certificate,
                    sources: serde_json::from_str(&sources).unwrap_or_default(),
                    grpc_method,
                    seen_by: Vec::new(),
                },
            ));
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT route, minute, requests, would_reject, rejected, shadow_requests, shadow_newly_rejected,
                        shadow_newly_passed FROM minutes WHERE minute >= ?1 ORDER BY minute",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([minutes_since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Bucket {
                        minute: r.get(1)?,
                        counts: Totals {
                            requests: count(r, 2)?,
                            would_reject: count(r, 3)?,
                            rejected: count(r, 4)?,
                            shadow_requests: count(r, 5)?,
                            shadow_newly_rejected: count(r, 6)?,
                            shadow_newly_passed: count(r, 7)?,
                        },
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            loaded.minutes.push(row.map_err(|e| self.err(e))?);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT client, subject, issuer, serial, sha256, not_after, first_seen, last_seen, handshakes
                 FROM certificates WHERE last_seen >= ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok(SeenCertificate {
                    client: r.get(0)?,
                    subject: r.get(1)?,
                    issuer: r.get(2)?,
                    serial: r.get(3)?,
                    sha256: r.get(4)?,
                    not_after: r.get(5)?,
                    first_seen: r.get(6)?,
                    last_seen: r.get(7)?,
                    handshakes: r.get::<_, i64>(8)?.max(0) as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            loaded.certificates.push(row.map_err(|e| self.err(e))?);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT route, client, certificate, first_seen, last_seen FROM renewals WHERE last_seen >= ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (route, client, certificate, first_seen, last_seen) = row.map_err(|e| self.err(e))?;
            // A row this version cannot read is skipped rather than failing the start.
            let Ok(certificate) = serde_json::from_str(&certificate) else {
                continue;
            };
            loaded.renewals.push((
                route,
                Renewal {
                    client,
                    certificate,
                    first_seen,
                    last_seen,
                },
            ));
        }
        Ok(loaded)
    }

    /// Writes one batch in one transaction.
    pub fn write(&mut self, batch: &FlushBatch) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|source| StoreError {
            path: self.path.clone(),
            source,
        })?;
        let result = (|| -> Result<(), rusqlite::Error> {
            {
                let upsert_into = |table: &str| {
                    tx.prepare_cached(&format!(
                        "INSERT INTO {table} (route, client, issuer, reason, detail, last_verdict, last_mode, count,
                                              first_seen, last_seen, certificate, sources, grpc_method)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                         ON CONFLICT (route, client, issuer, reason) DO UPDATE SET
                            detail = excluded.detail, last_verdict = excluded.last_verdict,
                            last_mode = excluded.last_mode, count = excluded.count,
                            first_seen = min(first_seen, excluded.first_seen), last_seen = excluded.last_seen,
                            certificate = excluded.certificate, sources = excluded.sources,
                            grpc_method = coalesce(excluded.grpc_method, grpc_method)"
                    ))
                };
                let (mut upsert, mut upsert_exempt) = (upsert_into("clients")?, upsert_into("exempt_clients")?);
                for (route, r) in &batch.records {
                    let issuer = r.certificate.as_ref().map(|c| c.issuer.clone()).unwrap_or_default();
                    let upsert = if matches!(r.last_verdict, Verdict::Exempt(_)) {
                        &mut upsert_exempt
                    } else {
                        &mut upsert
                    };
                    upsert.execute(params![
                        &**route,
                        r.client,
                        issuer,
                        r.reason.as_str(),
                        r.detail,
                        r.last_verdict.label(),
                        r.last_mode.as_str(),
                        r.count as i64,
                        r.first_seen,
                        r.last_seen,
                        r.certificate.as_ref().and_then(|c| serde_json::to_string(c).ok()),
                        serde_json::to_string(&r.sources).unwrap_or_else(|_| "[]".into()),
                        r.grpc_method,
                    ])?;
                }
                let mut add = tx.prepare_cached(
                    "INSERT INTO minutes (route, minute, requests, would_reject, rejected, shadow_requests,
                                          shadow_newly_rejected, shadow_newly_passed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (route, minute) DO UPDATE SET requests = requests + excluded.requests,
                        would_reject = would_reject + excluded.would_reject, rejected = rejected + excluded.rejected,
                        shadow_requests = shadow_requests + excluded.shadow_requests,
                        shadow_newly_rejected = shadow_newly_rejected + excluded.shadow_newly_rejected,
                        shadow_newly_passed = shadow_newly_passed + excluded.shadow_newly_passed",
                )?;
                for (route, b) in &batch.minutes {
                    let [requests, would_reject, rejected, shadow, newly_rejected, newly_passed] =
                        b.counts.as_columns();
                    add.execute(params![
                        &**route,
                        b.minute,
                        requests,
                        would_reject,
                        rejected,
                        shadow,
                        newly_rejected,
                        newly_passed
                    ])?;
                }
                let mut seen = tx.prepare_cached(
                    "INSERT INTO certificates (sha256, client, subject, issuer, serial, not_after, first_seen, last_seen, handshakes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (sha256) DO UPDATE SET last_seen = excluded.last_seen, handshakes = excluded.handshakes",
                )?;
                for c in &batch.certificates {
                    seen.execute(params![
                        c.sha256,
                        c.client,
                        c.subject,
                        c.issuer,
                        c.serial,
                        c.not_after,
                        c.first_seen,
                        c.last_seen,
                        c.handshakes as i64
                    ])?;
                }
                let mut due = tx.prepare_cached(
                    "INSERT INTO renewals (route, sha256, client, certificate, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (route, sha256) DO UPDATE SET last_seen = excluded.last_seen",
                )?;
                for (route, r) in &batch.renewals {
                    due.execute(params![
                        &**route,
                        r.certificate.sha256,
                        r.client,
                        serde_json::to_string(&r.certificate).unwrap_or_default(),
                        r.first_seen,
                        r.last_seen
                    ])?;
                }
            }
            if let Some(before) = batch.prune_before {
                tx.execute("DELETE FROM clients WHERE last_seen < ?1", [before])?;
                tx.execute("DELETE FROM exempt_clients WHERE last_seen < ?1", [before])?;
                tx.execute("DELETE FROM minutes WHERE minute < ?1", [before])?;
                tx.execute("DELETE FROM certificates WHERE last_seen < ?1", [before])?;
                tx.execute("DELETE FROM renewals WHERE last_seen < ?1", [before])?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => tx.commit(),
            Err(e) => Err(e),
        }
        .map_err(|source| StoreError {
            path: self.path.clone(),
            source,
        })
    }
}

fn count(row: &rusqlite::Row, i: usize) -> rusqlite::Result<u64> {
    Ok(row.get::<_, i64>(i)?.max(0) as u64)
}

/// The writer thread: the only owner of the database connection.
pub fn spawn_writer(
    mut store: AuditStore,
    status: Arc<Mutex<StoreStatus>>,
) -> std::io::Result<mpsc::SyncSender<FlushBatch>> {
    let (tx, rx) = mpsc::sync_channel::<FlushBatch>(4);
    std::thread::Builder::new().name("audit-store".into()).spawn(move || {
        for batch in rx {
            let result = store.write(&batch);
            batch.done.iter().for_each(|d| _ = d.send(()));
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    s.flushes += 1;
                    s.last_error = None;
                }
                Err(e) => {
                    // Serving goes on; the history in memory is intact and shown.
                    if s.last_error.is_none() {
                        tracing::error!(error = %e, "audit history not saved");
                    }
                    s.errors += 1;
                    s.last_error = Some(e.to_string());
                }
            }
        }
    })?;
    Ok(tx)
}
