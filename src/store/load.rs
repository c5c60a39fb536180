//! Loading one file: the ledger row, records, messages and rejects inside
//! one transaction. Records carry the time their source says they were
//! true (an HL7 message's own timestamp); an older one arriving late never
//! overwrites a newer one.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::{
    CachedStatement, Connection, OptionalExtension, Statement, Transaction, TransactionBehavior, params,
};

use super::{LoadMode, TakenFile, field_columns, now};
use crate::model::{Appointment, AppointmentField, Field, Patient, Reject, Severity, Side};

/// A file's totals, written to its ledger row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub read: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub warnings: u64,
}

/// Whether a record changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Written,
    /// Older than the stored record: written to the fields no newer message
    /// said, the rest left as they are.
    InPart,
    /// The store already holds newer data for this record.
    Stale,
}

/// One HL7 message as the queue keeps it.
#[derive(Debug, Clone)]
pub struct MessageRow<'a> {
    pub number: u64,
    pub line: u64,
    pub control_id: Option<&'a str>,
    pub event: &'a str,
    /// RFC 3339 UTC.
    pub time: Option<&'a str>,
    /// PROCESSED or ERROR.
    pub state: &'a str,
    pub reason: Option<&'a str>,
    /// Kept for messages in ERROR, so they can be shown and retried.
    pub raw: Option<&'a [u8]>,
    /// The message may have been cut short (its `raw` ends at the cut), so
    /// it can never be loaded: `ferry queue retry` refuses it.
    pub cut: bool,
}

/// The patient upsert, built once from the field list: it runs per record.
fn upsert_patient_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let cols: Vec<&str> = field_columns().collect();
        let placeholders: Vec<String> = (0..cols.len()).map(|i| format!("?{}", i + 7)).collect();
        // The fields the record says nothing about (`Patient::keep_stored`,
        // as bits in the last parameter) keep their stored values.
        let keep = cols.len() + 7;
        let updates: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = iif(?{keep} & {}, patients.{c}, excluded.{c})", 1u32 << i))
            .collect();
        // A record without a time (a flat file's) keeps the stored time, so
        // that a message older than that time stays older than the record.
        let said_times = keep + 1;
        format!(
            "INSERT INTO patients (job, side, own_id, file_id, line, source_time, said_times, {})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?{said_times}, {})
             ON CONFLICT (own_id, job, side) DO UPDATE SET file_id = excluded.file_id,
                 line = excluded.line, source_time = coalesce(excluded.source_time, patients.source_time),
                 said_times = excluded.said_times, {}",
            cols.join(", "),
            placeholders.join(", "),
            updates.join(", ")
        )
    })
}

// The bits the appointment upsert tests, in `AppointmentField` order, and
// then `APPOINTMENT_PATIENT` (64).
const _: () = {
    assert!(APPOINTMENT_PATIENT == 64);
    use AppointmentField as F;
    let order = [F::ProviderId, F::DepartmentId, F::AppointmentType, F::Start, F::DurationMinutes, F::Status];
    let mut i = 0;
    while i < order.len() {
        assert!(order[i] as usize == i);
        i += 1;
    }
};

/// Every field of a patient, as `FieldSet` bits.
const ALL_FIELDS: u32 = (1 << Field::ALL.len()) - 1;

/// The bit of an appointment's patient IDs in the appointment upsert's
/// keep bits: every SIU message says them (its PID is required), but a
/// late one must not set them over a newer message's. (The one after
/// `Status`, the last of `AppointmentField`.)
const APPOINTMENT_PATIENT: u32 = 1 << (AppointmentField::Status as u32 + 1);

/// Every field of an appointment the upsert keeps or sets, as bits.
const ALL_APPOINTMENT_FIELDS: u32 = (APPOINTMENT_PATIENT << 1) - 1;

/// What an ADT^A40 did ([`FileLoad::merge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// The merged ID's row stays: a message newer than the merge wrote it
    /// (the merge arrived late, and in time order that message would have
    /// brought the ID back; see `merged_away`).
    pub kept: bool,
    /// The merge is new, and another took the same ID into another
    /// patient: the two contradict each other, and both are listed.
    pub elsewhere: bool,
    /// How many of the merged ID's appointments became the survivor's.
    pub appointments: u64,
}

/// When the fields of a stored patient or appointment were last said, where
/// that is not the row's `source_time`: each entry a time and the fields (as
/// bits) the message of that time said last. A message newer than the row
/// leaves the fields it does not say at the time they were said; a late
/// message (older than the row) is applied to the fields no newer message
/// said, so what it alone says is not lost. Stored as `TIME BITS;TIME BITS`
/// in `said_times` (of `patients` and `appointments`), NULL when every
/// field is as new as the row. An empty time means never said: the fields
/// the message that made the row left out, which any late message may set.
#[derive(Debug, Default, PartialEq, Eq)]
struct SaidTimes(Vec<(String, u32)>);

