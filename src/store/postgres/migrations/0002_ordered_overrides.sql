-- A cleared override stays as a row with no value (a tombstone), so that the latest change
-- of a route is always an upsert: a DELETE cannot see a row another writer inserted after
-- its snapshot, and would leave that row standing behind a newer clear.
ALTER TABLE overrides ALTER COLUMN value DROP NOT NULL;
