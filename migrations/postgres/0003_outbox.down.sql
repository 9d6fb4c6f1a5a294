DROP TABLE IF EXISTS outbox_relay_lease;
DROP TABLE IF EXISTS outbox;