impl SaidTimes {
    fn parse(text: Option<&str>) -> SaidTimes {
        let entries = text.unwrap_or_default().split(';').filter_map(|entry| {
            let (time, bits) = entry.split_once(' ')?;
            Some((time.to_string(), bits.parse().ok()?))
        });
        SaidTimes(entries.collect())
    }

    fn text(&self) -> Option<String> {
        let entries: Vec<String> = self.0.iter().map(|(time, bits)| format!("{time} {bits}")).collect();
        (!entries.is_empty()).then(|| entries.join(";"))
    }

    /// Keeps only `bits` of each entry, and drops the entries left empty.
    fn keep_only(&mut self, bits: u32) {
        self.0.retain_mut(|(_, b)| {
            *b &= bits;
            *b != 0
        });
    }

    /// Of the fields `all`, those said after `time`, where the row's own
    /// time is `row`.
    fn newer_than(&self, all: u32, time: &str, row: &str) -> u32 {
        let listed = self.0.iter().fold(0, |all, (_, b)| all | b);
        let newer = self.0.iter().filter(|(t, _)| t.as_str() > time).fold(0, |all, (_, b)| all | b);
        if row > time { newer | (all & !listed) } else { newer }
    }
}

/// How a record is written over the stored row (see [`apply_in_time`]).
#[derive(Debug, PartialEq, Eq)]
struct InTime<'t> {
    /// The fields the upsert keeps, as bits.
    keep: u32,
    /// The row's said times after it (`SaidTimes::text`).
    said_times: Option<String>,
    /// The row's time after it: the record's, or the row's own when the
    /// record is late.
    row_time: Option<&'t str>,
    applied: Applied,
}

/// What an upsert of a record with time `time` does to a stored row of time
/// `row` whose fields were said at `said`, where the record's fields are the
/// bits `all` and it keeps `keep` (says nothing of them). `None` when it
/// changes nothing, as every field it says was said later. A record or row
/// without a time is written as it is; `stored` is false when there is no
/// row yet, and the fields the record leaves out are then never said.
fn apply_in_time<'t>(
    all: u32,
    keep: u32,
    time: Option<&'t str>,
    stored: bool,
    row: Option<&'t str>,
    said: Option<&str>,
) -> Option<InTime<'t>> {
    let (Some(time), Some(row)) = (time, row) else {
        let never = all & keep;
        let said_times = (!stored && time.is_some() && never != 0).then(|| format!(" {never}"));
        return Some(InTime { keep, said_times, row_time: time, applied: Applied::Written });
    };
    let mut times = SaidTimes::parse(said);
    let says = all & !keep;
    if time >= row {
        // The fields it leaves out stay at the time they were said.
        let unsaid = all & !says;
        let listed = times.0.iter().fold(0, |all, (_, b)| all | b);
        times.keep_only(unsaid);
        if row < time && unsaid & !listed != 0 {
            times.0.push((row.to_string(), unsaid & !listed));
        }
        return Some(InTime {
            keep,
            said_times: times.text(),
            row_time: Some(time),
            applied: Applied::Written,
        });
    }
    let apply = says & !times.newer_than(all, time, row);
    if apply == 0 {
        return None;
    }
    times.keep_only(!apply);
    times.0.push((time.to_string(), apply));
    Some(InTime {
        keep: all & !apply,
        said_times: times.text(),
        row_time: Some(row),
        applied: Applied::InPart,
    })
}

/// Bind one patient's values to the statement of [`upsert_patient_sql`], in
/// place: no list of values or of parameters is built per record. `file` is
/// the job, side and file ID of the load; `w` as [`apply_in_time`] gives it.
fn bind_patient(
    stmt: &mut Statement,
    (job, side, file_id): (&str, Side, i64),
    line: u64,
    p: &Patient,
    w: &InTime,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, job)?;
    stmt.raw_bind_parameter(2, side.as_str())?;
    stmt.raw_bind_parameter(3, p.own_id(side).unwrap_or_default())?;
    stmt.raw_bind_parameter(4, file_id)?;
    stmt.raw_bind_parameter(5, line as i64)?;
    stmt.raw_bind_parameter(6, w.row_time)?;
    for (i, f) in Field::ALL.iter().enumerate() {
        stmt.raw_bind_parameter(7 + i, f.value(p))?;
    }
    stmt.raw_bind_parameter(7 + Field::ALL.len(), w.keep)?;
    stmt.raw_bind_parameter(8 + Field::ALL.len(), w.said_times.as_deref())?;
    Ok(())
}

