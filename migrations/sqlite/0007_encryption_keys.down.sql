DROP TABLE IF EXISTS encryption_keys;
