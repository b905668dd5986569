//! The single-writer ingest: one fetch or import as one transaction
//! ([`Ingest`]), the in-memory index of known plans that skips unchanged
//! ones, staging of search rows, the month counters (`plan_months`), and
//! upkeep of `meta.content_digest`.
//!
//! Must not read or answer searches, must not delete from `plans`, and must
//! not hold its write transaction open while waiting on anything but SQLite.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::providers::{add_plan_months, add_provider_counts, month_of};
use super::{counts, insert_run, upsert_feed_state, FeedState, Result, Store, StoreError};
use crate::model::{local_seconds, plan_uuid, FeedPlan, FetchRun, PlanCounts};

impl Store {
    /// Starts the one transaction of an ingest. Waits (up to a minute) for
    /// another process's ingest to finish first.
    pub fn begin_ingest(&mut self, provider: &str) -> Result<Ingest<'_>> {
        // An ingest outside a running serve (`import`, `fetch`) clears the
        // clean-stop mark first, in its own commit: a crash in the middle of
        // it must be seen by the next start. (Under serve it is clear.)
        self.conn.execute(
            "UPDATE meta SET value = 0 WHERE key = 'clean_stop' AND value <> 0",
            [],
        )?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let run_marker: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM fetch_runs", [], |r| {
                r.get(0)
            })?;
        let known = KnownPlans::load(&tx, provider)?;
        // Rows for `plans_search` wait here (appended in feed order) and
        // land sorted at the end: see `Ingest::flush_searchable`. The
        // provider is the ingest's, so it is not staged. One helper thread
        // for SQLite's sorter: it sorts and writes runs while the writer
        // feeds it, when the parsing threads are done and a core is free
        // (0.3 s less of the 1.5 s that landing 900k rows took at 1M plans).
        tx.pragma_update(None, "threads", 1)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS plans_search_staged
                 (start_at INTEGER NOT NULL, end_at INTEGER NOT NULL, id BLOB NOT NULL,
                  json TEXT NOT NULL);
             DELETE FROM temp.plans_search_staged;",
        )?;
        Ok(Ingest {
            tx,
            provider: provider.to_owned(),
            run_marker,
            counts: PlanCounts::default(),
            became_searchable: 0,
            digest_delta: 0,
            known: Arc::new(known),
            staged: 0,
            months: HashMap::new(),
        })
    }
}

/// One ingest in progress: a write transaction. Dropping it rolls back.
pub struct Ingest<'a> {
    tx: rusqlite::Transaction<'a>,
    provider: String,
    run_marker: i64,
    counts: PlanCounts,
    /// Plans that became searchable in this ingest (new and online, or
    /// online for the first time).
    became_searchable: u64,
    /// What this ingest adds to `meta.content_digest` (wrapping).
    digest_delta: u64,
    known: Arc<KnownPlans>,
    /// Rows in `temp.plans_search_staged`.
    staged: u64,
    /// What this ingest adds to the provider's `plan_months` counters:
    /// searchable plans gained (or lost, negative) by month of local start.
    months: HashMap<i64, i64>,
}

/// `end_at` of a plan without an end (primary-key columns cannot be NULL;
/// the smallest integer keeps such plans first among equal starts).
pub const NO_END: i64 = i64::MIN;

/// Above this many stored plans an ingest does not load [`KnownPlans`]
/// and looks every plan up in `plans` instead: 18 bytes a plan, so the
/// check costs at most 36 MiB of memory whatever the store size.
const KNOWN_PLANS_LIMIT: u64 = 2 << 20;

