-- Flows: the spool processor's work queue, the flow segment index and the
-- per-tenant flow retention. Times of flows are unix milliseconds (flow
-- records carry ms); bookkeeping times stay unix seconds like the spine.

-- NULL until the batch's rows are in a committed flow segment. Batches of
-- kinds nobody processes keep NULL; the queue is always read by kind.
ALTER TABLE batches ADD COLUMN processed_at INTEGER;
CREATE INDEX batches_unprocessed ON batches(kind, received_at) WHERE processed_at IS NULL;

CREATE TABLE flow_segments (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    id             TEXT NOT NULL,
    level          TEXT NOT NULL CHECK (level IN ('raw', 'm1', 'h1')),
    -- Hours since the epoch of the flow starts the segment holds: a segment
    -- never spans two partitions.
    partition_hour INTEGER NOT NULL,
    -- Half-open [start_ms, end_ms) range of the flow starts it covers.
    start_ms       INTEGER NOT NULL,
    end_ms         INTEGER NOT NULL,
    rows           INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    blob_key       TEXT NOT NULL,
    -- 1 when a rollup kept only its top keys somewhere (answers approximate).
    cut            INTEGER NOT NULL DEFAULT 0,
    -- 1 when written by compaction (the hour's merged raw/m1 and its h1).
    compacted      INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX flow_segments_range ON flow_segments(tenant_id, level, start_ms);

-- Absent row: the defaults (30 days visible, 32 stored).
CREATE TABLE flow_retention (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants(id),
    visible_days INTEGER NOT NULL,
    stored_days  INTEGER NOT NULL
);
