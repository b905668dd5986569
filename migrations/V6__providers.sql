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

-- Searchable plans per provider and month (the status page's histogram)
-- from `plans` alone, never reading the rendered plans in `plans_search`.
CREATE INDEX plans_provider_start ON plans (provider, start_at) WHERE ever_online = 1;

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
