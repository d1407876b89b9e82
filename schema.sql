-- The whole schema. Applied at every start, idempotently, under an advisory lock
-- (Store.apply_schema). Every statement must be safe to run again.
--
-- How a change ships: append a numbered step at the end written so it can run twice
-- (ADD COLUMN IF NOT EXISTS, CREATE INDEX IF NOT EXISTS, DO blocks that check the
-- catalog), and bump the version line below. A server whose code is older than the
-- recorded version refuses to start rather than run against a schema it doesn't know.
--
-- schema-version: 12
CREATE TABLE IF NOT EXISTS schema_version (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     integer NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Step 1: accounts, conversations, messages, nodes.

CREATE TABLE IF NOT EXISTS users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL CHECK (username ~ '^[A-Za-z0-9_.-]{1,32}$'),
    display_name   text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 64),
    password_hash  text NOT NULL,
    is_admin       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS users_username_lower ON users (lower(username));

CREATE TABLE IF NOT EXISTS auth_tokens (
    token_hash  bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS auth_tokens_user ON auth_tokens (user_id);

CREATE TABLE IF NOT EXISTS conversations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title        text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    mode         text NOT NULL DEFAULT 'solo' CHECK (mode IN ('solo', 'partner', 'group')),
    with_ai      boolean NOT NULL DEFAULT true,
    owner_id     bigint NOT NULL REFERENCES users (id),
    -- the last seq handed out; the row lock on this counter is what orders commits
    last_seq     bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    activity_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS participants (
    conversation_id  bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role             text NOT NULL CHECK (role IN ('owner', 'member')),
    last_read_seq    bigint NOT NULL DEFAULT 0,
    joined_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX IF NOT EXISTS participants_user ON participants (user_id);

CREATE TABLE IF NOT EXISTS messages (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id    bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq                bigint NOT NULL CHECK (seq > 0),
    role               text NOT NULL CHECK (role IN ('user', 'assistant')),
    author_id          bigint REFERENCES users (id),
    content            text NOT NULL,
    model_used         text,
    status             text NOT NULL DEFAULT 'complete'
                       CHECK (status IN ('complete', 'streaming', 'cancelled', 'error', 'interrupted')),
    client_id          text CHECK (char_length(client_id) <= 64),
    reply_to           bigint REFERENCES messages (id),
    reply_id           text,
    owner_node         text,  -- the server running the turn, to mark it interrupted after a crash
    prompt_tokens      integer,
    completion_tokens  integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, author_id, client_id),
    CHECK ((role = 'user') = (author_id IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS messages_streaming ON messages (status) WHERE status = 'streaming';
CREATE INDEX IF NOT EXISTS messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;

CREATE TABLE IF NOT EXISTS ai_nodes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    kind        text NOT NULL CHECK (kind IN ('ollama', 'openai')),
    base_url    text NOT NULL,
    api_key     text,
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Step 2: per-conversation default model. The seed shipped without it; this is how a
-- column lands on databases made by an older version.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS default_model_id text;

-- Step 3: the conversation list is ordered by activity; index the access path.
CREATE INDEX IF NOT EXISTS conversations_activity ON conversations (activity_at DESC, id DESC);

-- Step 4: how a reply came to be, kept with it: the tier that chose its model, the model
-- that failed before it took over, and who stopped it.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS tier text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS fallback_from text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS cancelled_by bigint REFERENCES users (id) ON DELETE SET NULL;

-- Step 5: what each reply used and cost, and how fast it came, for usage, budgets and model
-- stats; indexed for the aggregations by conversation, by the user who asked, and by model.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS requested_by bigint REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS ttft_ms real;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS gen_ms real;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS cost_usd numeric(16, 8);
ALTER TABLE messages ADD COLUMN IF NOT EXISTS usage_estimated boolean;
CREATE INDEX IF NOT EXISTS messages_replies_by_conversation ON messages (conversation_id, created_at)
    WHERE role = 'assistant';
CREATE INDEX IF NOT EXISTS messages_replies_by_requester ON messages (requested_by, created_at)
    WHERE role = 'assistant';
CREATE INDEX IF NOT EXISTS messages_replies_by_model ON messages (model_used, created_at DESC)
    WHERE role = 'assistant';

-- Step 6: budgets. A limit per user or per conversation and period (a UTC day or month);
-- turns hold a reservation while they run and spend their cost when they end.
CREATE TABLE IF NOT EXISTS budgets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text NOT NULL CHECK (scope IN ('user', 'conversation')),
    subject_id  bigint NOT NULL,
    period      text NOT NULL CHECK (period IN ('day', 'month')),
    limit_usd   numeric(16, 8) NOT NULL CHECK (limit_usd >= 0),
    warn_at     real NOT NULL DEFAULT 0.8 CHECK (warn_at > 0 AND warn_at <= 1),
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scope, subject_id)
);
CREATE TABLE IF NOT EXISTS budget_ledger (
    budget_id     bigint NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    period_start  date NOT NULL,
    spent_usd     numeric(16, 8) NOT NULL DEFAULT 0,
    warned        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (budget_id, period_start)
);
CREATE TABLE IF NOT EXISTS budget_reservations (
    message_id    bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    budget_id     bigint NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    period_start  date NOT NULL,
    amount_usd    numeric(16, 8) NOT NULL,
    PRIMARY KEY (message_id, budget_id)
);
CREATE INDEX IF NOT EXISTS budget_reservations_budget ON budget_reservations (budget_id, period_start);

-- Step 7: each server says it is alive; the others end the replies of one that stopped.
CREATE TABLE IF NOT EXISTS server_nodes (
    node_id  text PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);

-- Step 8: why a reply ended in `error` (what its ai.error said), so history can say it too.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS error_code text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS error_message text;

-- Step 9: whether the AI answers every message or only those that mention it, and the
-- owner's instructions sent with every turn. Existing conversations keep answering all.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS ai_answers text NOT NULL DEFAULT 'all';
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS instructions text;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'conversations_ai_answers_check') THEN
        ALTER TABLE conversations ADD CONSTRAINT conversations_ai_answers_check
            CHECK (ai_answers IN ('all', 'mentions'));
    END IF;
END $$;

-- Step 10: why `auto` chose a reply's model, kept with it.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS route_reason text;

-- Step 11: completions asked through the OpenAI-compatible endpoint (/v1/chat/completions).
-- Only what each used, cost and how fast it came is kept (for usage, budgets and model
-- stats), never the prompt or the text. A budget reservation is held by a reply or by one.
CREATE TABLE IF NOT EXISTS completions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id            bigint REFERENCES users (id) ON DELETE SET NULL,
    model_used         text NOT NULL,
    tier               text NOT NULL,
    route_reason       text,
    fallback_from      text,
    status             text NOT NULL DEFAULT 'streaming'
                       CHECK (status IN ('streaming', 'complete', 'cancelled', 'error', 'interrupted')),
    error_code         text,
    prompt_tokens      integer,
    completion_tokens  integer,
    usage_estimated    boolean,
    ttft_ms            real,
    gen_ms             real,
    cost_usd           numeric(16, 8),
    owner_node         text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS completions_by_user ON completions (user_id, created_at);
CREATE INDEX IF NOT EXISTS completions_by_time ON completions (created_at);
CREATE INDEX IF NOT EXISTS completions_by_model ON completions (model_used, created_at DESC);
CREATE INDEX IF NOT EXISTS completions_streaming ON completions (owner_node) WHERE status = 'streaming';
ALTER TABLE budget_reservations ADD COLUMN IF NOT EXISTS completion_id bigint
    REFERENCES completions (id) ON DELETE CASCADE;
ALTER TABLE budget_reservations DROP CONSTRAINT IF EXISTS budget_reservations_pkey;
ALTER TABLE budget_reservations ALTER COLUMN message_id DROP NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS budget_reservations_by_message ON budget_reservations (message_id, budget_id);
CREATE UNIQUE INDEX IF NOT EXISTS budget_reservations_by_completion ON budget_reservations (completion_id, budget_id);
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'budget_reservations_one_holder') THEN
        ALTER TABLE budget_reservations ADD CONSTRAINT budget_reservations_one_holder
            CHECK ((message_id IS NULL) <> (completion_id IS NULL));
    END IF;
END $$;

-- Step 12: a reservation the sweep let go (its holder no longer streaming, its server
-- presumed dead) stays, marked with what the sweep charged, until its holder settles: a
-- server that was only late then spends the rest of its real cost, never it twice.
ALTER TABLE budget_reservations ADD COLUMN IF NOT EXISTS charged_usd numeric(16, 8);
ALTER TABLE budget_reservations ADD COLUMN IF NOT EXISTS released_at timestamptz;
CREATE INDEX IF NOT EXISTS budget_reservations_released ON budget_reservations (released_at)
    WHERE released_at IS NOT NULL;
