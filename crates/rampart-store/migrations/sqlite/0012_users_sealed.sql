-- Users' content sealed at rest (issue 6 §1 for the tables of 0009). A
-- tenant user's `email` and `password_hash` hold ciphertext under the
-- tenant's data key (see `rampart_store::cipher::SEALED`); `email_index` is
-- the email's keyed blind index, so login and uniqueness still find it.
-- MSP operator users (tenant_id NULL) belong to no tenant and stay clear:
-- their `email_index` is NULL and `users_portal_email` still applies.
-- There was no production data, so no row needs converting.
ALTER TABLE users ADD COLUMN email_index TEXT;
ALTER TABLE users ADD COLUMN key_version INTEGER;

-- Ciphertext has a random nonce: uniqueness moves to the blind index.
DROP INDEX users_tenant_email;
CREATE UNIQUE INDEX users_tenant_email_index ON users(tenant_id, email_index)
    WHERE tenant_id IS NOT NULL AND offboarded_at IS NULL;
CREATE INDEX users_key_version ON users(tenant_id, key_version);
