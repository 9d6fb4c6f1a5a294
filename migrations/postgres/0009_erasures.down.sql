DROP TABLE IF EXISTS erased_tenants;
DROP TABLE IF EXISTS erasure_receipts;
