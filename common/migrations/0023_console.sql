-- The web console (services/control/console): its users, their sessions and the login
-- attempts that rate-limit them. Shared by every control worker process, so the limits and
-- sessions hold whichever process answers.
-- A user is an operator (client_id NULL: every client) or one client's.
CREATE TABLE console_users (
    user_id       bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    client_id     bigint REFERENCES clients (client_id) ON DELETE CASCADE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- The cookie holds a random session id; only its SHA-256 is stored. csrf_token is the
-- session's synchroniser token, put in every form.
CREATE TABLE console_sessions (
    session_hash bytea PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES console_users (user_id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
-- Failed logins, per user name and per address ('user:NAME' / 'addr:IP'), pruned as they age.
CREATE TABLE console_login_failures (
    subject   text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX console_login_failures_subject ON console_login_failures (subject, failed_at);
