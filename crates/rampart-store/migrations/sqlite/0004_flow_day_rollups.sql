-- Day rollups: flow_segments.level gains 'd1' (a day's 1-hour rollups
-- merged, so a month is read from 30 files rather than 720). SQLite changes
-- a CHECK constraint only by rebuilding the table.

CREATE TABLE flow_segments_d1 (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    id             TEXT NOT NULL,
    level          TEXT NOT NULL CHECK (level IN ('raw', 'm1', 'h1', 'd1')),
    -- Hours since the epoch of the flow starts the segment holds: a segment
    -- never spans two partitions (a d1 segment: the first hour of its day).
    partition_hour INTEGER NOT NULL,
    -- Half-open [start_ms, end_ms) range of the flow starts it covers.
    start_ms       INTEGER NOT NULL,
    end_ms         INTEGER NOT NULL,
    rows           INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    blob_key       TEXT NOT NULL,
    -- 1 when a rollup kept only its top keys somewhere (answers approximate).
    cut            INTEGER NOT NULL DEFAULT 0,
    -- 1 when written by compaction (an hour's merged raw/m1, its h1, a d1).
    compacted      INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO flow_segments_d1 (tenant_id, id, level, partition_hour, start_ms, end_ms,
    rows, bytes, blob_key, cut, compacted, created_at)
    SELECT tenant_id, id, level, partition_hour, start_ms, end_ms,
    rows, bytes, blob_key, cut, compacted, created_at FROM flow_segments;
DROP TABLE flow_segments;
ALTER TABLE flow_segments_d1 RENAME TO flow_segments;
CREATE INDEX flow_segments_range ON flow_segments(tenant_id, level, start_ms);
