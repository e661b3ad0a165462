
CREATE UNIQUE INDEX IF NOT EXISTS uq_conv_routine ON conversations (user_id, (metadata->>'routine_id'))
    WHERE metadata->>'routine_id' IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uq_conv_heartbeat ON conversations (user_id)
    WHERE metadata->>'thread_type' = 'heartbeat';
