-- Encryption at rest (issue 6 §1). Tenant content columns keep their names
-- and hold ciphertext (SQLite keeps a BLOB as given whatever the column's
-- declared type); `key_version` is the oldest data key version among a
-- row's sealed values, so the re-encryption job finds old rows by index.

-- A tenant's data keys: random, wrapped by its KEK, one row per version.
-- Retiring a version drops its wrapped key and keeps the row as a record.
CREATE TABLE tenant_data_keys (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    version     INTEGER NOT NULL CHECK (version > 0),
    key_wrapped BLOB,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER,
    PRIMARY KEY (tenant_id, version)
);

ALTER TABLE devices ADD COLUMN key_version INTEGER;
ALTER TABLE enrollment_tokens ADD COLUMN key_version INTEGER;
ALTER TABLE instructions ADD COLUMN key_version INTEGER;
ALTER TABLE device_events ADD COLUMN key_version INTEGER;
ALTER TABLE tenant_settings ADD COLUMN key_version INTEGER;
ALTER TABLE alarms ADD COLUMN key_version INTEGER;
-- The dedupe key, sealed; `dedupe_key` now holds its keyed blind index.
ALTER TABLE alarms ADD COLUMN dedupe_sealed BLOB;
ALTER TABLE alarm_history ADD COLUMN key_version INTEGER;
ALTER TABLE alarm_rules ADD COLUMN key_version INTEGER;
ALTER TABLE detector_state ADD COLUMN key_version INTEGER;
ALTER TABLE webhooks ADD COLUMN key_version INTEGER;
ALTER TABLE alarm_deliveries ADD COLUMN key_version INTEGER;
ALTER TABLE billing ADD COLUMN key_version INTEGER;
-- The key version a segment file was verified to be sealed under; NULL
-- until the re-encryption job has looked at it.
ALTER TABLE flow_segments ADD COLUMN key_version INTEGER;

CREATE INDEX instructions_key_version ON instructions(tenant_id, key_version);
CREATE INDEX device_events_key_version ON device_events(tenant_id, key_version);
CREATE INDEX alarms_key_version ON alarms(tenant_id, key_version);
CREATE INDEX alarm_history_key_version ON alarm_history(tenant_id, key_version);
CREATE INDEX alarm_deliveries_key_version ON alarm_deliveries(tenant_id, key_version);
CREATE INDEX flow_segments_key_version ON flow_segments(tenant_id, key_version);