/// Test hook: with `FERRY_FAILPOINT=NAME:N` the process aborts, as a crash
/// or `kill -9` would, the Nth time it passes failpoint NAME. Tests use it to
/// stop a load at an exact point; unset, it costs one environment lookup.
pub(crate) fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("FERRY_FAILPOINT") else { return };
    let Some((point, n)) = spec.split_once(':') else { return };
    if point == name && n.parse::<u64>().is_ok_and(|n| PASSED.fetch_add(1, Ordering::SeqCst) + 1 >= n) {
        eprintln!("ferry: failpoint {name} reached; aborting");
        std::process::abort();
    }
}

/// Test hook: with `FERRY_PAUSEPOINT=NAME:N:MS` the process stops for MS
/// milliseconds the Nth time it passes NAME (so a test can cut a
/// connection at an exact point). Unset, it costs one environment lookup.
pub(crate) fn pausepoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("FERRY_PAUSEPOINT") else { return };
    let mut parts = spec.split(':');
    let (Some(point), Some(n), Some(ms)) = (parts.next(), parts.next(), parts.next()) else { return };
    if point == name
        && let (Ok(n), Ok(ms)) = (n.parse::<u64>(), ms.parse::<u64>())
        && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == n
    {
        eprintln!("ferry: pausepoint {name} reached; pausing {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

pub struct FileLoad<'c> {
    conn: &'c Connection,
    /// Open from begin to finish; between checkpoints a new one is opened.
    tx: Option<Transaction<'c>>,
    job: String,
    side: Side,
    file_id: i64,
    /// When the messages loaded since the last checkpoint got their state:
    /// the time is taken once per checkpoint, not formatted per message
    /// (which cost as much as a tenth of inserting the message's row).
    at: String,
    statements: Statements<'c>,
    /// The job's EHR IDs merged away by an ADT^A40, with the latest merge's
    /// time: read at the first patient from a message, kept up to date by
    /// [`FileLoad::merge`].
    merged: Option<HashMap<String, Option<String>>>,
}

/// The statements a load runs per record, each taken from the
/// connection's statement cache at its first use and held for the load.
/// Taken at every use, the cache hashes the statement's text twice and
/// copies it, and the patient upsert's is 1.3 KB: some 6,000 instructions
/// of every message. Given back when the load ends, they serve the next
/// load without being prepared again (the upsert's preparing alone costs
/// some 200,000 instructions, a file of a few messages' worth).
#[derive(Default)]
struct Statements<'c> {
    stored_patient: Option<CachedStatement<'c>>,
    upsert_patient: Option<CachedStatement<'c>>,
    message: Option<CachedStatement<'c>>,
    stored_appointment: Option<CachedStatement<'c>>,
    upsert_appointment: Option<CachedStatement<'c>>,
}

/// The statement in `slot`, taken from the cache first if it is not yet.
fn prepared<'s, 'c>(
    slot: &'s mut Option<CachedStatement<'c>>,
    conn: &'c Connection,
    sql: &str,
) -> rusqlite::Result<&'s mut Statement<'c>> {
    Ok(match slot {
        Some(stmt) => stmt,
        None => slot.insert(conn.prepare_cached(sql)?),
    })
}

