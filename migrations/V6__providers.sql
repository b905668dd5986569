-- planbox store: several providers in one box.
--
-- Every journal row names its provider, so each provider's history can be
-- read on its own (status page, `status --json`). Rows written before this
-- version belong to the one provider the store knew, when it knew exactly
-- one; otherwise they stay unattributed ('').
ALTER TABLE fetch_runs ADD COLUMN provider TEXT NOT NULL DEFAULT '';
UPDATE fetch_runs SET provider = (SELECT provider FROM feed_state)
    WHERE (SELECT COUNT(*) FROM feed_state) = 1;
CREATE INDEX fetch_runs_provider ON fetch_runs (provider, id);

-- Searchable plans per provider and month of their local start (the status
-- page's histogram) as counters, moved by every ingest in its transaction:
-- reading them costs one row per provider and month, and an ingest pays a
-- map entry per month instead of a secondary index entry per plan. `month`
-- is yyyymm (`start_at` is provider-local seconds, so `unixepoch` gives
-- back the local calendar month); 0 for a year outside 0000-9999. Rows may
-- fall to 0.
CREATE TABLE plan_months (
    provider TEXT NOT NULL,
    month INTEGER NOT NULL,
    plans INTEGER NOT NULL,
    PRIMARY KEY (provider, month)
) WITHOUT ROWID;
INSERT INTO plan_months (provider, month, plans)
    SELECT provider,
           CASE WHEN start_at BETWEEN -62167219200 AND 253402300799 -- 0000-01-01 .. 9999-12-31
               THEN CAST(strftime('%Y%m', start_at, 'unixepoch') AS INTEGER) ELSE 0 END AS month,
           COUNT(*)
    FROM plans WHERE ever_online = 1 GROUP BY provider, month;

-- Searches over providers in different time zones read each provider's
-- plans on their own, in that provider's local order, and merge them by
-- instant: every search row names its provider. The key stays (start, end,
-- id), so the one-zone search reads exactly what it read before; a
-- provider's range is that key's range with the other providers' rows
-- skipped. Ids are unique across providers (UUID v5 of the provider too).
-- The ids go through a temporary table keyed on id first (`plans` is keyed
-- on the provider's identity, not on id), so that every row is one lookup
-- whatever plan SQLite's planner would choose for a join.
ALTER TABLE plans_search ADD COLUMN provider TEXT NOT NULL DEFAULT '';
CREATE TEMP TABLE v6_providers (id BLOB PRIMARY KEY, provider TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO temp.v6_providers SELECT id, provider FROM plans WHERE ever_online = 1;
UPDATE plans_search
    SET provider = COALESCE(
        (SELECT t.provider FROM temp.v6_providers AS t WHERE t.id = plans_search.id), '');
DROP TABLE temp.v6_providers;

-- Per-provider counters beside the totals of V2, kept by every ingest in its
-- own transaction, so /metrics and the status page show each provider's
-- counts without scanning.
INSERT INTO meta (key, value)
    SELECT 'plans_stored:' || provider, COUNT(*) FROM plans GROUP BY provider;
INSERT INTO meta (key, value)
    SELECT 'plans_searchable:' || provider, COUNT(*) FROM plans
    WHERE ever_online = 1 GROUP BY provider;