/// The content hash of every stored plan of one provider, by a 64-bit
/// digest of its identity, sorted: loaded with one sequential read of the
/// provider's rows when an ingest begins, so that an unchanged plan costs a
/// binary search in memory instead of a B-tree lookup in SQLite.
///
/// Only a hint: a hit with an equal content hash means unchanged (the hash
/// covers `online`, and `ever_online` is never below `online`); anything
/// else goes to `plans` by primary key, so identity collisions of the
/// 64-bit digest cost a lookup, never a wrong answer.
struct KnownPlans {
    /// (identity digest, content hash), sorted; empty when not `loaded`.
    entries: Vec<(u64, u64)>,
    /// `dir[b]` is the first entry whose digest's top `bits` bits are >=
    /// `b`: a lookup reads one slot of it and the one or two entries of
    /// its bucket (two cache misses) instead of ~20 steps of a binary search.
    dir: Vec<u32>,
    bits: u32,
    /// False above [`KNOWN_PLANS_LIMIT`]: every plan is looked up.
    loaded: bool,
}

#[derive(Clone, Copy)]
enum Known {
    /// Stored with this content hash.
    Hash(u64),
    /// Not stored when the ingest began.
    Absent,
    /// Not known here: look it up.
    Unknown,
}

fn identity_digest(base_plan_id: &str, plan_id: &str) -> u64 {
    let mut d = crate::digest::Digest::new();
    d.field(base_plan_id.as_bytes());
    d.field(plan_id.as_bytes());
    d.finish()
}

impl KnownPlans {
    fn load(conn: &Connection, provider: &str) -> Result<KnownPlans> {
        let stored = counts(conn)?.plans_stored;
        if stored > KNOWN_PLANS_LIMIT {
            return Ok(KnownPlans::unloaded());
        }
        let mut entries = Vec::with_capacity(stored as usize);
        let mut stmt = conn.prepare_cached(
            "SELECT base_plan_id, plan_id, content_hash FROM plans WHERE provider = ?1",
        )?;
        let mut rows = stmt.query([provider])?;
        while let Some(r) = rows.next()? {
            let base = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let plan = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            entries.push((identity_digest(base, plan), r.get::<_, i64>(2)? as u64));
        }
        entries.sort_unstable();
        // About two entries a bucket: 2 bytes of directory a plan.
        let bits = (entries.len().max(2) / 2).ilog2().max(1);
        let mut dir = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for b in 0..=(1u64 << bits) {
            while i < entries.len() && entries[i].0 >> (64 - bits) < b {
                i += 1;
            }
            dir.push(i as u32);
        }
        Ok(KnownPlans {
            entries,
            dir,
            bits,
            loaded: true,
        })
    }

    /// Knows nothing: every plan is looked up in `plans`.
    fn unloaded() -> KnownPlans {
        KnownPlans {
            entries: Vec::new(),
            dir: Vec::new(),
            bits: 0,
            loaded: false,
        }
    }

    fn get(&self, key: u64) -> Known {
        self.get_many(&[key])[0]
    }

    /// [`get`](Self::get) of many keys: first every key's directory slot,
    /// then every bucket, so that the cache misses of different keys
    /// overlap instead of following one another.
    fn get_many(&self, keys: &[u64]) -> Vec<Known> {
        if !self.loaded {
            return vec![Known::Unknown; keys.len()];
        }
        let buckets: Vec<(u32, u32)> = keys
            .iter()
            .map(|&key| {
                let b = (key >> (64 - self.bits)) as usize;
                (self.dir[b], self.dir[b + 1])
            })
            .collect();
        keys.iter()
            .zip(buckets)
            .map(|(&key, (from, to))| {
                match self.entries[from as usize..to as usize]
                    .iter()
                    .find(|e| e.0 == key)
                {
                    Some(e) => Known::Hash(e.1),
                    None => Known::Absent,
                }
            })
            .collect()
    }
}

/// What `plans` holds about one plan.
struct StoredPlan {
    id: [u8; 16],
    start_at: i64,
    end_at: i64,
    ever_online: bool,
    content_hash: u64,
    /// The run that last wrote it (this ingest's `run_marker`: written by
    /// this ingest, so its search row may still be staged).
    changed_run: i64,
}