impl<'c> FileLoad<'c> {
    pub(super) fn begin(
        conn: &'c Connection,
        job: &str,
        run_id: i64,
        file: &TakenFile,
        mode: LoadMode,
    ) -> Result<Self> {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let at = now();
        tx.execute(
            "INSERT INTO files (job, side, name, size, mtime, sha256, state, local_path, schema, run_id,
                                read, accepted, rejected, warnings, loaded_at, state_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'loading', ?7, ?8, ?9, 0, 0, 0, 0, ?10, ?10)",
            params![
                job,
                file.side.as_str(),
                file.name,
                file.size as i64,
                file.mtime,
                file.sha256,
                file.local_path,
                file.schema,
                run_id,
                at
            ],
        )?;
        let file_id = tx.last_insert_rowid();
        FileLoad::started(conn, tx, job, file.side, file_id, at, mode)
    }

    /// A load begun in `tx` of ledger row `file_id`: a snapshot
    /// ([`LoadMode::Replace`]) first empties its side.
    fn started(
        conn: &'c Connection,
        tx: Transaction<'c>,
        job: &str,
        side: Side,
        file_id: i64,
        at: String,
        mode: LoadMode,
    ) -> Result<Self> {
        if mode == LoadMode::Replace {
            tx.execute("DELETE FROM patients WHERE job = ?1 AND side = ?2", params![job, side.as_str()])?;
        }
        Ok(FileLoad {
            conn,
            tx: Some(tx),
            job: job.to_string(),
            side,
            file_id,
            at,
            statements: Statements::default(),
            merged: None,
        })
    }

    /// Load again, in run `run_id`, the file of ledger row `file_id` from
    /// `file` (its bytes, ferry's new copy): a snapshot ([`LoadMode::Replace`])
    /// back to an earlier version after a later one was loaded. The row is
    /// the file's, so it becomes this load's, its counts and rejects too;
    /// the earlier run's reports keep what it said then.
    pub(super) fn reload(
        conn: &'c Connection,
        job: &str,
        run_id: i64,
        file_id: i64,
        file: &TakenFile,
        mode: LoadMode,
    ) -> Result<Self> {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let at = now();
        tx.execute(
            "UPDATE files SET state = 'loading', run_id = ?2, mtime = ?3, local_path = ?4, read = 0, accepted = 0,
                              rejected = 0, warnings = 0, records_done = 0, stale = 0, in_part = 0, ignored = 0, loaded_at = ?5, state_at = ?5
             WHERE id = ?1",
            params![file_id, run_id, file.mtime, file.local_path, at],
        )?;
        tx.execute("DELETE FROM rejects WHERE file_id = ?1", [file_id])?;
        FileLoad::started(conn, tx, job, file.side, file_id, at, mode)
    }

    /// A file already in the ledger: a queued message's, for a retry, or one
    /// whose load was interrupted after a checkpoint, to go on with it.
    pub(super) fn reopen(conn: &'c Connection, job: &str, file_id: i64) -> Result<Self> {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let side: String = tx.query_row("SELECT side FROM files WHERE id = ?1", [file_id], |r| r.get(0))?;
        let side = Side::parse(&side).unwrap_or(Side::Ehr);
        Ok(FileLoad {
            conn,
            tx: Some(tx),
            job: job.to_string(),
            side,
            file_id,
            at: now(),
            statements: Statements::default(),
            merged: None,
        })
    }

    /// The file now belongs to run `run_id` (see `Store::resume_file`).
    pub(super) fn move_to_run(&self, run_id: i64) -> Result<()> {
        self.tx().execute("UPDATE files SET run_id = ?2 WHERE id = ?1", params![self.file_id, run_id])?;
        Ok(())
    }

    fn tx(&self) -> &Transaction<'c> {
        self.tx.as_ref().expect("a FileLoad's transaction is open until finish")
    }

    pub fn file_id(&self) -> i64 {
        self.file_id
    }

    /// Commit what is loaded so far with the count of records (or messages)
    /// done, so that a load killed later goes on from here; the file stays
    /// `loading` in the ledger until [`FileLoad::finish`].
    /// The file's messages that changed less than they said, so far: kept
    /// with the next checkpoint or the finish.
    pub fn older(&mut self, older: &crate::store::Older) -> Result<()> {
        self.tx().execute(
            "UPDATE files SET stale = ?2, in_part = ?3, ignored = ?4 WHERE id = ?1",
            params![self.file_id, older.stale as i64, older.in_part as i64, older.ignored as i64],
        )?;
        Ok(())
    }

    pub fn checkpoint(&mut self, done: u64) -> Result<()> {
        self.tx().execute(
            "UPDATE files SET records_done = ?2 WHERE id = ?1",
            params![self.file_id, done as i64],
        )?;
        if let Some(tx) = self.tx.take() {
            tx.commit()?;
        }
        failpoint("checkpoint");
        self.tx = Some(Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?);
        self.at = now();
        Ok(())
    }

    /// A retried message applied: mark it PROCESSED, with `note` as its
    /// reason (why nothing was loaded, for an ignored event). It is stored
    /// with what it loaded by [`FileLoad::commit`].
    pub fn processed(&mut self, message_id: i64, note: Option<&str>) -> Result<()> {
        self.tx().execute(
            "UPDATE messages SET state = 'PROCESSED', reason = ?3, raw = NULL, state_at = ?2 WHERE id = ?1",
            params![message_id, now(), note],
        )?;
        Ok(())
    }

    /// A retried message that failed again: it stays in ERROR, with the
    /// new reason.
    pub fn still_in_error(&mut self, message_id: i64, reason: &str) -> Result<()> {
        self.tx().execute(
            "UPDATE messages SET reason = ?2, state_at = ?3 WHERE id = ?1",
            params![message_id, reason, now()],
        )?;
        Ok(())
    }

    /// Store the retried messages of a reopened file, and what they loaded.
    pub fn commit(mut self) -> Result<()> {
        self.tx.take().expect("open until finish").commit()?;
        Ok(())
    }

    /// Insert or update a patient by its own ID, unless the store holds a
    /// newer version or an ADT^A40 merged the ID away at or after the
    /// record's time. A practice MRN that differs from the stored one is
    /// recorded in the ID history when the record is applied: a stale
    /// record's MRN is an old one, not a change.
    pub fn patient(
        &mut self,
        p: &Patient,
        line: u64,
        time: Option<&str>,
        message_id: Option<i64>,
    ) -> Result<Applied> {
        let own = p.own_id(self.side).unwrap_or_default();
        // The stored row matters only to a record with a time (staleness)
        // or from a message (ID history): a flat file's rows go straight in.
        type Stored = (Option<String>, Option<String>, Option<String>);
        let stored: Option<Stored> = if time.is_none() && message_id.is_none() {
            None
        } else {
            prepared(
                &mut self.statements.stored_patient,
                self.conn,
                "SELECT practice_mrn, source_time, said_times FROM patients
                 WHERE job = ?1 AND side = ?2 AND own_id = ?3",
            )?
            .query_row(params![self.job, self.side.as_str(), own], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?
        };
        let (row, said) =
            stored.as_ref().map_or((None, None), |(_, row, said)| (row.as_deref(), said.as_deref()));
        let Some(w) = apply_in_time(ALL_FIELDS, p.keep_stored.bits(), time, stored.is_some(), row, said)
        else {
            return Ok(Applied::Stale);
        };
        if self.side == Side::Ehr && message_id.is_some() && self.merged_away(own, time, line)? {
            return Ok(Applied::Stale);
        }
        let mrn_said = w.keep & (1 << Field::PracticeMrn as u32) == 0;
        if let Some((old_mrn, _, _)) = &stored
            && self.side == Side::Ehr
            && message_id.is_some()
            && mrn_said
            && old_mrn.as_deref() != p.practice_mrn.as_deref()
        {
            self.tx()
                .prepare_cached(
                    "INSERT INTO id_history (job, side, own_id, kind, old_value, new_value, source_time, message_id)
                     VALUES (?1, ?2, ?3, 'practice_mrn', ?4, ?5, ?6, ?7)",
                )?
                .execute(params![self.job, self.side.as_str(), own, old_mrn, p.practice_mrn.as_deref(), time, message_id])?;
        }
        let stmt = prepared(&mut self.statements.upsert_patient, self.conn, upsert_patient_sql())?;
        bind_patient(stmt, (&self.job, self.side, self.file_id), line, p, &w)?;
        stmt.raw_execute()?;
        Ok(w.applied)
    }

    /// Whether an ADT^A40 merged `ehr_id` away at or after `time` (or at a
    /// time not known): then a message about it is older than the merge and
    /// must not bring it back. A message newer than the merge is applied,
    /// with a warning at its `line`: the EHR speaks of a patient it merged.
    fn merged_away(&mut self, ehr_id: &str, time: Option<&str>, line: u64) -> Result<bool> {
        let merged = match &mut self.merged {
            Some(merged) => merged,
            None => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT merged_id, max(source_time) FROM merges WHERE job = ?1 GROUP BY merged_id",
                )?;
                let rows = stmt.query_map([&self.job], |r| Ok((r.get(0)?, r.get(1)?)))?;
                self.merged.insert(rows.collect::<rusqlite::Result<_>>()?)
            }
        };
        let Some(merged_at) = merged.get(ehr_id) else { return Ok(false) };
        match (time, merged_at) {
            (Some(t), Some(at)) if t > at.as_str() => {
                self.reject(&Reject {
                    line,
                    severity: Severity::Warning,
                    record_id: None,
                    column: None,
                    field: None,
                    reason: "PID-3's EHR ID was merged into another patient by an earlier ADT^A40 \
                             (merges.csv); this newer message brings it back"
                        .into(),
                })?;
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Insert or update plain records (a flat file's: no source time, no
    /// message), `(patient, line)`: [`FileLoad::patient`] for each, without
    /// its look at the stored row, which only timed records need. (Several
    /// rows to one INSERT measured slower with the upsert.)
    pub fn plain_patients(&mut self, records: &[(&Patient, u64)]) -> Result<()> {
        let stmt = prepared(&mut self.statements.upsert_patient, self.conn, upsert_patient_sql())?;
        for &(p, line) in records {
            let w = InTime {
                keep: p.keep_stored.bits(),
                said_times: None,
                row_time: None,
                applied: Applied::Written,
            };
            bind_patient(stmt, (&self.job, self.side, self.file_id), line, p, &w)?;
            stmt.raw_execute()?;
        }
        Ok(())
    }

    /// Insert or update an appointment by its ID, unless the store holds a
    /// newer version. The fields it says nothing about keep their stored
    /// values: `keep_stored` is bound as bits, which the upsert tests in
    /// [`AppointmentField`] order (held at compile time below).
    pub fn appointment(
        &mut self,
        a: &Appointment,
        time: Option<&str>,
        message_id: Option<i64>,
    ) -> Result<Applied> {
        let stored: Option<(Option<String>, Option<String>)> = prepared(
            &mut self.statements.stored_appointment,
            self.conn,
            "SELECT source_time, said_times FROM appointments WHERE job = ?1 AND appt_id = ?2",
        )?
        .query_row(params![self.job, a.id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
        // Ordered field by field, as patients are (see `SaidTimes`).
        let (row, said) =
            stored.as_ref().map_or((None, None), |(row, said)| (row.as_deref(), said.as_deref()));
        let Some(w) =
            apply_in_time(ALL_APPOINTMENT_FIELDS, a.keep_stored.bits(), time, stored.is_some(), row, said)
        else {
            return Ok(Applied::Stale);
        };
        prepared(
            &mut self.statements.upsert_appointment,
            self.conn,
            "INSERT INTO appointments (job, appt_id, patient_ehr_id, patient_mrn, provider_id, department_id,
                     appointment_type, start_utc, duration_minutes, status, source_time, message_id, said_times)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?14)
                 ON CONFLICT (appt_id, job) DO UPDATE SET
                     patient_ehr_id = iif(?13 & 64, appointments.patient_ehr_id, excluded.patient_ehr_id),
                     patient_mrn = iif(?13 & 64, appointments.patient_mrn, excluded.patient_mrn),
                     provider_id = iif(?13 & 1, appointments.provider_id, excluded.provider_id),
                     department_id = iif(?13 & 2, appointments.department_id, excluded.department_id),
                     appointment_type = iif(?13 & 4, appointments.appointment_type, excluded.appointment_type),
                     start_utc = iif(?13 & 8, appointments.start_utc, excluded.start_utc),
                     duration_minutes = iif(?13 & 16, appointments.duration_minutes, excluded.duration_minutes),
                     status = iif(?13 & 32, appointments.status, excluded.status),
                     message_id = excluded.message_id,
                     source_time = coalesce(excluded.source_time, appointments.source_time),
                     said_times = excluded.said_times",
        )?
        .execute(params![
            self.job,
            a.id.as_str(),
            a.patient_ehr_id.as_deref(),
            a.patient_mrn.as_deref(),
            a.provider_id.as_deref(),
            a.department_id.as_deref(),
            a.appointment_type.as_deref(),
            a.start.map(|s| s.to_rfc3339()),
            a.duration_minutes,
            a.status.as_str(),
            w.row_time,
            message_id,
            w.keep,
            w.said_times
        ])?;
        Ok(w.applied)
    }

    /// Record an ADT^A40: `merged` no longer exists in the EHR, so its row
    /// leaves the store (the merge row keeps what happened), and its
    /// appointments are the surviving patient's. See [`Merged`].
    pub fn merge(
        &mut self,
        surviving: &str,
        merged: &str,
        time: Option<&str>,
        message_id: Option<i64>,
    ) -> Result<Merged> {
        // The same merge sent again (a resent message, or a file sent again
        // under another name) is recorded once: merges.csv lists each once.
        let recorded = self
            .tx()
            .prepare_cached(
                "INSERT INTO merges (job, surviving_id, merged_id, source_time, message_id)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM merges WHERE job = ?1 AND surviving_id = ?2 AND merged_id = ?3
                                                          AND source_time IS ?4)",
            )?
            .execute(params![self.job, surviving, merged, time, message_id])?;
        let elsewhere = recorded > 0
            && self
                .tx()
                .prepare_cached(
                    "SELECT 1 FROM merges WHERE job = ?1 AND merged_id = ?2 AND surviving_id <> ?3",
                )?
                .exists(params![self.job, merged, surviving])?;
        let deleted = self
            .tx()
            .prepare_cached(
                "DELETE FROM patients WHERE job = ?1 AND side = 'ehr' AND own_id = ?2
                   AND (?3 IS NULL OR source_time IS NULL OR source_time <= ?3)",
            )?
            .execute(params![self.job, merged, time])?;
        let kept = deleted == 0
            && self
                .tx()
                .prepare_cached("SELECT 1 FROM patients WHERE job = ?1 AND side = 'ehr' AND own_id = ?2")?
                .exists(params![self.job, merged])?;
        if let Some(known) = &mut self.merged {
            let at = known.entry(merged.to_string()).or_default();
            if time.is_some_and(|t| at.as_deref().is_none_or(|a| t > a)) {
                *at = time.map(String::from);
            }
        }
        let appointments = self.move_appointments(surviving, merged, time)?;
        Ok(Merged { kept, elsewhere, appointments })
    }

    /// The appointments of EHR patient `merged` become `surviving`'s, with
    /// its practice MRN as stored, as a message at the merge's `time` that
    /// says only the patient would make them: one whose patient a newer
    /// message said keeps it, as a patient newer than the merge is kept.
    fn move_appointments(&mut self, surviving: &str, merged: &str, time: Option<&str>) -> Result<u64> {
        type Row = (String, Option<String>, Option<String>);
        let rows: Vec<Row> = self
            .tx()
            .prepare_cached(
                "SELECT appt_id, source_time, said_times FROM appointments WHERE job = ?1 AND patient_ehr_id = ?2",
            )?
            .query_map(params![self.job, merged], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mrn: Option<String> = self
            .tx()
            .prepare_cached(
                "SELECT practice_mrn FROM patients WHERE job = ?1 AND side = 'ehr' AND own_id = ?2",
            )?
            .query_row(params![self.job, surviving], |r| r.get(0))
            .optional()?
            .flatten();
        let mut moved = 0;
        for (appt_id, row, said) in &rows {
            let keep = ALL_APPOINTMENT_FIELDS & !APPOINTMENT_PATIENT;
            let w = match time {
                Some(_) => {
                    apply_in_time(ALL_APPOINTMENT_FIELDS, keep, time, true, row.as_deref(), said.as_deref())
                }
                // Without a time, only the patient changes.
                None => Some(InTime {
                    keep,
                    said_times: said.clone(),
                    row_time: row.as_deref(),
                    applied: Applied::Written,
                }),
            };
            let Some(w) = w else { continue };
            moved += self.tx().prepare_cached(
                "UPDATE appointments SET patient_ehr_id = ?3, patient_mrn = ?4, source_time = ?5, said_times = ?6
                 WHERE job = ?1 AND appt_id = ?2",
            )?
            .execute(params![self.job, appt_id, surviving, mrn, w.row_time, w.said_times])? as u64;
        }
        Ok(moved)
    }

    /// Add a message to the queue; returns its ID.
    pub fn message(&mut self, m: &MessageRow) -> Result<i64> {
        prepared(
            &mut self.statements.message,
            self.conn,
            "INSERT INTO messages (job, file_id, number, line, control_id, event, msg_time, state, reason, raw, state_at,
                                   cut)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                self.job,
                self.file_id,
                m.number as i64,
                m.line as i64,
                m.control_id,
                m.event,
                m.time,
                m.state,
                m.reason,
                m.raw,
                self.at,
                m.cut
            ])?;
        Ok(self.tx().last_insert_rowid())
    }

    pub fn reject(&mut self, r: &Reject) -> Result<()> {
        self.tx()
            .prepare_cached(
                "INSERT INTO rejects (file_id, line, severity, record_id, col, field, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                self.file_id,
                r.line as i64,
                r.severity.as_str(),
                r.record_id,
                r.column,
                r.field.map(|f| f.as_str()),
                r.reason
            ])?;
        Ok(())
    }

    /// The warnings written for the file so far, over all its loads.
    pub fn warnings(&self) -> Result<u64> {
        let n: i64 = self.tx().query_row(
            "SELECT count(*) FROM rejects WHERE file_id = ?1 AND severity = 'warning'",
            [self.file_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Write the totals and the file's ledger `state` (`loaded`, or
    /// `kept`: see `AfterAction::loaded_state`) and commit. Returns the
    /// ledger id.
    pub fn finish(mut self, c: &Counts, state: &str) -> Result<i64> {
        self.tx().execute(
            "UPDATE files SET state = ?6, read = ?2, accepted = ?3, rejected = ?4, warnings = ?5 WHERE id = ?1",
            params![self.file_id, c.read as i64, c.accepted as i64, c.rejected as i64, c.warnings as i64, state],
        )?;
        self.tx.take().expect("open until finish").commit()?;
        Ok(self.file_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FieldSet;

    /// The keep bits of a patient that says `fields`.
    fn says(fields: &[Field]) -> u32 {
        let mut keep = FieldSet::default();
        Field::ALL.iter().filter(|f| !fields.contains(f)).for_each(|&f| keep.insert(f));
        keep.bits()
    }

    fn bits(fields: &[Field]) -> u32 {
        fields.iter().fold(0, |all, &f| all | 1 << f as u32)
    }

    #[test]
    fn said_times_follow_each_field() {
        let (name, address) = ([Field::LastName], [Field::Address1, Field::City]);
        let both = [name.as_slice(), &address].concat();
        let apply = |fields: &[Field], time, row, said| {
            apply_in_time(ALL_FIELDS, says(fields), time, true, row, said)
        };
        // A newer message that says only the name leaves the rest at the row's old time.
        let w = apply(&name, Some("10"), Some("08"), None).unwrap();
        assert_eq!(
            (w.keep, w.row_time, w.applied),
            (ALL_FIELDS & !bits(&name), Some("10"), Applied::Written)
        );
        assert_eq!(w.said_times.as_deref(), Some(format!("08 {}", ALL_FIELDS & !bits(&name)).as_str()));
        // A late one sets the address (said at 08) but not the name (said at 10).
        let said = w.said_times;
        let w = apply(&both, Some("09"), Some("10"), said.as_deref()).unwrap();
        assert_eq!(w.keep, ALL_FIELDS & !bits(&address));
        assert_eq!((w.row_time, w.applied), (Some("10"), Applied::InPart), "the row's time stays");
        let times = SaidTimes::parse(w.said_times.as_deref());
        assert_eq!(times.newer_than(ALL_FIELDS, "07", "10"), ALL_FIELDS, "everything was said after 07");
        assert_eq!(
            times.newer_than(ALL_FIELDS, "08", "10"),
            bits(&both),
            "at 08 the rest was said, not after"
        );
        assert_eq!(times.newer_than(ALL_FIELDS, "09", "10"), bits(&name), "at 09 the name only");
        // Later still, nothing it says is news: it changes nothing.
        assert_eq!(apply(&both, Some("08:30"), Some("10"), w.said_times.as_deref()), None);
        // A message of the row's own time applies, as messages of one time do in arrival order.
        assert!(apply(&both, Some("10"), Some("10"), w.said_times.as_deref()).is_some());
        assert_eq!(times.text(), w.said_times);
        // Without a time on either side, the record is written as it is.
        let w = apply(&name, None, Some("10"), w.said_times.as_deref()).unwrap();
        assert_eq!((w.keep, w.said_times, w.row_time), (says(&name), None, None));
    }

    /// The fields the message that makes a row leaves out were never said:
    /// a late message sets them (an older address after a newer name
    /// change that made the row), and no other of its fields.
    #[test]
    fn fields_a_new_row_leaves_out_were_never_said() {
        let (name, address) = ([Field::LastName], [Field::Address1, Field::City]);
        let both = [name.as_slice(), &address].concat();
        let first = apply_in_time(ALL_FIELDS, says(&name), Some("10"), false, None, None).unwrap();
        let never = ALL_FIELDS & !bits(&name);
        assert_eq!(
            (first.row_time, first.said_times.as_deref()),
            (Some("10"), Some(format!(" {never}").as_str()))
        );
        let times = SaidTimes::parse(first.said_times.as_deref());
        assert_eq!(times.newer_than(ALL_FIELDS, "01", "10"), bits(&name), "only the name was said, at 10");
        assert_eq!(times.newer_than(ALL_FIELDS, "10", "10"), 0);

        let late =
            apply_in_time(ALL_FIELDS, says(&both), Some("09"), true, Some("10"), first.said_times.as_deref());
        let late = late.unwrap();
        assert_eq!(
            (late.keep, late.row_time, late.applied),
            (ALL_FIELDS & !bits(&address), Some("10"), Applied::InPart)
        );
        let times = SaidTimes::parse(late.said_times.as_deref());
        assert_eq!(times.newer_than(ALL_FIELDS, "08", "10"), bits(&both), "the address now said at 09");
        assert_eq!(
            times.newer_than(ALL_FIELDS, "09", "10"),
            bits(&name),
            "after 09 the name only: the rest never said"
        );
        // A newer message that says everything leaves no field unsaid.
        let all =
            apply_in_time(ALL_FIELDS, 0, Some("11"), true, Some("10"), late.said_times.as_deref()).unwrap();
        assert_eq!(all.said_times, None);
        // Nothing left out, or no time: nothing to note.
        assert_eq!(apply_in_time(ALL_FIELDS, 0, Some("10"), false, None, None).unwrap().said_times, None);
        assert_eq!(apply_in_time(ALL_FIELDS, says(&name), None, false, None, None).unwrap().said_times, None);
    }
}
