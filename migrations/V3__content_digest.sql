-- planbox store, version 3.
--
-- `content_digest`: an order-independent digest of what searches can
-- return, so an answer's ETag is known before its first byte and is equal
-- on replicas that hold the same plans. It is the wrapping 64-bit sum, over
-- every searchable plan (ever_online = 1), of digest(id, content_hash)
-- (store::plan_term). Every ingest moves it in its own transaction:
-- subtract the old term of a rewritten plan, add the new one.
--
-- SQL cannot compute that digest, so this migration only sets it for a
-- store without searchable plans (the sum of nothing is 0). For a store
-- that has some, the key stays absent here and `Store::open` computes it
-- once, in one pass over the plans table, right after migrating.
INSERT INTO meta (key, value)
    SELECT 'content_digest', 0
    WHERE NOT EXISTS (SELECT 1 FROM plans WHERE ever_online = 1);
