-- auth schema: password credentials, sessions (token families) and their refresh tokens.
-- Refresh tokens are stored only as the hex SHA-256 of the token.
CREATE TABLE credentials (
    user_id uuid PRIMARY KEY,
    password_hash text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    last_used_time timestamptz NOT NULL DEFAULT now(),
    -- sliding: moves forward on each refresh, never past absolute_expire_time
    expire_time timestamptz NOT NULL,
    absolute_expire_time timestamptz NOT NULL,
    revoked_time timestamptz,
    revoke_reason text,
    user_agent text NOT NULL DEFAULT '',
    ip text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_active ON sessions (user_id) WHERE revoked_time IS NULL;

-- Every refresh token a session ever had: the current one has rotated_time NULL; presenting a
-- rotated one is reuse and revokes the session (RFC 6819 §5.2.2.3, OAuth 2.1 rotation).
CREATE TABLE refresh_tokens (
    hash text PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    create_time timestamptz NOT NULL DEFAULT now(),
    rotated_time timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
