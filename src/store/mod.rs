//! The SQLite store in a job's state folder: migrations, runs, the ledger of
//! files taken, canonical patient records and rejects.
//!
//! Each file is loaded in one transaction together with its ledger row, so a
//! file is either wholly in (and known to the ledger) or not at all. The
//! store knows nothing of transports or reports.

mod load;
pub(crate) use load::{failpoint, pausepoint};
mod migrations;
mod queue;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use compact_str::CompactString;
use rayon::slice::ParallelSliceMut;
use rusqlite::{Connection, OptionalExtension, params};

pub use load::{Applied, Counts, FileLoad, Merged, MessageRow};
pub use queue::{QueueItem, WaitingFile};

use crate::flatfile::ParsedFile;
use crate::job::LinkKey;
use crate::model::{Field, Patient, PatientRecord, Reject, Severity, Side};
use crate::reconcile::IdChange;

pub struct Store {
    conn: Connection,
}

/// How a file's records enter the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Insert new records, replace existing ones with the same own ID.
    Upsert,
    /// The file is a complete snapshot of its side: it replaces every record.
    Replace,
}

/// A file that is on local disk, hashed, and ready to load.
#[derive(Debug, Clone)]
pub struct TakenFile {
    pub side: Side,
    /// The name it had at the source (already checked to be a plain name).
    pub name: String,
    pub size: u64,
    /// The source's modification time, as the source reported it.
    pub mtime: String,
    pub sha256: String,
    pub local_path: String,
    pub schema: String,
}

/// How a file is loaded in batches.
pub struct Batching<'a> {
    /// The ledger row of an interrupted load to go on with.
    pub resume: Option<&'a LedgerEntry>,
    /// The ledger row of a snapshot to load again (`FileLoad::reload`).
    pub reload: Option<i64>,
    /// Records per committed batch.
    pub size: usize,
    /// Called after each batch with the records done so far.
    pub progress: &'a mut dyn FnMut(u64),
    /// The ledger state the finished load leaves the file in.
    pub state: &'a str,
}

/// A file loaded by a run that wrote no reports ([`Store::carry_unreported_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedFile {
    /// The run that loaded it.
    pub run_id: i64,
    pub side: Side,
    pub name: String,
    pub read: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub warnings: u64,
    pub older: Older,
}

/// An HL7 file's messages that changed less than they said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Older {
    /// Older than the stored data: queued, not applied.
    pub stale: u64,
    /// Applied only to the fields no newer message said.
    pub in_part: u64,
    /// Of events the schema ignores: queued as PROCESSED, not loaded.
    pub ignored: u64,
}

impl Older {
    /// The file's detail in the reports ("" when every message loaded).
    pub fn detail(&self) -> String {
        [
            (self.stale, "older than the stored data were queued but not applied"),
            (
                self.in_part,
                "older than the stored data were applied only to the fields no newer message said",
            ),
            (self.ignored, "of events the schema ignores were queued as PROCESSED, not loaded"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} message(s) {what}"))
        .collect::<Vec<_>>()
        .join("; ")
    }
}

/// A ledger row.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub id: i64,
    /// `loading` (a load was interrupted after a checkpoint), `loaded`,
    /// then the after-action's state (`kept` at once for a file kept).
    pub state: String,
    pub run_id: i64,
    /// Records (flat files) or messages (HL7) committed so far.
    pub records_done: u64,
    /// Of the HL7 messages committed so far.
    pub older: Older,
}

/// The columns [`ledger_entry`] reads, in its order.
const LEDGER_COLUMNS: &str = "id, state, run_id, records_done, stale, in_part, ignored";

/// `SELECT LEDGER_COLUMNS FROM files` as a ledger entry.
fn ledger_entry(r: &rusqlite::Row) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        id: r.get(0)?,
        state: r.get(1)?,
        run_id: r.get(2)?,
        records_done: r.get::<_, i64>(3)? as u64,
        older: Older {
            stale: r.get::<_, i64>(4)? as u64,
            in_part: r.get::<_, i64>(5)? as u64,
            ignored: r.get::<_, i64>(6)? as u64,
        },
    })
}

/// A run's final counts and outcome.
#[derive(Debug, Clone, Default)]
pub struct RunTotals {
    pub outcome: String,
    pub files: u64,
    pub records: u64,
    pub rejects: u64,
    pub matches: u64,
    pub conflicts: u64,
    pub report_dir: Option<String>,
    pub error: Option<String>,
}

/// A row of `ferry history`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub files: u64,
    pub records: u64,
    pub rejects: u64,
    pub matches: u64,
    pub conflicts: u64,
    pub report_dir: Option<String>,
    pub error: Option<String>,
}

const RUN_COLUMNS: &str = "id, job, kind, started_at, finished_at, outcome, files, records, rejects, matches,
    conflicts, report_dir, error";

