-- permissions schema: roles (with their permission strings), the inheritance graph, user assignments,
-- and tombstones of deleted users (so a late AssignRole cannot resurrect a deleted user's access).
CREATE TABLE roles (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    permissions text[] NOT NULL DEFAULT '{}',
    builtin     boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

-- role inherits parent; position keeps the order the client gave.
CREATE TABLE role_parents (
    role     text NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    parent   text NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    position int  NOT NULL,
    PRIMARY KEY (role, parent),
    CHECK (role <> parent)
);
CREATE INDEX role_parents_parent_idx ON role_parents(parent);

CREATE TABLE user_roles (
    user_id     uuid NOT NULL,
    role        text NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role_idx ON user_roles(role);

CREATE TABLE deleted_users (
    user_id      uuid PRIMARY KEY,
    event_id     text NOT NULL DEFAULT '',
    deleted_time timestamptz NOT NULL DEFAULT now()
);

INSERT INTO roles (name, description, permissions, builtin) VALUES
    ('admin', 'Built-in: every permission', '{*}', true),
    ('user', 'Built-in: a signed-in user (self-service only)', '{}', true);
