DROP TABLE IF EXISTS projection_offsets;
