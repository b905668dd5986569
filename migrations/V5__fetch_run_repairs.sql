-- planbox store, version 5.
--
-- Damage a fetch repaired instead of skipping (HTML named references such as
-- `&nbsp;`, a `&` that starts no reference), by reason, beside `skipped`.
ALTER TABLE fetch_runs ADD COLUMN repaired TEXT NOT NULL DEFAULT '{}'; -- JSON object: reason -> count
