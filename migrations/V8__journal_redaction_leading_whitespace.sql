-- planbox store: the journal rows V7 could not recognise are removed whole.
--
-- Before planbox parsed the provider URL, it journaled it as given, so
-- `--provider-url ' https://u:pw@h/x?key=…'` (whitespace before the
-- scheme) left a source V7 does not see as a URL (it only takes sources
-- that start with `http://` or `https://`), with its credentials, and an
-- error text that may repeat them. Such a fetch never reached the
-- provider; its source and error text are replaced by a note, its outcome
-- and counts stay. Under `secure_delete`, like V7.
PRAGMA secure_delete = ON;

UPDATE fetch_runs
    SET source = 'removed: written by an earlier planbox, this text may have held credentials',
        error = CASE WHEN error IS NULL THEN NULL
                ELSE 'removed: written by an earlier planbox, this text may have held credentials' END
    WHERE source NOT LIKE 'http%'
      AND (ltrim(source, ' ' || char(9, 10, 11, 12, 13)) LIKE 'http://%'
           OR ltrim(source, ' ' || char(9, 10, 11, 12, 13)) LIKE 'https://%');

PRAGMA secure_delete = OFF;
