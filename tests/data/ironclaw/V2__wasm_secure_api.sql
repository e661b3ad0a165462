
CREATE TABLE secrets (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), user_id TEXT NOT NULL, name TEXT NOT NULL,
    encrypted_value BYTEA NOT NULL, key_salt BYTEA NOT NULL, provider TEXT, expires_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ, usage_count BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT unique_secret_per_user UNIQUE (user_id, name));
CREATE INDEX idx_secrets_user ON secrets(user_id);
CREATE INDEX idx_secrets_provider ON secrets(provider) WHERE provider IS NOT NULL;
CREATE INDEX idx_secrets_expires ON secrets(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE wasm_tools (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), user_id TEXT NOT NULL, name TEXT NOT NULL,
    version TEXT NOT NULL DEFAULT '1.0.0', description TEXT NOT NULL, wasm_binary BYTEA NOT NULL,
    binary_hash BYTEA NOT NULL, parameters_schema JSONB NOT NULL, source_url TEXT,
    trust_level TEXT NOT NULL DEFAULT 'user', status TEXT NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT unique_wasm_tool_version UNIQUE (user_id, name, version));
CREATE INDEX idx_wasm_tools_user ON wasm_tools(user_id);
CREATE INDEX idx_wasm_tools_name ON wasm_tools(user_id, name);
CREATE INDEX idx_wasm_tools_status ON wasm_tools(status);
CREATE INDEX idx_wasm_tools_trust ON wasm_tools(trust_level);
CREATE TABLE tool_capabilities (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    wasm_tool_id UUID NOT NULL REFERENCES wasm_tools(id) ON DELETE CASCADE,
    http_allowlist JSONB NOT NULL DEFAULT '[]', allowed_secrets TEXT[] NOT NULL DEFAULT '{}',
    tool_aliases JSONB NOT NULL DEFAULT '{}', requests_per_minute INT NOT NULL DEFAULT 60,
    requests_per_hour INT NOT NULL DEFAULT 1000, max_request_body_bytes BIGINT NOT NULL DEFAULT 1048576,
    max_response_body_bytes BIGINT NOT NULL DEFAULT 10485760, workspace_read_prefixes TEXT[] NOT NULL DEFAULT '{}',
    http_timeout_secs INT NOT NULL DEFAULT 30,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT unique_capabilities_per_tool UNIQUE (wasm_tool_id));
CREATE INDEX idx_tool_capabilities_tool ON tool_capabilities(wasm_tool_id);
CREATE TABLE leak_detection_patterns (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), name TEXT NOT NULL UNIQUE, pattern TEXT NOT NULL,
    severity TEXT NOT NULL DEFAULT 'high', action TEXT NOT NULL DEFAULT 'block',
    enabled BOOLEAN NOT NULL DEFAULT true, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX idx_leak_patterns_enabled ON leak_detection_patterns(enabled) WHERE enabled = true;
CREATE TABLE tool_rate_limit_state (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    wasm_tool_id UUID NOT NULL REFERENCES wasm_tools(id) ON DELETE CASCADE, user_id TEXT NOT NULL,
    minute_window_start TIMESTAMPTZ NOT NULL DEFAULT NOW(), minute_count INT NOT NULL DEFAULT 0,
    hour_window_start TIMESTAMPTZ NOT NULL DEFAULT NOW(), hour_count INT NOT NULL DEFAULT 0,
    CONSTRAINT unique_rate_limit_per_tool_user UNIQUE (wasm_tool_id, user_id));
