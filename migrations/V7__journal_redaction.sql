-- planbox store: journal rows an earlier planbox wrote are redacted whole.
--
-- Before this version a fetch's journal row could hold a provider URL's
-- credentials: the URL in full in `source` (older releases), and in the
-- `error` text secrets under four characters, bare query tokens
-- (`?S3cretTok`) and the query of a redirect target. Which part of an old
-- text was secret cannot be told afterwards, so every old fetch row (its
-- source an http(s) URL) loses its error text, and a source holding a
-- userinfo, a query or a fragment keeps only scheme, host and path:
-- `https://***@host/path?***#***`. Outcome, status and counts stay; rows of
-- imports (a file path) are left as they are.
--
-- `secure_delete` makes SQLite zero the bytes these updates free instead of
-- leaving them in the file's free space. It is switched off again: what
-- planbox writes from this version on holds no credential (see
-- DEPLOYMENT.md, "Provider secrets").
PRAGMA secure_delete = ON;

UPDATE fetch_runs
    SET error = 'removed: written by an earlier planbox, this text may have held credentials'
    WHERE error IS NOT NULL AND (source LIKE 'http://%' OR source LIKE 'https://%');

-- Each distinct source to redact, taken apart: `scheme://` `authority`
-- `path`, then the query and fragment marks (`tail`).
CREATE TEMP TABLE v7_sources (
    old TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    rest TEXT NOT NULL,
    auth TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    tail TEXT NOT NULL DEFAULT ''
);
INSERT INTO temp.v7_sources (old, scheme, rest)
    SELECT DISTINCT source,
           substr(source, 1, instr(source, '://') + 2),
           substr(source, instr(source, '://') + 3)
    FROM fetch_runs
    WHERE (source LIKE 'http://%' OR source LIKE 'https://%')
      AND (instr(source, '@') > 0 OR instr(source, '?') > 0 OR instr(source, '#') > 0);
-- The query and the fragment go whole, each leaving a mark.
UPDATE temp.v7_sources SET tail = '?***'
    WHERE instr(rest, '?') > 0 AND (instr(rest, '#') = 0 OR instr(rest, '?') < instr(rest, '#'));
UPDATE temp.v7_sources SET tail = tail || '#***' WHERE instr(rest, '#') > 0;
UPDATE temp.v7_sources SET rest = substr(rest, 1, instr(rest, '?') - 1) WHERE instr(rest, '?') > 0;
UPDATE temp.v7_sources SET rest = substr(rest, 1, instr(rest, '#') - 1) WHERE instr(rest, '#') > 0;
UPDATE temp.v7_sources
    SET auth = CASE WHEN instr(rest, '/') > 0 THEN substr(rest, 1, instr(rest, '/') - 1) ELSE rest END,
        path = CASE WHEN instr(rest, '/') > 0 THEN substr(rest, instr(rest, '/')) ELSE '' END;
-- The userinfo runs to the last `@` of the authority: rtrim() of every
-- character but `@` leaves the authority up to that `@`.
UPDATE temp.v7_sources
    SET auth = '***@' || substr(auth, length(rtrim(auth, replace(auth, '@', ''))) + 1)
    WHERE instr(auth, '@') > 0;
UPDATE fetch_runs
    SET source = (SELECT s.scheme || s.auth || s.path || s.tail
                  FROM temp.v7_sources AS s WHERE s.old = fetch_runs.source)
    WHERE source IN (SELECT old FROM temp.v7_sources);
DROP TABLE temp.v7_sources;

PRAGMA secure_delete = OFF;
