-- planbox store, version 1.
-- Times are provider-local wall-clock seconds (see model::local_seconds),
-- prices exact decimal text, ids UUID v5 text.

CREATE TABLE plans (
    id             TEXT    NOT NULL PRIMARY KEY, -- UUID v5 of (provider, base_plan_id, plan_id)
    provider       TEXT    NOT NULL,
    base_plan_id   TEXT    NOT NULL,
    plan_id        TEXT    NOT NULL,
    title          TEXT    NOT NULL,
    start_at       INTEGER NOT NULL,
    end_at         INTEGER,                      -- NULL: the provider gave no end
    min_price      TEXT,                         -- NULL: no usable zone price
    max_price      TEXT,
    online         INTEGER NOT NULL,             -- online in the latest fetch that listed it
    ever_online    INTEGER NOT NULL,             -- sticky: once 1, never 0 again
    content_hash   INTEGER NOT NULL,             -- of the values above, to skip identical rewrites
    json           TEXT    NOT NULL,             -- the rendered EventSummary object
    first_seen_run INTEGER NOT NULL,
    changed_run    INTEGER NOT NULL
);

-- Serves the window query and its order (start, end, id) without a sort.
CREATE INDEX plans_window ON plans (start_at, end_at, id) WHERE ever_online = 1;

-- The journal: one row per fetch or import attempt.
CREATE TABLE fetch_runs (
    id              INTEGER PRIMARY KEY,
    started_at      TEXT    NOT NULL,            -- RFC 3339, UTC
    duration_ms     INTEGER NOT NULL,
    source          TEXT    NOT NULL,            -- provider URL or imported file
    outcome         TEXT    NOT NULL,
    http_status     INTEGER,
    bytes           INTEGER NOT NULL DEFAULT 0,
    plans_seen      INTEGER NOT NULL DEFAULT 0,
    plans_new       INTEGER NOT NULL DEFAULT 0,
    plans_updated   INTEGER NOT NULL DEFAULT 0,
    plans_unchanged INTEGER NOT NULL DEFAULT 0,
    skipped         TEXT    NOT NULL DEFAULT '{}', -- JSON object: reason -> count
    error           TEXT
);

-- What the last successful fetch of each provider told us, for conditional
-- GET and for not ingesting an identical body twice.
CREATE TABLE feed_state (
    provider      TEXT    NOT NULL PRIMARY KEY,
    etag          TEXT,
    last_modified TEXT,
    body_hash     TEXT
);

-- Single-row counters. `generation` grows by one with every commit that
-- changes what a search can return.
CREATE TABLE meta (
    key   TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('generation', 0);
