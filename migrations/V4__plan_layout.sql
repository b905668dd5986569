-- planbox store, version 4: two WITHOUT ROWID tables instead of a table
-- plus a covering index that repeated every rendered plan.
--
-- `plans` keeps one row per plan ever seen, clustered on its identity
-- (provider, base plan id, plan id): what an ingest compares and updates.
-- The rendered EventSummary JSON is no longer here.
--
-- `plans_search` holds the rendered JSON of every searchable (ever online)
-- plan once, clustered in answer order (start, end, id): a search reads
-- one range of one B-tree, in order, and nothing else.
--
-- A plan without an end has end_at = -9223372036854775808 (the smallest
-- integer) in both tables: primary-key columns cannot be NULL, and the
-- smallest value keeps the order searches had (no end first).
-- Ids are the 16 bytes of the UUID; their byte order is the order of the
-- hyphenated text form.

CREATE TABLE plans_v4 (
    provider       TEXT    NOT NULL,
    base_plan_id   TEXT    NOT NULL,
    plan_id        TEXT    NOT NULL,
    id             BLOB    NOT NULL,   -- UUID v5 of (provider, base_plan_id, plan_id)
    start_at       INTEGER NOT NULL,
    end_at         INTEGER NOT NULL,   -- -9223372036854775808: no end
    online         INTEGER NOT NULL,   -- online in the latest fetch that listed it
    ever_online    INTEGER NOT NULL,   -- sticky: once 1, never 0 again
    content_hash   INTEGER NOT NULL,   -- of the kept values (online included)
    first_seen_run INTEGER NOT NULL,
    changed_run    INTEGER NOT NULL,
    PRIMARY KEY (provider, base_plan_id, plan_id)
) WITHOUT ROWID;

INSERT INTO plans_v4
    SELECT provider, base_plan_id, plan_id, unhex(replace(id, '-', '')), start_at,
           COALESCE(end_at, -9223372036854775807 - 1), online, ever_online, content_hash,
           first_seen_run, changed_run
    FROM plans
    ORDER BY provider, base_plan_id, plan_id;

CREATE TABLE plans_search (
    start_at INTEGER NOT NULL,
    end_at   INTEGER NOT NULL,         -- -9223372036854775808: no end
    id       BLOB    NOT NULL,
    json     TEXT    NOT NULL,         -- the rendered EventSummary object
    PRIMARY KEY (start_at, end_at, id)
) WITHOUT ROWID;

INSERT INTO plans_search
    SELECT start_at, COALESCE(end_at, -9223372036854775807 - 1), unhex(replace(id, '-', '')), json
    FROM plans
    WHERE ever_online = 1
    ORDER BY 1, 2, 3;

DROP TABLE plans;
ALTER TABLE plans_v4 RENAME TO plans;

-- Start-up without reading the whole file: `clean_stop` is 1 while no
-- `serve` runs after one stopped cleanly (cleared when the next starts);
-- `checked_at` is the Unix time of the last integrity check that passed.
INSERT INTO meta (key, value) VALUES ('clean_stop', 0), ('checked_at', 0);
