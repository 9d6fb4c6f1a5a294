-- Erasure receipts and erased tenants (see the Postgres migration of the
-- same number).
CREATE TABLE IF NOT EXISTS erasure_receipts (
    erasure_id       TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    component        TEXT NOT NULL,
    acknowledged_at  TEXT NOT NULL,
    detail           TEXT NOT NULL,
    PRIMARY KEY (erasure_id, component)
);

CREATE TABLE IF NOT EXISTS erased_tenants (
    user_id    TEXT PRIMARY KEY NOT NULL,
    erased_at  TEXT NOT NULL
);
