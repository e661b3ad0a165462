
ALTER TABLE routines ALTER COLUMN notify_user DROP NOT NULL, ALTER COLUMN notify_user DROP DEFAULT;
UPDATE routines SET notify_user = NULL WHERE notify_user = 'default';
