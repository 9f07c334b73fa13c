-- user service schema: users (soft-deleted, versioned), audit_log, outbox (relayed to events.user).
CREATE TABLE users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text NOT NULL CHECK (octet_length(email) <= 254),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
    status       smallint NOT NULL DEFAULT 1 CHECK (status IN (1, 2)),
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now(),
    delete_time  timestamptz,
    version      bigint NOT NULL DEFAULT 1
);
-- Email is unique among live users only: a deleted user's email can be registered again.
CREATE UNIQUE INDEX users_email_live_key ON users (lower(email)) WHERE delete_time IS NULL;
-- Keyset pagination order.
CREATE INDEX users_create_time_id_idx ON users (create_time, id);

CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    actor          text NOT NULL,
    action         text NOT NULL,
    target         text NOT NULL,
    changed_fields text[] NOT NULL DEFAULT '{}',
    request_id     text NOT NULL DEFAULT '',
    time           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_target_idx ON audit_log (target, time);

CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    type        text NOT NULL,
    user_id     uuid NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
-- The relay only ever looks at unsent rows.
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;
