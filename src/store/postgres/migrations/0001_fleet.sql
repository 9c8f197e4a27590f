-- The fleet's shared state. Every instance writes only rows keyed by its own id (so
-- instances never contend on a row); reads aggregate over instances.

CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    last_seen BIGINT NOT NULL
);

-- The truth about overrides: an append-only, versioned log ...
CREATE TABLE override_log (
    version BIGSERIAL PRIMARY KEY,
    route TEXT NOT NULL,
    value JSONB,                -- NULL clears the route's override
    instance TEXT NOT NULL,
    at BIGINT NOT NULL
);
-- ... and each route's current override, written in the same transaction.
CREATE TABLE overrides (
    route TEXT PRIMARY KEY,
    value JSONB NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE clients (
    instance TEXT NOT NULL,
    route TEXT NOT NULL,
    client TEXT NOT NULL,
    issuer TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT,
    last_verdict TEXT NOT NULL,
    last_mode TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    certificate JSONB,
    sources JSONB NOT NULL,
    grpc_method TEXT,
    PRIMARY KEY (route, client, issuer, reason, instance)
);
CREATE INDEX clients_last_seen ON clients (last_seen);

CREATE TABLE minutes (
    instance TEXT NOT NULL,
    route TEXT NOT NULL,
    minute BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    would_reject BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    shadow_requests BIGINT NOT NULL,
    shadow_newly_rejected BIGINT NOT NULL,
    shadow_newly_passed BIGINT NOT NULL,
    PRIMARY KEY (route, minute, instance)
);
CREATE INDEX minutes_minute ON minutes (minute);

-- Live counter totals per process (instance and start time), for fleet-wide automatic
-- rollback: sums over processes only grow.
CREATE TABLE route_totals (
    instance TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    route TEXT NOT NULL,
    requests BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (route, instance, started_at)
);

CREATE TABLE certificates (
    instance TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    client TEXT NOT NULL,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    handshakes BIGINT NOT NULL,
    PRIMARY KEY (sha256, instance)
);