/// A plan with what landing it needs computed beforehand, on any thread
/// ([`Preparer::prepare`]): its content hash, what [`KnownPlans`] knows of
/// it, and, unless it is known unchanged, its id, its part of the content
/// digest and its rendered `EventSummary`. The writer is left with SQLite.
pub struct PreparedPlan {
    plan: FeedPlan,
    hash: u64,
    known: Known,
    /// `plan_uuid` of the plan (nil when known unchanged).
    uuid: uuid::Uuid,
    /// The plan's search row rendered with `uuid`, when it may need one.
    json: Option<String>,
}

impl PreparedPlan {
    pub fn plan(&self) -> &FeedPlan {
        &self.plan
    }

    /// The search row's JSON for the plan stored under `uuid`.
    fn json(&mut self, uuid: &uuid::Uuid) -> String {
        match self.json.take() {
            Some(json) if self.uuid == *uuid => json,
            _ => self.plan.event_summary_json(uuid),
        }
    }
}

/// Prepares plans for one [`Ingest`] on any thread: `Send`, `Sync`, cheap
/// to clone. It reads the ingest's [`KnownPlans`], which no one writes
/// while the ingest lasts.
#[derive(Clone)]
pub struct Preparer {
    provider: Arc<str>,
    known: Arc<KnownPlans>,
}

impl Preparer {
    pub fn prepare(&self, plan: FeedPlan) -> PreparedPlan {
        let key = identity_digest(&plan.base_plan_id, &plan.plan_id);
        self.finish(plan, self.known.get(key))
    }

    /// [`prepare`](Self::prepare) of many plans, in order (faster: the
    /// known-plans lookups overlap).
    pub fn prepare_many(&self, plans: Vec<FeedPlan>) -> Vec<PreparedPlan> {
        let keys: Vec<u64> = plans
            .iter()
            .map(|p| identity_digest(&p.base_plan_id, &p.plan_id))
            .collect();
        let known = self.known.get_many(&keys);
        plans
            .into_iter()
            .zip(known)
            .map(|(plan, known)| self.finish(plan, known))
            .collect()
    }

    fn finish(&self, plan: FeedPlan, known: Known) -> PreparedPlan {
        let hash = plan.content_hash();
        let (uuid, json) = match known {
            Known::Hash(h) if h == hash => (uuid::Uuid::nil(), None),
            _ => {
                let uuid = plan_uuid(&self.provider, &plan.base_plan_id, &plan.plan_id);
                // A new plan that is not on sale gets no search row.
                let searchable = plan.online || !matches!(known, Known::Absent);
                (uuid, searchable.then(|| plan.event_summary_json(&uuid)))
            }
        };
        PreparedPlan {
            plan,
            hash,
            known,
            uuid,
            json,
        }
    }
}