CREATE INDEX idx_rate_limit_tool ON tool_rate_limit_state(wasm_tool_id);
CREATE INDEX idx_rate_limit_user ON tool_rate_limit_state(user_id);
CREATE TABLE secret_usage_log (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    secret_id UUID NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    wasm_tool_id UUID REFERENCES wasm_tools(id) ON DELETE SET NULL, user_id TEXT NOT NULL,
    target_host TEXT NOT NULL, target_path TEXT, success BOOLEAN NOT NULL, error_message TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX idx_secret_usage_secret ON secret_usage_log(secret_id);
CREATE INDEX idx_secret_usage_tool ON secret_usage_log(wasm_tool_id);
CREATE INDEX idx_secret_usage_user ON secret_usage_log(user_id);
CREATE INDEX idx_secret_usage_created ON secret_usage_log(created_at DESC);
CREATE TABLE leak_detection_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    pattern_id UUID REFERENCES leak_detection_patterns(id) ON DELETE SET NULL,
    wasm_tool_id UUID REFERENCES wasm_tools(id) ON DELETE SET NULL, user_id TEXT NOT NULL,
    source TEXT NOT NULL, action_taken TEXT NOT NULL, context_preview TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX idx_leak_events_pattern ON leak_detection_events(pattern_id);
CREATE INDEX idx_leak_events_tool ON leak_detection_events(wasm_tool_id);
CREATE INDEX idx_leak_events_user ON leak_detection_events(user_id);
CREATE INDEX idx_leak_events_created ON leak_detection_events(created_at DESC);
CREATE VIEW wasm_tools_with_capabilities AS
SELECT t.id, t.user_id, t.name, t.version, t.description, t.trust_level, t.status, t.created_at, t.updated_at,
       c.http_allowlist, c.allowed_secrets, c.tool_aliases, c.requests_per_minute, c.requests_per_hour,
       c.workspace_read_prefixes
FROM wasm_tools t LEFT JOIN tool_capabilities c ON c.wasm_tool_id = t.id;
CREATE VIEW active_leak_patterns AS
SELECT id, name, pattern, severity, action FROM leak_detection_patterns WHERE enabled = true;
CREATE VIEW recent_leak_events AS
SELECT le.created_at, le.source, le.action_taken, lp.name AS pattern_name, lp.severity, wt.name AS tool_name,
       le.user_id
FROM leak_detection_events le
LEFT JOIN leak_detection_patterns lp ON lp.id = le.pattern_id
LEFT JOIN wasm_tools wt ON wt.id = le.wasm_tool_id
WHERE le.created_at > NOW() - INTERVAL '24 hours'
ORDER BY le.created_at DESC;
INSERT INTO leak_detection_patterns (name, pattern, severity, action) VALUES
    ('openai_api_key', 'sk-(?:proj-)?[a-zA-Z0-9]{20,}(?:T3BlbkFJ[a-zA-Z0-9_-]*)?', 'critical', 'block'),
    ('anthropic_api_key', 'sk-ant-api[a-zA-Z0-9_-]{90,}', 'critical', 'block'),
    ('aws_access_key', 'AKIA[0-9A-Z]{16}', 'critical', 'block'),
    ('aws_secret_key', '(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])', 'high', 'block'),
    ('github_token', 'gh[pousr]_[A-Za-z0-9_]{36,}', 'critical', 'block'),
    ('github_fine_grained_pat', 'github_pat_[a-zA-Z0-9]{22}_[a-zA-Z0-9]{59}', 'critical', 'block'),
    ('stripe_api_key', 'sk_(?:live|test)_[a-zA-Z0-9]{24,}', 'critical', 'block'),
    ('nearai_session', 'sess_[a-zA-Z0-9]{32,}', 'critical', 'block'),
    ('bearer_token', 'Bearer\s+[a-zA-Z0-9_-]{20,}', 'high', 'redact'),
    ('pem_private_key', '-----BEGIN\s+(?:RSA\s+)?PRIVATE\s+KEY-----', 'critical', 'block'),
    ('ssh_private_key', '-----BEGIN\s+(?:OPENSSH|EC|DSA)\s+PRIVATE\s+KEY-----', 'critical', 'block'),
    ('google_api_key', 'AIza[0-9A-Za-z_-]{35}', 'high', 'block'),
    ('slack_token', 'xox[baprs]-[0-9a-zA-Z-]{10,}', 'high', 'block'),
    ('discord_token', '[MN][A-Za-z\d]{23,}\.[\w-]{6}\.[\w-]{27}', 'high', 'block'),
    ('twilio_api_key', 'SK[a-fA-F0-9]{32}', 'high', 'block'),
    ('sendgrid_api_key', 'SG\.[a-zA-Z0-9_-]{22}\.[a-zA-Z0-9_-]{43}', 'high', 'block'),
    ('mailchimp_api_key', '[a-f0-9]{32}-us[0-9]{1,2}', 'medium', 'block'),
    ('high_entropy_hex', '(?<![a-fA-F0-9])[a-fA-F0-9]{64}(?![a-fA-F0-9])', 'medium', 'warn');
