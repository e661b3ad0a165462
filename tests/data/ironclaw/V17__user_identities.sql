
CREATE TABLE user_identities (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL, provider_user_id TEXT NOT NULL, email TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT false, display_name TEXT, avatar_url TEXT,
    raw_profile JSONB NOT NULL DEFAULT '{}', created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), UNIQUE (provider, provider_user_id));
CREATE INDEX idx_user_identities_user ON user_identities(user_id);
CREATE INDEX idx_user_identities_email ON user_identities(email) WHERE email IS NOT NULL;
