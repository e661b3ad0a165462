
ALTER TABLE root_filesystem_entries
    ADD COLUMN IF NOT EXISTS content_type TEXT NOT NULL DEFAULT 'application/octet-stream';
ALTER TABLE root_filesystem_entries ADD COLUMN IF NOT EXISTS kind TEXT;
ALTER TABLE root_filesystem_entries ADD COLUMN IF NOT EXISTS indexed JSONB NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE root_filesystem_entries ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0;
