
CREATE TABLE IF NOT EXISTS root_filesystem_events (
    id BIGSERIAL PRIMARY KEY, path TEXT NOT NULL CHECK (path LIKE '/%'), payload BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX IF NOT EXISTS idx_root_filesystem_events_path_id ON root_filesystem_events(path, id);