/// A row of `SELECT RUN_COLUMNS FROM runs`.
fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        job: r.get(1)?,
        kind: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        outcome: r.get(5)?,
        files: r.get::<_, i64>(6)? as u64,
        records: r.get::<_, i64>(7)? as u64,
        rejects: r.get::<_, i64>(8)? as u64,
        matches: r.get::<_, i64>(9)? as u64,
        conflicts: r.get::<_, i64>(10)? as u64,
        report_dir: r.get(11)?,
        error: r.get(12)?,
    })
}

/// Columns of `patients` that hold canonical fields, in `Field::ALL` order.
pub(crate) fn field_columns() -> impl Iterator<Item = &'static str> {
    Field::ALL.iter().map(|f| f.as_str())
}

pub(crate) fn now() -> String {
    timestamp(crate::clock::now())
}

/// The store's form of a time: UTC with milliseconds, which sorts as text.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn parse_timestamp(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// A file a pruned run took, for deleting what is left of it.
#[derive(Debug, Clone)]
pub struct RunFile {
    pub name: String,
    /// The ledger state: `loading` files are never deleted.
    pub state: String,
    pub local_path: String,
}

/// Drops the bytes (patient data) of DELETED messages whose run was
/// pruned: the one rule for how long a deleted message's bytes are kept,
/// applied when a run is pruned and when a message is deleted. (The
/// second term lets SQLite find them in their index: see `NOT_PROCESSED`.)
const FORGET_DELETED_MESSAGES: &str = "UPDATE messages SET raw = NULL
     WHERE state = 'DELETED' AND state <> 'PROCESSED' AND raw IS NOT NULL
       AND file_id IN (SELECT f.id FROM files f JOIN runs r ON r.id = f.run_id WHERE r.pruned_at IS NOT NULL)";

