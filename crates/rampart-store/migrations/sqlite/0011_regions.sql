-- Regions (issue 6 item 7): a tenant lives in exactly one region, the
-- region of the deployment whose store holds it. Tenants created before
-- regions existed belong to the deployment's region; 'default' is the
-- region of a deployment that names none (config `region`).
ALTER TABLE tenants ADD COLUMN region TEXT NOT NULL DEFAULT 'default';
