-- Remote actions (issue 7): a device's batches of one kind, newest first
-- (diagnostics bundles among a device's many flow batches).
CREATE INDEX batches_device_kind ON batches(tenant_id, device_id, kind, received_at);