impl Store {
    /// Open (creating if needed) and migrate the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("cannot open store {}", path.display()))?;
        Store::init(conn).with_context(|| format!("cannot prepare store {}", path.display()))
    }

    pub fn open_in_memory() -> Result<Store> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // A backfill writes and then reads back millions of rows: with
        // SQLite's default 2 MiB page cache most page visits become reads
        // from the OS. The cache grows only as pages are used.
        conn.pragma_update(None, "cache_size", -256 * 1024)?;
        migrations::migrate(&mut conn)?;
        Ok(Store { conn })
    }

    // -- runs ---------------------------------------------------------------

    pub fn start_run(&self, job: &str, kind: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (job, kind, started_at) VALUES (?1, ?2, ?3)",
            params![job, kind, now()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run_id: i64, t: &RunTotals) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, files = ?4, records = ?5, rejects = ?6,
                    matches = ?7, conflicts = ?8, report_dir = ?9, error = ?10
             WHERE id = ?1",
            params![
                run_id,
                now(),
                t.outcome,
                t.files as i64,
                t.records as i64,
                t.rejects as i64,
                t.matches as i64,
                t.conflicts as i64,
                t.report_dir,
                t.error
            ],
        )?;
        Ok(())
    }

    /// Newest first.
    pub fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR job = ?1) AND pruned_at IS NULL
             ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![job, limit.min(i64::MAX as usize) as i64], run_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs that started but never finished (killed): mark them so.
    pub fn close_abandoned_runs(&self, job: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE runs SET outcome = 'abandoned', finished_at = ?2 WHERE job = ?1 AND outcome = 'running'",
            params![job, now()],
        )?)
    }

    /// The folder run `run_id`'s reports are about to take: on record
    /// before it exists, so that a run killed just after has its folder
    /// pruned with it (see [`crate::report::write`]).
    pub fn claim_report_dir(&self, run_id: i64, dir: &str) -> Result<()> {
        self.conn.execute("UPDATE runs SET report_dir = ?2 WHERE id = ?1", params![run_id, dir])?;
        Ok(())
    }

    /// The files loaded by runs of `job` that ended without writing their
    /// reports (killed after the load committed, or failed after it; a
    /// run killed as it finished them had them neither mailed nor counted
    /// in its history), now
    /// run `run_id`'s: its reports show them and their rejects, as if it
    /// had loaded them, where they would otherwise be in no report. A file
    /// whose load is still to finish (`loading`) is moved when it resumes.
    pub fn carry_unreported_files(&self, job: &str, run_id: i64) -> Result<Vec<CarriedFile>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.id, f.run_id, f.side, f.name, f.read, f.accepted, f.rejected, f.warnings,
                    f.stale, f.in_part, f.ignored
             FROM files f JOIN runs r ON r.id = f.run_id
             WHERE f.job = ?1 AND r.id <> ?2 AND r.outcome <> 'running'
               AND (r.report_dir IS NULL OR r.outcome = 'abandoned')
               AND r.pruned_at IS NULL AND f.state <> 'loading'
             ORDER BY f.id",
        )?;
        let rows = stmt.query_map(params![job, run_id], |r| {
            let side: String = r.get(2)?;
            Ok((
                r.get::<_, i64>(0)?,
                CarriedFile {
                    run_id: r.get(1)?,
                    side: Side::parse(&side).unwrap_or(Side::Ehr),
                    name: r.get(3)?,
                    read: r.get::<_, i64>(4)? as u64,
                    accepted: r.get::<_, i64>(5)? as u64,
                    rejected: r.get::<_, i64>(6)? as u64,
                    warnings: r.get::<_, i64>(7)? as u64,
                    older: Older {
                        stale: r.get::<_, i64>(8)? as u64,
                        in_part: r.get::<_, i64>(9)? as u64,
                        ignored: r.get::<_, i64>(10)? as u64,
                    },
                },
            ))
        })?;
        let files: Vec<(i64, CarriedFile)> = rows.collect::<rusqlite::Result<_>>()?;
        let mut carry = self.conn.prepare_cached("UPDATE files SET run_id = ?2 WHERE id = ?1")?;
        for (id, _) in &files {
            carry.execute(params![id, run_id])?;
        }
        Ok(files.into_iter().map(|(_, f)| f).collect())
    }

    /// When the schedule of `job` was last taken care of, at `now`: the
    /// start of its latest run that did not crash, else when run-due first
    /// saw the job (recorded now if this is the first time), so that a new
    /// job does not run at once for a firing before it was there. A run by
    /// hand counts though run-due had not seen the job then (go-live before
    /// cron was set up): the firings since are due. A run that crashed
    /// (still `running` or `abandoned`) does not count, so the next run-due
    /// runs the job again. Neither does a run recorded after `now`, while
    /// the clock was ahead (a bad clock at boot, a VM restored): kept, it
    /// would stop the schedule until that time. A first sighting after
    /// `now` is moved to `now`. The flag says a run was passed over so.
    pub fn schedule_since(
        &self,
        job: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(chrono::DateTime<chrono::Utc>, bool)> {
        self.conn.execute(
            "INSERT INTO schedules (job, first_seen) VALUES (?1, ?2)
             ON CONFLICT (job) DO UPDATE SET first_seen = ?2 WHERE first_seen > ?2",
            params![job, timestamp(now)],
        )?;
        let since = self.schedule_since_peek(job, now)?;
        since.ok_or_else(|| anyhow::anyhow!("job {job} has no schedule row"))
    }

    /// [`Store::schedule_since`] without recording anything (for `ferry
    /// status`): None for a job run-due has not seen and nobody has run.
    pub fn schedule_since_peek(
        &self,
        job: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<(chrono::DateTime<chrono::Utc>, bool)>> {
        let (first_seen, last_run, ahead): (Option<String>, Option<String>, bool) = self.conn.query_row(
            "SELECT (SELECT min(first_seen, ?2) FROM schedules WHERE job = ?1),
                    (SELECT max(started_at) FROM runs
                     WHERE job = ?1 AND outcome NOT IN ('running', 'abandoned') AND started_at <= ?2),
                    EXISTS (SELECT 1 FROM runs WHERE job = ?1 AND started_at > ?2)",
            params![job, timestamp(now)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some(since) = last_run.or(first_seen) else { return Ok(None) };
        let at = parse_timestamp(&since).with_context(|| format!("bad time {since:?} in the store"))?;
        Ok(Some((at, ahead)))
    }

    /// Finished runs of `job` that started before `before`, oldest first,
    /// not yet pruned; never the run `except` (the one going on).
    pub fn runs_started_before(
        &self,
        job: &str,
        before: chrono::DateTime<chrono::Utc>,
        except: i64,
    ) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE job = ?1 AND started_at < ?2 AND pruned_at IS NULL AND outcome != 'running' AND id != ?3
             ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![job, timestamp(before), except], run_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The files a run took, as the ledger has them.
    pub fn files_of_run(&self, run_id: i64) -> Result<Vec<RunFile>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, state, local_path FROM files WHERE run_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(RunFile { name: r.get(0)?, state: r.get(1)?, local_path: r.get(2)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forget a pruned run: its rejects go, and so do the bytes of its
    /// files' DELETED messages (patient data nobody is to act on); messages
    /// still in ERROR keep theirs, to be shown and retried. The run row goes
    /// too unless a ledger row points at it (the ledger is what stops a
    /// file being loaded twice, so it stays), in which case it is marked
    /// pruned and no longer listed. One transaction.
    pub fn prune_run(&mut self, run_id: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM rejects WHERE file_id IN (SELECT id FROM files WHERE run_id = ?1)",
            [run_id],
        )?;
        let files: i64 =
            tx.query_row("SELECT count(*) FROM files WHERE run_id = ?1", [run_id], |r| r.get(0))?;
        if files == 0 {
            tx.execute("DELETE FROM runs WHERE id = ?1", [run_id])?;
        } else {
            tx.execute("UPDATE runs SET pruned_at = ?2 WHERE id = ?1", params![run_id, now()])?;
        }
        tx.execute(FORGET_DELETED_MESSAGES, [])?;
        tx.commit()?;
        Ok(())
    }

    /// Set a finished run's outcome again (push-back failed after the run).
    pub fn set_run_outcome(&self, run_id: i64, outcome: &str, error: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET outcome = ?2, error = COALESCE(?3, error) WHERE id = ?1",
            params![run_id, outcome, error],
        )?;
        Ok(())
    }

    // -- ledger -------------------------------------------------------------

    /// A file seen before with this name, size and source mtime: it can be
    /// skipped without fetching it again.
    pub fn ledger_seen(
        &self,
        job: &str,
        side: Side,
        name: &str,
        size: u64,
        mtime: &str,
    ) -> Result<Option<LedgerEntry>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LEDGER_COLUMNS} FROM files
             WHERE job = ?1 AND side = ?2 AND name = ?3 AND size = ?4 AND mtime = ?5
             ORDER BY id DESC LIMIT 1"
        ))?;
        Ok(stmt.query_row(params![job, side.as_str(), name, size as i64, mtime], ledger_entry).optional()?)
    }

    /// The ledger's rule: same name, size and hash is the same file.
    pub fn ledger_find(
        &self,
        job: &str,
        side: Side,
        name: &str,
        size: u64,
        sha256: &str,
    ) -> Result<Option<LedgerEntry>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LEDGER_COLUMNS} FROM files
             WHERE job = ?1 AND side = ?2 AND name = ?3 AND size = ?4 AND sha256 = ?5"
        ))?;
        Ok(stmt.query_row(params![job, side.as_str(), name, size as i64, sha256], ledger_entry).optional()?)
    }

    /// The local copy and identity of a file in the ledger, to go on loading it.
    pub fn ledger_taken(&self, file_id: i64) -> Result<TakenFile> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT side, name, size, mtime, sha256, local_path, schema FROM files WHERE id = ?1",
        )?;
        Ok(stmt.query_row([file_id], |r| {
            let side: String = r.get(0)?;
            Ok(TakenFile {
                side: Side::parse(&side).unwrap_or(Side::Ehr),
                name: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                mtime: r.get(3)?,
                sha256: r.get(4)?,
                local_path: r.get(5)?,
                schema: r.get(6)?,
            })
        })?)
    }

    /// Go on loading a file whose load stopped after a checkpoint, in run
    /// `run_id`, which the file then belongs to: its rejects, those of the
    /// messages loaded before the stop too, are in that run's reports (the
    /// run that stopped wrote none).
    pub fn resume_file(&mut self, job: &str, file_id: i64, run_id: i64) -> Result<FileLoad<'_>> {
        let load = FileLoad::reopen(&self.conn, job, file_id)?;
        load.move_to_run(run_id)?;
        Ok(load)
    }

    /// The latest earlier file of the same job and side with the same bytes
    /// as ledger entry `file_id` under another name, as (name, loaded at):
    /// a file sent again under a new name. Empty files are all alike, and
    /// are not compared.
    pub fn same_content(&self, file_id: i64) -> Result<Option<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.name, o.loaded_at FROM files f JOIN files o
                 ON o.job = f.job AND o.side = f.side AND o.sha256 = f.sha256 AND o.id < f.id AND o.name <> f.name
             WHERE f.id = ?1 AND f.size > 0 ORDER BY o.id DESC LIMIT 1",
        )?;
        Ok(stmt.query_row([file_id], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
    }

    /// Whether the ledger holds a file of `job`, `side` and `name` loaded
    /// after ledger row `file_id` was (last) loaded: a later version of a
    /// snapshot.
    pub fn loaded_since(&self, job: &str, side: Side, name: &str, file_id: i64) -> Result<bool> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT 1 FROM files f JOIN files o ON o.id = ?4
             WHERE f.job = ?1 AND f.side = ?2 AND f.name = ?3 AND f.id <> o.id
               AND (f.loaded_at > o.loaded_at OR (f.loaded_at = o.loaded_at AND f.id > o.id))",
        )?;
        Ok(stmt.exists(params![job, side.as_str(), name, file_id])?)
    }

    /// This job's loads that stopped after a checkpoint (`loading`), oldest first.
    pub fn interrupted_loads(&self, job: &str) -> Result<Vec<LedgerEntry>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LEDGER_COLUMNS} FROM files WHERE job = ?1 AND state = 'loading' ORDER BY id"
        ))?;
        let rows = stmt.query_map([job], ledger_entry)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_file_state(&self, file_id: i64, state: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE files SET state = ?2, state_at = ?3 WHERE id = ?1",
            params![file_id, state, now()],
        )?;
        Ok(())
    }

    /// Load one parsed flat file, its ledger row and its rejects in one
    /// transaction. Returns the ledger id.
    pub fn load_file(
        &mut self,
        job: &str,
        run_id: i64,
        file: &TakenFile,
        parsed: &ParsedFile,
        mode: LoadMode,
    ) -> Result<i64> {
        let batching =
            Batching { resume: None, reload: None, size: usize::MAX, progress: &mut |_| {}, state: "loaded" };
        self.load_file_batched(job, run_id, file, parsed, mode, batching)
    }

    /// Load one parsed flat file, committing every `batching.size` records
    /// with a checkpoint, or go on from the checkpoint of an interrupted
    /// load. The file is `loading` in the ledger until its last batch, its
    /// rejects and its counts are committed together. Returns the ledger id.
    pub fn load_file_batched(
        &mut self,
        job: &str,
        run_id: i64,
        file: &TakenFile,
        parsed: &ParsedFile,
        mode: LoadMode,
        batching: Batching,
    ) -> Result<i64> {
        let (mut load, done) = match (batching.resume, batching.reload) {
            (Some(entry), _) => (self.resume_file(job, entry.id, run_id)?, entry.records_done as usize),
            (None, Some(id)) => (FileLoad::reload(&self.conn, job, run_id, id, file, mode)?, 0),
            (None, None) => (self.begin_file(job, run_id, file, mode)?, 0),
        };
        let total = parsed.records.len();
        let mut n = done.min(total);
        while n < total {
            let end = (n + batching.size.max(1)).min(total);
            let batch: Vec<(&Patient, u64)> =
                parsed.records[n..end].iter().map(|r| (&r.patient, r.line)).collect();
            load.plain_patients(&batch)?;
            n = end;
            if n < total {
                load.checkpoint(n as u64)?;
                (batching.progress)(n as u64);
            }
        }
        for r in &parsed.rejects {
            load.reject(r)?;
        }
        let counts = Counts {
            read: parsed.read,
            accepted: parsed.accepted(),
            rejected: parsed.rejected(),
            warnings: parsed.warnings(),
        };
        load.finish(&counts, batching.state)
    }

    /// Start loading a file: its ledger row and everything in it go in one
    /// transaction, committed by [`FileLoad::finish`]. Dropped unfinished,
    /// nothing of the file stays.
    pub fn begin_file(
        &mut self,
        job: &str,
        run_id: i64,
        file: &TakenFile,
        mode: LoadMode,
    ) -> Result<FileLoad<'_>> {
        FileLoad::begin(&self.conn, job, run_id, file, mode)
    }

    // -- records ------------------------------------------------------------

    /// Every current patient of both sides (EHR, practice), read at once:
    /// the practice side through a second, read-only connection on another
    /// thread (WAL lets readers share the file), for a store on disk.
    pub fn patients_of_both(&self, job: &str) -> Result<(Vec<PatientRecord>, Vec<PatientRecord>)> {
        let path = self.conn.path().filter(|p| !p.is_empty()).map(str::to_string);
        let Some(path) = path else {
            return Ok((self.patients(job, Side::Ehr)?, self.patients(job, Side::Practice)?));
        };
        let (ehr, practice) = std::thread::scope(|scope| {
            let practice = scope.spawn(|| -> Result<Vec<PatientRecord>> {
                let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                conn.busy_timeout(std::time::Duration::from_secs(30))?;
                conn.pragma_update(None, "cache_size", -256 * 1024)?;
                Store { conn }.patients(job, Side::Practice)
            });
            let ehr = self.patients(job, Side::Ehr);
            (
                ehr,
                practice
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("reading practice patients panicked"))),
            )
        });
        Ok((ehr?, practice?))
    }

    /// The files of a job's side: their ledger names, and their load time
    /// for rows without a time of their own. Few next to the rows, so
    /// looked up once rather than joined on every row.
    fn file_facts(&self, job: &str, side: Side) -> Result<HashMap<i64, FileFacts>> {
        let mut files = HashMap::new();
        let mut stmt =
            self.conn.prepare_cached("SELECT id, name, loaded_at FROM files WHERE job = ?1 AND side = ?2")?;
        let mut rows = stmt.query(params![job, side.as_str()])?;
        while let Some(r) = rows.next()? {
            let loaded: Option<String> = r.get(2)?;
            files.insert(r.get(0)?, (r.get(1)?, loaded.as_deref().and_then(parse_timestamp)));
        }
        Ok(files)
    }

    /// Every current patient of one side, as [`Store::patients`] reads them,
    /// built instead from the flat files this run has just loaded (ledger
    /// id and parsed file, in load order) when those files account for
    /// every row the store holds for the side: the first backfill, or a
    /// job whose each run brings a full snapshot. The caller must not have
    /// loaded anything else for the side in this run (HL7). `None` when the
    /// store holds other rows too; then nothing is taken from `loaded`.
    /// Otherwise the patients are moved out of it. At 1M x 1M patients,
    /// reading the rows back cost ~9 CPU seconds.
    pub fn patients_just_loaded(
        &self,
        job: &str,
        side: Side,
        loaded: &mut [(i64, ParsedFile)],
    ) -> Result<Option<Vec<PatientRecord>>> {
        if loaded.is_empty() {
            return Ok(None);
        }
        // Every record loaded upserted the row of its own ID, so the rows
        // include these IDs; as many rows as IDs means nothing else.
        let total = self.side_count(job, side)? as i64;
        // The row of each own ID is its last record, in load order.
        let mut last: crate::FastMap<&str, (usize, usize)> =
            crate::FastMap::with_capacity_and_hasher(total as usize, Default::default());
        for (f, (_, parsed)) in loaded.iter().enumerate() {
            for (r, rec) in parsed.records.iter().enumerate() {
                last.insert(rec.patient.own_id(side).unwrap_or_default(), (f, r));
            }
        }
        if last.len() as i64 != total {
            tracing::debug!(%side, rows = total, records = last.len(), "Store holds older rows: reading them back.");
            return Ok(None);
        }
        // In own-ID order, as `patients` returns them: the keys sorted, not
        // the records, which are large.
        let mut keys: Vec<(&str, (usize, usize))> = last.into_iter().collect();
        keys.par_sort_unstable_by(|a, b| a.0.cmp(b.0));
        let order: Vec<(usize, usize)> = keys.into_iter().map(|(_, at)| at).collect();
        let facts = self.file_facts(job, side)?;
        let mut out = Vec::with_capacity(order.len());
        for (f, r) in order {
            let (file_id, parsed) = &mut loaded[f];
            let (name, loaded_at) = facts.get(file_id).cloned().unwrap_or_default();
            let rec = &mut parsed.records[r];
            out.push(PatientRecord {
                side,
                patient: std::mem::take(&mut rec.patient),
                source_file: name,
                source_line: rec.line,
                updated: loaded_at,
            });
        }
        Ok(Some(out))
    }

    /// How many patients the store holds for one side of a job.
    pub fn side_count(&self, job: &str, side: Side) -> Result<u64> {
        let count: i64 = self.conn.query_row(
            "SELECT count(*) FROM patients WHERE job = ?1 AND side = ?2",
            params![job, side.as_str()],
            |r| r.get(0),
        )?;
        Ok(count as u64)
    }

    /// Every current patient of one side, in own-ID order (stable reports).
    pub fn patients(&self, job: &str, side: Side) -> Result<Vec<PatientRecord>> {
        let files = self.file_facts(job, side)?;
        let cols: Vec<String> = field_columns().map(|c| format!("p.{c}")).collect();
        // NOT INDEXED: a scan in table order reads the pages once, in
        // order; walking the (own_id, job, side) index visits the rows at
        // random. The own-ID order is restored by sorting below.
        let sql = format!(
            "SELECT p.file_id, p.line, p.source_time, {} FROM patients p NOT INDEXED
             WHERE p.job = ?1 AND p.side = ?2",
            cols.join(", ")
        );
        let mut out = Vec::with_capacity(self.side_count(job, side)? as usize);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![job, side.as_str()])?;
        while let Some(r) = rows.next()? {
            let mut patient = Patient::default();
            for (i, f) in Field::ALL.iter().enumerate() {
                f.set(&mut patient, compact_text(r, i + 3)?);
            }
            let (name, loaded) = files.get(&r.get::<_, i64>(0)?).cloned().unwrap_or_default();
            let source_time: Option<String> = r.get(2)?;
            out.push(PatientRecord {
                side,
                patient,
                source_file: name,
                source_line: r.get::<_, i64>(1)? as u64,
                updated: match source_time {
                    Some(t) => parse_timestamp(&t),
                    None => loaded,
                },
            });
        }
        out.par_sort_unstable_by(|a, b| a.own_id().cmp(b.own_id()));
        Ok(out)
    }

    /// Every recorded change of a carried ID, oldest first.
    pub fn id_changes(&self, job: &str) -> Result<Vec<IdChange>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT side, own_id, kind, old_value, new_value, source_time FROM id_history
             WHERE job = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([job], |r| {
            let side: String = r.get(0)?;
            let kind: String = r.get(2)?;
            Ok(IdChange {
                side: Side::parse(&side).unwrap_or(Side::Ehr),
                own_id: r.get(1)?,
                key: if kind == "ehr_id" { LinkKey::EhrId } else { LinkKey::PracticeMrn },
                old: r.get(3)?,
                new: r.get(4)?,
                time: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every recorded ADT^A40 merge: (surviving EHR ID, merged EHR ID, time), in order.
    pub fn merges(&self, job: &str) -> Result<Vec<(String, String, Option<String>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT surviving_id, merged_id, source_time FROM merges WHERE job = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appointments by status, for the summary.
    pub fn appointment_counts(&self, job: &str) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT status, count(*) FROM appointments WHERE job = ?1 GROUP BY status ORDER BY status",
        )?;
        let rows = stmt.query_map([job], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Rejects and warnings of the files a run loaded: (file name, reject).
    pub fn rejects_of_run(&self, run_id: i64) -> Result<Vec<(String, Reject)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.name, r.line, r.severity, r.record_id, r.col, r.reason, r.field
             FROM rejects r JOIN files f ON f.id = r.file_id
             WHERE f.run_id = ?1 ORDER BY f.id, r.line, r.id",
        )?;
        let rows = stmt.query_map(params![run_id], |r| {
            let severity: String = r.get(2)?;
            Ok((
                r.get(0)?,
                Reject {
                    line: r.get::<_, i64>(1)? as u64,
                    severity: Severity::parse(&severity).unwrap_or(Severity::Rejected),
                    record_id: r.get(3)?,
                    column: r.get(4)?,
                    reason: r.get(5)?,
                    field: r.get::<_, Option<String>>(6)?.as_deref().and_then(Field::parse),
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of ledger rows and patient rows for a job (for tests and status).
    pub fn counts(&self, job: &str) -> Result<(u64, u64)> {
        let files: i64 =
            self.conn.query_row("SELECT count(*) FROM files WHERE job = ?1", [job], |r| r.get(0))?;
        let patients: i64 =
            self.conn.query_row("SELECT count(*) FROM patients WHERE job = ?1", [job], |r| r.get(0))?;
        Ok((files as u64, patients as u64))
    }
}

/// A file's ledger name and load time.
type FileFacts = (String, Option<chrono::DateTime<chrono::Utc>>);

/// A text column as a record's value, read without an intermediate `String`.
fn compact_text(row: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<CompactString>> {
    let value = row.get_ref(i)?;
    value
        .as_str_or_null()
        .map(|t| t.map(CompactString::from))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatfile::ParsedRecord;

    #[test]
    fn migrate_twice() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::migrate(&mut conn).unwrap();
        migrations::migrate(&mut conn).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, migrations::latest());
    }

    /// The rows of a two-column query, as pairs.
    fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
        conn: &Connection,
        sql: &str,
    ) -> Vec<(A, B)> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    fn taken(name: &str, sha: &str) -> TakenFile {
        TakenFile {
            side: Side::Ehr,
            name: name.into(),
            size: 10,
            mtime: "1".into(),
            sha256: sha.into(),
            local_path: "/x".into(),
            schema: "s".into(),
        }
    }

    fn parsed(ids: &[&str]) -> ParsedFile {
        ParsedFile {
            read: ids.len() as u64,
            records: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ParsedRecord {
                    line: i as u64 + 2,
                    patient: Patient {
                        ehr_id: Some((*id).into()),
                        last_name: Some("X".into()),
                        ..Patient::default()
                    },
                })
                .collect(),
            ..ParsedFile::default()
        }
    }

    #[test]
    fn load_upsert_and_replace() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.start_run("j", "run").unwrap();
        s.load_file("j", run, &taken("a.csv", "h1"), &parsed(&["E1", "E2"]), LoadMode::Upsert).unwrap();
        s.load_file("j", run, &taken("b.csv", "h2"), &parsed(&["E2", "E3"]), LoadMode::Upsert).unwrap();
        let ids: Vec<String> =
            s.patients("j", Side::Ehr).unwrap().iter().map(|p| p.own_id().to_string()).collect();
        assert_eq!(ids, ["E1", "E2", "E3"]);
        let e2 = s.patients("j", Side::Ehr).unwrap().into_iter().find(|p| p.own_id() == "E2").unwrap();
        assert_eq!(e2.source_file, "b.csv");
        s.load_file("j", run, &taken("c.csv", "h3"), &parsed(&["E9"]), LoadMode::Replace).unwrap();
        let ids: Vec<String> =
            s.patients("j", Side::Ehr).unwrap().iter().map(|p| p.own_id().to_string()).collect();
        assert_eq!(ids, ["E9"]);
    }

    /// A message older than the stored record writes nothing, not even ID
    /// history; one older than the merge of its ID does not bring the ID
    /// back, one newer does, with a warning; a record without a time keeps
    /// the stored time.
    #[test]
    fn stale_messages_and_merged_ids_leave_what_is_newer() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.start_run("j", "run").unwrap();
        let mut load = s.begin_file("j", run, &taken("a.hl7", "h1"), LoadMode::Upsert).unwrap();
        let mut number = 0;
        let mut apply = |load: &mut FileLoad, id: &str, mrn: &str, hour: u32| {
            number += 1;
            let row = MessageRow {
                number,
                line: number,
                control_id: None,
                event: "ADT^A08",
                time: None,
                state: "PROCESSED",
                reason: None,
                raw: None,
                cut: false,
            };
            let message = load.message(&row).unwrap();
            let p = Patient {
                ehr_id: Some(id.into()),
                practice_mrn: Some(mrn.into()),
                last_name: Some(format!("At{hour}").into()),
                ..Patient::default()
            };
            let time = format!("2026-11-20T{hour:02}:00:00Z");
            (load.patient(&p, number, Some(&time), Some(message)).unwrap(), message)
        };
        assert_eq!(apply(&mut load, "E4", "M4a", 10).0, Applied::Written);
        assert_eq!(apply(&mut load, "E4", "M4b", 11).0, Applied::Written);
        assert_eq!(apply(&mut load, "E4", "M4a", 9).0, Applied::Stale, "older, arriving last");

        assert_eq!(apply(&mut load, "E6", "M6", 10).0, Applied::Written);
        let (_, merge_message) = apply(&mut load, "E5", "M5", 12);
        load.merge("E5", "E6", Some("2026-11-20T12:00:00Z"), Some(merge_message)).unwrap();
        assert_eq!(apply(&mut load, "E6", "M6", 11).0, Applied::Stale, "older than the merge");
        assert_eq!(apply(&mut load, "E6", "M6", 13).0, Applied::Written, "newer than the merge");
        load.plain_patients(&[(&Patient { ehr_id: Some("E4".into()), ..Patient::default() }, 99)]).unwrap();
        load.finish(&Counts::default(), "loaded").unwrap();

        let history: Vec<(String, String)> =
            pairs(&s.conn, "SELECT old_value, new_value FROM id_history WHERE own_id = 'E4' ORDER BY id");
        assert_eq!(history, [("M4a".to_string(), "M4b".to_string())], "no change back to the old MRN");
        let time: String = s
            .conn
            .query_row("SELECT source_time FROM patients WHERE own_id = 'E4'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(time, "2026-11-20T11:00:00Z", "a record without a time keeps the stored one");
        let warnings: Vec<(i64, String)> =
            pairs(&s.conn, "SELECT line, reason FROM rejects WHERE severity = 'warning'");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].1.contains("merged into another patient"), "{warnings:?}");
    }

    #[test]
    fn patients_just_loaded_are_the_patients_read_back() {
        let dir = tempfile::tempdir().unwrap();
        crate::generate::generate(&crate::generate::GenOptions {
            patients: 500,
            seed: 3,
            noise: crate::generate::Noise::default(),
            out_dir: dir.path().to_path_buf(),
        })
        .unwrap();
        let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let parse = |file: &str, schema: &str, side: Side| {
            let schema = crate::flatfile::Schema::load(&schemas.join(format!("{schema}.toml"))).unwrap();
            let bytes = std::fs::read(dir.path().join(file)).unwrap();
            crate::flatfile::parse_bytes(
                &bytes,
                &schema,
                side,
                chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            )
        };
        let ehr = parse("ehr_patients.csv", "ehr_patients", Side::Ehr);
        // A second EHR file that repeats some IDs: its records win.
        let mut later = parse("ehr_patients.csv", "ehr_patients", Side::Ehr);
        later.records.truncate(40);
        for r in &mut later.records {
            r.patient.city = Some("Later".into());
        }
        let practice = parse("practice_roster.csv", "practice_roster", Side::Practice);
        assert!(ehr.records.len() > 400 && practice.records.len() > 400);

        let mut s = Store::open_in_memory().unwrap();
        let run = s.start_run("j", "run").unwrap();
        let mut loaded = Vec::new();
        for (name, parsed, side) in
            [("e1.csv", ehr, Side::Ehr), ("e2.csv", later, Side::Ehr), ("p.csv", practice, Side::Practice)]
        {
            let taken = TakenFile { side, ..taken(name, name) };
            let id = s.load_file("j", run, &taken, &parsed, LoadMode::Upsert).unwrap();
            loaded.push((side, id, parsed));
        }
        for side in [Side::Ehr, Side::Practice] {
            let mut ours: Vec<(i64, ParsedFile)> =
                loaded.iter().filter(|l| l.0 == side).map(|l| (l.1, l.2.clone())).collect();
            let built =
                s.patients_just_loaded("j", side, &mut ours).unwrap().expect("every row is this run's");
            assert_eq!(built, s.patients("j", side).unwrap(), "{side}");
        }
        let later_city = s
            .patients("j", Side::Ehr)
            .unwrap()
            .iter()
            .filter(|p| p.patient.city.as_deref() == Some("Later"))
            .count();
        assert_eq!(later_city, 40);

        // A row from another file: read from the store instead.
        s.load_file("j", run, &taken("old.csv", "h9"), &parsed(&["E-OLD"]), LoadMode::Upsert).unwrap();
        let mut ours: Vec<(i64, ParsedFile)> =
            loaded.iter().filter(|l| l.0 == Side::Ehr).map(|l| (l.1, l.2.clone())).collect();
        assert!(s.patients_just_loaded("j", Side::Ehr, &mut ours).unwrap().is_none());
        assert!(ours[0].1.records[0].patient.ehr_id.is_some(), "nothing taken when it says no");
    }

    #[test]
    fn same_file_twice_is_refused_by_the_ledger() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.start_run("j", "run").unwrap();
        s.load_file("j", run, &taken("a.csv", "h1"), &parsed(&["E1"]), LoadMode::Upsert).unwrap();
        assert!(s.ledger_find("j", Side::Ehr, "a.csv", 10, "h1").unwrap().is_some());
        // A second load of the same name, size and hash violates the ledger's
        // unique key and leaves nothing behind (one transaction).
        assert!(s.load_file("j", run, &taken("a.csv", "h1"), &parsed(&["E7"]), LoadMode::Upsert).is_err());
        assert_eq!(s.counts("j").unwrap(), (1, 1));
    }
}