impl Ingest<'_> {
    /// What prepares plans for this ingest, on other threads.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            provider: self.provider.as_str().into(),
            known: Arc::clone(&self.known),
        }
    }

    /// Lands one plan: inserts it, rewrites it if its values changed, or
    /// leaves it alone. `ever_online` only ever turns on. (The same as
    /// [`land`](Self::land) of the plan prepared here.)
    pub fn upsert(&mut self, plan: &FeedPlan) -> Result<()> {
        let prepared = self.preparer().prepare(plan.clone());
        self.land(prepared)
    }

    /// Lands one prepared plan (see [`upsert`](Self::upsert)).
    pub fn land(&mut self, mut p: PreparedPlan) -> Result<()> {
        self.counts.plans_seen += 1;
        let known = p.known;
        match known {
            Known::Hash(h) if h == p.hash => {
                self.counts.plans_unchanged += 1;
                return Ok(());
            }
            // A plan listed twice in one feed is absent here the second
            // time too: the insert sees the first one and it is looked up.
            Known::Absent if self.insert_new(&mut p)? => return Ok(()),
            _ => {}
        }
        match self.stored(&p.plan)? {
            None => {
                let inserted = self.insert_new(&mut p)?;
                debug_assert!(inserted);
                Ok(())
            }
            Some(old) if old.content_hash == p.hash => {
                self.counts.plans_unchanged += 1;
                Ok(())
            }
            Some(old) => self.update(&mut p, &old),
        }
    }

    fn stored(&self, plan: &FeedPlan) -> Result<Option<StoredPlan>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id, start_at, end_at, ever_online, content_hash, changed_run FROM plans
                 WHERE provider = ?1 AND base_plan_id = ?2 AND plan_id = ?3",
            )?
            .query_row(
                params![self.provider, plan.base_plan_id, plan.plan_id],
                |r| {
                    let mut id = [0u8; 16];
                    let blob = r.get_ref(0)?.as_blob()?;
                    if blob.len() == 16 {
                        id.copy_from_slice(blob);
                    }
                    Ok(StoredPlan {
                        id,
                        start_at: r.get(1)?,
                        end_at: r.get(2)?,
                        ever_online: r.get(3)?,
                        content_hash: r.get::<_, i64>(4)? as u64,
                        changed_run: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Inserts a plan that was not stored; false (and nothing written) when
    /// it is stored after all (listed twice in this feed).
    fn insert_new(&mut self, p: &mut PreparedPlan) -> Result<bool> {
        let (plan, hash, uuid) = (&p.plan, p.hash, p.uuid);
        let (start_at, end_at) = plan_times(plan);
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO plans (provider, base_plan_id, plan_id, id, start_at, end_at,
                     online, ever_online, content_hash, first_seen_run, changed_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?9)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                self.provider,
                plan.base_plan_id,
                plan.plan_id,
                uuid.as_bytes(),
                start_at,
                end_at,
                plan.online,
                hash as i64,
                self.run_marker,
            ])?;
        if inserted == 0 {
            return Ok(false);
        }
        self.counts.plans_new += 1;
        if plan.online {
            self.became_searchable += 1;
            *self.months.entry(month_of(start_at)).or_default() += 1;
            self.digest_delta = self
                .digest_delta
                .wrapping_add(plan_term_of(&uuid, hash as i64));
            self.insert_searchable(p, &uuid)?;
        }
        Ok(true)
    }

    /// Stages the plan's search row; it lands in `flush_searchable`.
    fn insert_searchable(&mut self, p: &mut PreparedPlan, uuid: &uuid::Uuid) -> Result<()> {
        let (start_at, end_at) = plan_times(&p.plan);
        let json = p.json(uuid);
        self.tx
            .prepare_cached(
                "INSERT INTO temp.plans_search_staged (start_at, end_at, id, json)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![start_at, end_at, uuid.as_bytes(), json])?;
        self.staged += 1;
        Ok(())
    }

    /// Lands the staged search rows in key order. Rows inserted one by one
    /// in feed order would each hit a random page of `plans_search` (start
    /// times are in no order in a feed), and with a bounded page cache
    /// every such page is read back and written again: sorted, the inserts
    /// walk the B-tree once, front to back. A staged row replaces a row
    /// with the same key (a plan whose rendering changed but not its times).
    fn flush_searchable(&mut self) -> Result<()> {
        if self.staged == 0 {
            return Ok(());
        }
        self.tx.execute(
            "INSERT OR REPLACE INTO plans_search (start_at, end_at, id, provider, json)
                 SELECT start_at, end_at, id, ?1, json FROM temp.plans_search_staged
                 ORDER BY start_at, end_at, id",
            [&self.provider],
        )?;
        self.tx
            .execute_batch("DELETE FROM temp.plans_search_staged")?;
        self.staged = 0;
        Ok(())
    }

    /// Rewrites a stored plan whose content hash changed.
    fn update(&mut self, p: &mut PreparedPlan, old: &StoredPlan) -> Result<()> {
        let (plan, hash) = (&p.plan, p.hash);
        self.counts.plans_updated += 1;
        let ever_online = old.ever_online || plan.online;
        let (start_at, end_at) = plan_times(plan);
        self.tx
            .prepare_cached(
                "UPDATE plans SET start_at = ?4, end_at = ?5, online = ?6, ever_online = ?7,
                     content_hash = ?8, changed_run = ?9
                 WHERE provider = ?1 AND base_plan_id = ?2 AND plan_id = ?3",
            )?
            .execute(params![
                self.provider,
                plan.base_plan_id,
                plan.plan_id,
                start_at,
                end_at,
                plan.online,
                ever_online,
                hash as i64,
                self.run_marker,
            ])?;
        if !ever_online {
            return Ok(());
        }
        // The month counters too: it counts at its new start's month.
        if old.ever_online {
            *self.months.entry(month_of(old.start_at)).or_default() -= 1;
        }
        *self.months.entry(month_of(start_at)).or_default() += 1;
        let uuid = uuid::Uuid::from_bytes(old.id);
        // The content digest covers searchable plans: the old term leaves
        // with the old values, the new one comes with the new.
        if old.ever_online {
            self.digest_delta = self
                .digest_delta
                .wrapping_sub(plan_term_of(&uuid, old.content_hash as i64));
        }
        self.digest_delta = self
            .digest_delta
            .wrapping_add(plan_term_of(&uuid, hash as i64));
        if !old.ever_online {
            self.became_searchable += 1;
            return self.insert_searchable(p, &uuid);
        }
        if old.changed_run == self.run_marker {
            // Listed earlier in this feed with other values: its search row
            // may be staged, so land the staged rows before touching it.
            self.flush_searchable()?;
        }
        if (old.start_at, old.end_at) != (start_at, end_at) {
            self.tx
                .prepare_cached(
                    "DELETE FROM plans_search WHERE start_at = ?1 AND end_at = ?2 AND id = ?3",
                )?
                .execute(params![old.start_at, old.end_at, &old.id[..]])?;
        }
        // Same times: the staged row replaces the old one.
        self.insert_searchable(p, &uuid)
    }

    pub fn counts(&self) -> PlanCounts {
        self.counts
    }

    /// Commits the ingest together with its journal row and the provider's
    /// new feed state, as one transaction.
    pub fn commit(mut self, run: &FetchRun, state: Option<&FeedState>) -> Result<PlanCounts> {
        self.flush_searchable()?;
        if self.counts.plans_new + self.counts.plans_updated > 0 {
            self.tx.execute(
                "UPDATE meta SET value = value + CASE key
                     WHEN 'generation' THEN 1
                     WHEN 'plans_stored' THEN ?1
                     WHEN 'plans_searchable' THEN ?2 END
                 WHERE key IN ('generation', 'plans_stored', 'plans_searchable')",
                params![self.counts.plans_new as i64, self.became_searchable as i64],
            )?;
            if self.digest_delta != 0 {
                let old = content_digest(&self.tx)?;
                set_content_digest(&self.tx, old.wrapping_add(self.digest_delta))?;
            }
            add_provider_counts(
                &self.tx,
                &self.provider,
                self.counts.plans_new,
                self.became_searchable,
            )?;
            add_plan_months(&self.tx, &self.provider, &self.months)?;
        }
        let changed = self.counts.plans_new + self.counts.plans_updated > 0;
        if let Some(state) = state {
            upsert_feed_state(&self.tx, &self.provider, state)?;
        }
        insert_run(&self.tx, run)?;
        self.tx.commit()?;
        if changed {
            LOCAL_CHANGES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(self.counts)
    }
}

/// Commits in this process that changed what a search can return (any
/// store). Readers that cache the data version compare it instead of asking
/// SQLite on every request; changes made by other processes are only seen
/// by asking SQLite.
static LOCAL_CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`LOCAL_CHANGES`]: grows after every commit of this process that
/// bumped a store's generation.
pub fn local_changes() -> u64 {
    LOCAL_CHANGES.load(std::sync::atomic::Ordering::SeqCst)
}

/// A plan's (start_at, end_at) as stored: provider-local seconds, [`NO_END`]
/// for a plan without an end.
fn plan_times(plan: &FeedPlan) -> (i64, i64) {
    (
        local_seconds(&plan.start),
        plan.end.as_ref().map_or(NO_END, local_seconds),
    )
}

/// One searchable plan's part of `meta.content_digest`.
pub fn plan_term(id: &str, content_hash: i64) -> u64 {
    let mut d = crate::digest::Digest::new();
    d.field(id.as_bytes());
    d.field(&content_hash.to_le_bytes());
    d.finish()
}

/// [`plan_term`] of a plan id held as its 16 bytes (the hyphenated text
/// form is hashed, as stores before the V4 layout did, so digests carried
/// over stay valid).
fn plan_term_of(id: &uuid::Uuid, content_hash: i64) -> u64 {
    plan_term(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
        content_hash,
    )
}

fn content_digest(conn: &Connection) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'content_digest'")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

fn set_content_digest(conn: &Connection, value: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('content_digest', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([value as i64])?;
    Ok(())
}

/// Computes `meta.content_digest` once for a store migrated to V3 that
/// already held searchable plans (the migration cannot: see
/// `migrations/V3__content_digest.sql`). Runs after every migration, so
/// on the V4 layout (ids as 16 bytes): one pass over `plans` (about 1 s
/// per million plans); nothing to do on every later open.
pub(super) fn ensure_content_digest(conn: &mut Connection) -> Result<()> {
    let present: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'content_digest'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if present.is_some() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut sum = 0u64;
    {
        let mut stmt = tx.prepare("SELECT id, content_hash FROM plans WHERE ever_online = 1")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id =
                uuid::Uuid::from_slice(r.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?)
                    .map_err(StoreError::BadPlanId)?;
            sum = sum.wrapping_add(plan_term_of(&id, r.get(1)?));
        }
    }
    set_content_digest(&tx, sum)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_feed_datetime, Outcome, Window};
    use crate::store::test_support::*;

    #[test]
    fn counters_match_the_rows_through_every_kind_of_change() {
        let path = temp_db("counters");
        let mut store = Store::open(&path).unwrap();
        let real = |store: &Store| -> (u64, u64) {
            store
                .conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(ever_online), 0) FROM plans",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                )
                .unwrap()
        };
        let check = |store: &Store| {
            let c = store.counts().unwrap();
            assert_eq!((c.plans_stored, c.plans_searchable), real(store));
        };
        let a = plan("1", "1", "2021-01-01T10:00:00", None, false);
        let b = plan("2", "1", "2021-01-02T10:00:00", None, true);
        ingest(&mut store, &[a.clone(), b.clone()]);
        check(&store);
        assert_eq!(store.counts().unwrap().plans_searchable, 1);
        // a turns online: searchable +1; b offline: stays searchable.
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.online = true;
        b2.online = false;
        ingest(&mut store, &[a2, b2]);
        check(&store);
        assert_eq!(store.counts().unwrap().plans_searchable, 2);
        // Unchanged, repeated in one feed, and a rolled-back ingest.
        ingest(&mut store, &[b.clone(), b.clone()]);
        {
            let mut tx = store.begin_ingest("p").unwrap();
            tx.upsert(&plan("3", "1", "2021-01-03T10:00:00", None, true))
                .unwrap();
        }
        check(&store);
        assert_eq!(store.counts().unwrap().plans_stored, 2);
    }

    /// `meta.content_digest` as a full recount over the stored plans.
    fn recounted_digest(store: &mut Store) -> u64 {
        store
            .conn
            .execute("DELETE FROM meta WHERE key = 'content_digest'", [])
            .unwrap();
        ensure_content_digest(&mut store.conn).unwrap();
        store.version().unwrap().content
    }

    #[test]
    fn the_content_digest_follows_every_change_and_replicas_agree() {
        let path = temp_db("digest");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.version().unwrap().content, 0);
        let a = plan("1", "1", "2021-01-01T10:00:00", None, false);
        let b = plan(
            "2",
            "1",
            "2021-01-02T10:00:00",
            Some("2021-01-02T12:00:00"),
            true,
        );
        let c = plan("3", "1", "2021-01-03T10:00:00", None, true);
        let (mut a2, mut b2, mut c2) = (a.clone(), b.clone(), c.clone());
        a2.online = true; // turns searchable
        b2.title = "renamed".into(); // same times, new JSON
        c2.start = parse_feed_datetime("2021-01-04T10:00:00").unwrap(); // moves
        c2.online = false; // and goes offline: stays searchable
        let feeds = [
            vec![a.clone(), b.clone(), c.clone()],
            vec![a.clone(), b.clone(), c.clone()],
            vec![a2.clone(), b2.clone(), c2.clone(), b2.clone()],
        ];
        for feed in &feeds {
            ingest(&mut store, feed);
            let kept = store.version().unwrap().content;
            assert_ne!(kept, 0);
            assert_eq!(kept, recounted_digest(&mut store));
        }
        // A replica that got the feeds in another order, without the
        // repeat, holds the same plans.
        let mut replica = Store::open(&temp_db("digest-replica")).unwrap();
        for feed in [&feeds[0], &feeds[2]] {
            let reversed: Vec<FeedPlan> = feed.iter().rev().cloned().collect();
            ingest(&mut replica, &reversed);
        }
        assert_eq!(
            replica.version().unwrap().content,
            store.version().unwrap().content
        );
        assert_eq!(
            replica.search(&Window::default()).unwrap(),
            store.search(&Window::default()).unwrap()
        );
    }

    #[test]
    fn a_moved_plan_leaves_no_trace_at_its_old_times() {
        let path = temp_db("moved");
        let mut store = Store::open(&path).unwrap();
        let a = plan("1", "1", "2021-01-01T10:00:00", None, true);
        ingest(&mut store, std::slice::from_ref(&a));
        let mut a2 = a.clone();
        a2.start = parse_feed_datetime("2021-03-01T10:00:00").unwrap();
        a2.end = parse_feed_datetime("2021-03-01T12:00:00");
        // Listed twice: the second is unchanged.
        let c = ingest(&mut store, &[a2.clone(), a2]);
        assert_eq!((c.plans_updated, c.plans_unchanged), (1, 1));
        let rows: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM plans_search", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        let body = String::from_utf8(store.search(&Window::default()).unwrap()).unwrap();
        assert!(body.contains(r#""start_date":"2021-03-01""#), "{body}");
    }

    #[test]
    fn known_plans_find_every_stored_plan_and_no_other() {
        let path = temp_db("known");
        let mut store = Store::open(&path).unwrap();
        let plans: Vec<FeedPlan> = (0..3000)
            .map(|i| {
                plan(
                    &(i / 3).to_string(),
                    &i.to_string(),
                    "2021-01-01T10:00:00",
                    None,
                    i % 2 == 0,
                )
            })
            .collect();
        ingest(&mut store, &plans);
        let known = KnownPlans::load(&store.conn, "p").unwrap();
        assert!(known.loaded);
        for p in &plans {
            match known.get(identity_digest(&p.base_plan_id, &p.plan_id)) {
                Known::Hash(h) => assert_eq!(h, p.content_hash()),
                _ => panic!("{} not found", p.plan_id),
            }
        }
        for i in 3000..6000 {
            let key = identity_digest("x", &i.to_string());
            assert!(matches!(known.get(key), Known::Absent));
        }
        assert!(matches!(
            KnownPlans::load(&store.conn, "other").unwrap().get(1),
            Known::Absent
        ));
        let c = ingest(&mut store, &plans);
        assert_eq!(c.plans_unchanged, 3000);
    }

    #[test]
    fn above_the_known_plans_limit_every_plan_is_looked_up_with_the_same_result() {
        let path = temp_db("unloaded");
        let mut store = Store::open(&path).unwrap();
        let a = plan("1", "1", "2021-01-01T10:00:00", None, true);
        let b = plan("2", "1", "2021-01-02T10:00:00", None, false);
        ingest(&mut store, &[a.clone(), b.clone()]);
        let mut b2 = b.clone();
        b2.online = true;
        let c = plan("3", "1", "2021-01-03T10:00:00", None, true);
        let mut tx = store.begin_ingest("p").unwrap();
        tx.known = Arc::new(KnownPlans::unloaded());
        for p in [&a, &b2, &c, &c] {
            tx.upsert(p).unwrap();
        }
        let counts = tx.commit(&run(Outcome::Ok), None).unwrap();
        assert_eq!(
            (
                counts.plans_new,
                counts.plans_updated,
                counts.plans_unchanged
            ),
            (1, 1, 2)
        );
        assert_eq!(
            ids(&store.search(&Window::default()).unwrap()),
            ["plan 1/1", "plan 2/1", "plan 3/1"]
        );
        assert_eq!(store.counts().unwrap().plans_searchable, 3);
        let kept = store.version().unwrap().content;
        assert_eq!(kept, recounted_digest(&mut store));
    }

    #[test]
    fn ever_online_is_sticky_and_latest_values_win() {
        let path = temp_db("sticky");
        let mut store = Store::open(&path).unwrap();
        let a = plan(
            "1",
            "1",
            "2021-01-01T10:00:00",
            Some("2021-01-01T11:00:00"),
            true,
        );
        let c = ingest(&mut store, std::slice::from_ref(&a));
        assert_eq!((c.plans_new, c.plans_updated), (1, 0));
        let mut a2 = a.clone();
        a2.online = false;
        a2.end = parse_feed_datetime("2021-01-01T12:00:00");
        let c = ingest(&mut store, &[a2]);
        assert_eq!(c.plans_updated, 1);
        let body = store.search(&Window::default()).unwrap();
        let s = String::from_utf8(body).unwrap();
        assert!(s.contains(r#""end_time":"12:00:00""#), "{s}");
        // Gone from the feed: still there.
        ingest(&mut store, &[]);
        assert_eq!(ids(&store.search(&Window::default()).unwrap()).len(), 1);
    }

    #[test]
    fn never_online_plans_are_not_searchable() {
        let path = temp_db("offline");
        let mut store = Store::open(&path).unwrap();
        ingest(
            &mut store,
            &[plan("1", "1", "2021-01-01T10:00:00", None, false)],
        );
        assert!(ids(&store.search(&Window::default()).unwrap()).is_empty());
        assert_eq!(store.counts().unwrap().plans_stored, 1);
    }

    #[test]
    fn unchanged_plans_are_not_rewritten_and_generation_stays() {
        let path = temp_db("unchanged");
        let mut store = Store::open(&path).unwrap();
        let plans = [
            plan("1", "1", "2021-01-01T10:00:00", None, true),
            plan("2", "1", "2021-01-02T10:00:00", None, true),
        ];
        ingest(&mut store, &plans);
        let g = store.generation().unwrap();
        let c = ingest(&mut store, &plans);
        assert_eq!((c.plans_unchanged, c.plans_new, c.plans_updated), (2, 0, 0));
        assert_eq!(store.generation().unwrap(), g);
    }

    #[test]
    fn dropped_ingest_changes_nothing() {
        let path = temp_db("rollback");
        let mut store = Store::open(&path).unwrap();
        {
            let mut tx = store.begin_ingest("p").unwrap();
            tx.upsert(&plan("1", "1", "2021-01-01T10:00:00", None, true))
                .unwrap();
        }
        assert_eq!(store.counts().unwrap().plans_stored, 0);
        assert!(store.runs(10).unwrap().is_empty());
    }
}
