ALTER TABLE root_filesystem_entries ALTER COLUMN path TYPE TEXT COLLATE "C";
ALTER TABLE root_filesystem_events ALTER COLUMN path TYPE TEXT COLLATE "C";