-- Erasure receipts: which parts of the system have acknowledged that a
-- tenant was erased. Written by each projection in the transaction (or
-- after the snapshot) that removed the tenant, and by the eraser that
-- destroyed its keys and objects; not a projection itself, so a rebuilt
-- generation does not lose them.
CREATE TABLE IF NOT EXISTS erasure_receipts (
    erasure_id       UUID NOT NULL,
    tenant_id        UUID NOT NULL,
    component        TEXT NOT NULL,
    acknowledged_at  TIMESTAMPTZ NOT NULL,
    detail           TEXT NOT NULL,
    PRIMARY KEY (erasure_id, component)
);

-- Tenants whose keys were destroyed: the vault makes no new key for them,
-- so a write racing the erasure cannot start a readable life again.
CREATE TABLE IF NOT EXISTS erased_tenants (
    user_id    UUID PRIMARY KEY,
    erased_at  TIMESTAMPTZ NOT NULL
);
