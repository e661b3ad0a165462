
CREATE TABLE routines (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL, enabled BOOLEAN NOT NULL DEFAULT true,
    trigger_type TEXT NOT NULL, trigger_config JSONB NOT NULL, action_type TEXT NOT NULL,
    action_config JSONB NOT NULL, cooldown_secs INTEGER NOT NULL DEFAULT 300,
    max_concurrent INTEGER NOT NULL DEFAULT 1, dedup_window_secs INTEGER, notify_channel TEXT,
    notify_user TEXT NOT NULL DEFAULT 'default', notify_on_success BOOLEAN NOT NULL DEFAULT false,
    notify_on_failure BOOLEAN NOT NULL DEFAULT true, notify_on_attention BOOLEAN NOT NULL DEFAULT true,
    state JSONB NOT NULL DEFAULT '{}', last_run_at TIMESTAMPTZ, next_fire_at TIMESTAMPTZ,
    run_count BIGINT NOT NULL DEFAULT 0, consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name));
CREATE INDEX idx_routines_next_fire ON routines (next_fire_at) WHERE enabled AND next_fire_at IS NOT NULL;
CREATE INDEX idx_routines_event_triggers ON routines (user_id) WHERE enabled AND trigger_type = 'event';
CREATE TABLE routine_runs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    routine_id UUID NOT NULL REFERENCES routines(id) ON DELETE CASCADE, trigger_type TEXT NOT NULL,
    trigger_detail TEXT, started_at TIMESTAMPTZ NOT NULL DEFAULT now(), completed_at TIMESTAMPTZ,
    status TEXT NOT NULL DEFAULT 'running', result_summary TEXT, tokens_used INTEGER,
    job_id UUID REFERENCES agent_jobs(id), created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE INDEX idx_routine_runs_routine ON routine_runs (routine_id);
CREATE INDEX idx_routine_runs_status ON routine_runs (status) WHERE status = 'running';
