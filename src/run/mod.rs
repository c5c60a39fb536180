//! The job runner: one run of one job, stage by stage. Take new files from
//! the source, put each on local disk (fsynced) and parse them in parallel,
//! load each in its own transaction with its ledger row, only then archive
//! or delete the source file, reconcile what the store holds, write the
//! reports.
//!
//! A crash at any point loses nothing: before the ledger commit the source
//! file is untouched and the next run takes it again; after it, the next
//! run finds it in the ledger and only finishes the after-action.
//!
//! Here are the stages in order; `take` picks files from a source and
//! `pull` copies them to disk, `load_hl7` loads an HL7 file message by
//! message (a flat file is parsed here and loaded by the store).

mod load_hl7;
mod pull;
mod take;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use tracing::{debug, info, warn};

pub(crate) use load_hl7::{At, apply_mapped, ignored_note, map_copy};
use load_hl7::{MappedFile, load_hl7, map_whole};
pub use pull::{Fetched, pull};
use take::{Pick, take_from_source, take_interrupted, take_one};

use crate::clock;
use crate::flatfile::{ParsedFile, parse_bytes};
use crate::job::{AfterAction, InputSchema, Job};
use crate::model::{PatientRecord, Side};
use crate::prune::{Pruned, prune};
use crate::push::{self, Pushed};
use crate::reconcile::reconcile;
use crate::report::email::{self, Outbox};
use crate::report::{self, FileSummary, RunReport};
use crate::store::{Batching, LedgerEntry, LoadMode, RunTotals, Store, TakenFile};
use crate::transport::{self, Entry, LocalTransport, Transport, TransportError, retry};

/// How the caller wants the run to behave.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Draw a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// `run` or `backfill`, as the run history shows it.
    pub kind: &'static str,
    /// Records (or HL7 messages, rounded up to whole chunks) per committed
    /// batch: a load killed half-way goes on from its last batch.
    pub batch: usize,
    /// Load a snapshot that drops more of its side than its `max_shrink`
    /// allows (`ferry run --accept-shrink`): the operator has checked it.
    pub accept_shrink: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { progress: false, kind: "run", batch: DEFAULT_BATCH, accept_shrink: false }
    }
}

/// Records per committed batch unless the caller says otherwise.
pub const DEFAULT_BATCH: usize = 50_000;

/// What a run did.
#[derive(Debug)]
pub struct RunResult {
    pub run_id: i64,
    pub report_dir: PathBuf,
    pub files: Vec<FileSummary>,
    pub totals: RunTotals,
    /// A file could not be read at all: the run completed but failed.
    pub failed: bool,
    pub reconciled: Reconciled,
    /// Files pushed back after the run.
    pub pushed: Vec<Pushed>,
    /// The email: None when the job sends none.
    pub mail: Option<MailOutcome>,
    pub pruned: Pruned,
    /// Files sent from the job's outbox folders.
    pub sent: Vec<crate::outbox::Sent>,
}

/// What became of the run's email and any that waited before it.
#[derive(Debug, Default)]
pub struct MailOutcome {
    /// Messages the relay accepted (Message-IDs), older ones first.
    pub sent: Vec<String>,
    /// Messages left in the outbox for the next run.
    pub waiting: usize,
    pub error: Option<String>,
}

/// The reconciliation's headline counts.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    pub ehr: usize,
    pub practice: usize,
    pub by_id: usize,
    pub by_demographics: usize,
    pub possible_matches: usize,
    pub duplicates: usize,
    pub id_updates: usize,
    pub candidate_pairs: usize,
}

/// HL7 files up to `file` bytes are mapped whole ahead of their load, in
/// parallel across files, up to `total` bytes of them in a run; the rest
/// map their messages as they load. The bound keeps a run's memory flat
/// however many files it takes: a mapped message holds a few hundred bytes.
/// `FERRY_MAP_AHEAD=off` maps none ahead (for tests: both ways must load
/// the same).
struct MapAhead {
    file: u64,
    total: u64,
}

const MAP_AHEAD: MapAhead = MapAhead { file: 8 << 20, total: 64 << 20 };

/// What reading a file ahead of its load gave.
enum Read<'j> {
    Flat(Result<ParsedFile>),
    /// With its schema; None: not mapped ahead (large, past the bound, or
    /// unreadable).
    Hl7(&'j crate::hl7::Hl7Schema, Option<MappedFile>),
}

/// A file on local disk, ready to parse, with where it came from.
struct Pending<'j> {
    taken: TakenFile,
    entry: Entry,
    schema: &'j InputSchema,
    load: LoadMode,
    after: AfterAction,
    /// The transport the file came from, for the after-action.
    origin: Origin,
    /// The ledger row of a load that was interrupted after a checkpoint.
    resume: Option<LedgerEntry>,
    /// The ledger row of a snapshot whose bytes were loaded before, to load
    /// again: a later version was loaded since (see `take::take_fetched`).
    reload: Option<i64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Source,
    Practice,
    /// An interrupted load that no source listed as it was: nothing is done
    /// at a source when it is finished (see `take::take_interrupted`).
    Ledger,
}

/// Hold this while a job runs; the OS drops the lock if the process dies,
/// so a crashed run never leaves a job stuck.
pub struct JobLock {
    _file: File,
}

/// Another process holds the job's lock.
#[derive(Debug, thiserror::Error)]
#[error("job {job} is already running (lock {})", lock.display())]
pub struct AlreadyRunning {
    pub job: String,
    pub lock: PathBuf,
}

/// Where the lock of job `job` whose state is in `state_dir` lives.
fn lock_path(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("locks").join(format!("{job}.lock"))
}

pub fn lock_job(job: &Job) -> Result<JobLock> {
    let path = lock_path(&job.state_dir, &job.name);
    let dir = path.parent().unwrap_or(&job.state_dir);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(JobLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(AlreadyRunning { job: job.name.clone(), lock: path }.into()),
        Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Whether some process holds the job's lock, told from the kernel's list
/// of locks (`/proc/locks`) without taking it: taking it, even for a
/// moment, would turn away a run starting then. A run that was killed
/// stays `running` in the store until the next run marks it `abandoned`;
/// `status` and `history` ask this to say so at once. None where it cannot
/// be told (no `/proc/locks`): the store's word stands.
pub fn lock_held(state_dir: &Path, job: &str) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::metadata(lock_path(state_dir, job)) {
        Ok(meta) => meta,
        // No lock file: no run has ever held it here.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    let file = format!("{:02x}:{:02x}:{}", libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino());
    let locks = fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 4498 fe:00:10014860 0 EOF"; a process
    // waiting for a lock has its line marked "->" and holds nothing.
    Some(locks.lines().any(|line| {
        let mut words = line.split_whitespace().skip(1);
        words.clone().next() != Some("->") && words.nth(4) == Some(file.as_str())
    }))
}

/// Run a job once: take its lock, then [`run_job_locked`].
pub fn run_job(job: &Job, opts: &RunOptions) -> Result<RunResult> {
    let lock = lock_job(job)?;
    run_job_locked(job, &lock, opts)
}

/// Run a job once under its lock: the stages up to the reports, then
/// push-back, the email and pruning of old runs.
pub fn run_job_locked(job: &Job, _lock: &JobLock, opts: &RunOptions) -> Result<RunResult> {
    clock::pause("locked");
    let mut store = Store::open(&job.db_path())?;
    let abandoned = store.close_abandoned_runs(&job.name)?;
    if abandoned > 0 {
        warn!(job = %job.name, runs = abandoned, "Earlier runs were interrupted; marked abandoned.");
    }
    let started = clock::now().with_timezone(&chrono::Local);
    let run_id = store.start_run(&job.name, opts.kind)?;
    crate::store::failpoint("run_started");
    clock::pause("run_started");
    info!(job = %job.name, run_id, "Run started.");
    let mut result = match run_stages(job, &mut store, run_id, &started, opts) {
        Ok(result) => {
            store.finish_run(run_id, &result.totals)?;
            info!(job = %job.name, run_id, outcome = %result.totals.outcome, "Run finished.");
            result
        }
        Err(e) => {
            let totals =
                RunTotals { outcome: "failed".into(), error: Some(format!("{e:#}")), ..RunTotals::default() };
            store.finish_run(run_id, &totals)?;
            // Tell the people who expect the report that there is none.
            if let Some(settings) = &job.email {
                let facts = email::Facts {
                    job: &job.name,
                    run_id,
                    outcome: "failed",
                    started: &started.with_timezone(&job.time_zone).format("%Y-%m-%d %H:%M %Z").to_string(),
                    counts: &[],
                    report_dir: None,
                    notes: &[],
                };
                send_mail(job, settings, &facts);
            }
            return Err(e);
        }
    };
    deliver(job, &mut store, &started, &mut result);
    Ok(result)
}

/// The summary of a file that could not be read at all: not loaded and not
/// in the ledger, so the source file stays where it is, to be taken again
/// once the schema or the file is fixed.
/// Why a snapshot (`load = "replace"`, the practice roster) with no record
/// to load is not loaded: it would empty its whole side, and every patient
/// of the other would turn up as unmatched or as an unknown ID in the
/// reports staff work from. A broken export (an empty file, a header
/// alone, a changed date format that rejects every row) fails the run
/// instead, and the records stored from the last good one stay.
fn empty_snapshot(load: LoadMode, parsed: &ParsedFile) -> Option<String> {
    (load == LoadMode::Replace && parsed.accepted() == 0).then(|| {
        let rows = match parsed.read {
            0 => "it holds no rows".to_string(),
            n => format!("all {n} of its rows are rejected"),
        };
        format!(
            "a snapshot with no record to load ({rows}): it would replace every stored record of its \
             side with nothing, so it is not loaded and the records of the last good one stay"
        )
    })
}

/// Why a snapshot that would drop more of its side's stored records than
/// its `max_shrink` allows is not loaded (see [`crate::job::DEFAULT_MAX_SHRINK`]).
/// Not asked of a load resumed after a kill: its side is already part
/// replaced, and the check passed when it began.
fn shrunk_snapshot(job: &Job, store: &Store, p: &Pending, parsed: &ParsedFile) -> Result<Option<String>> {
    if p.load != LoadMode::Replace || p.resume.is_some() {
        return Ok(None);
    }
    let max_shrink = match p.taken.side {
        Side::Practice if p.origin == Origin::Practice => job.practice.as_ref().map(|r| r.max_shrink),
        _ => job.input_for(&p.taken.name).map(|i| i.max_shrink),
    }
    .unwrap_or(crate::job::DEFAULT_MAX_SHRINK);
    let stored = store.side_count(&job.name, p.taken.side)?;
    let records = parsed.accepted();
    if stored == 0 || records >= stored {
        return Ok(None);
    }
    let dropped = (stored - records) as f64 / stored as f64;
    Ok((dropped > max_shrink).then(|| {
        format!(
            "a snapshot of {records} record(s), against {stored} stored from the last one: it would drop \
             {:.0}% of the {} side, more than max_shrink allows ({:.0}%). A partial export? The records \
             of the last one stay; if the drop is real, run `ferry run {} --accept-shrink` once, or raise \
             max_shrink",
            dropped * 100.0,
            p.taken.side,
            max_shrink * 100.0,
            job.name
        )
    }))
}

fn not_loaded(p: &Pending, read: u64, rejected: u64, warnings: u64, reason: &str) -> FileSummary {
    warn!(file = %p.taken.name, "File could not be read; left at the source.");
    FileSummary {
        side: p.taken.side,
        name: p.taken.name.clone(),
        status: "failed".into(),
        read,
        accepted: 0,
        rejected,
        warnings,
        detail: reason.to_string(),
    }
}

/// After the reports: push files back, email the report, prune old runs.
/// A failed push fails the run; an email that cannot be sent waits in the
/// outbox and does not.
fn deliver(job: &Job, store: &mut Store, started: &chrono::DateTime<chrono::Local>, result: &mut RunResult) {
    // The report folder's stamp, which is the run's alone: two runs in one
    // second (or in the hour repeated when daylight saving ends) get
    // "...-2" there, and so their pushed files never share a name.
    let folder = result.report_dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let stamp =
        match folder.as_deref().and_then(|n| n.get(started.format("%Y-%m-%dT%H%M%S").to_string().len()..)) {
            Some(suffix) => format!("{}{suffix}", started.format("%Y%m%dT%H%M%S")),
            None => started.format("%Y%m%dT%H%M%S").to_string(),
        };
    for entry in &job.push {
        match push::open(&entry.to) {
            Ok(mut t) => result.pushed.extend(push::push(
                entry,
                &result.report_dir,
                &job.name,
                result.run_id,
                &stamp,
                t.as_mut(),
            )),
            Err(e) => {
                let why = format!("{e:#}");
                warn!(job = %job.name, error = %why, "Push destination could not be opened.");
                result.pushed.extend(entry.files.iter().map(|f| Pushed {
                    file: f.clone(),
                    name: String::new(),
                    status: "failed",
                    bytes: 0,
                    detail: why.clone(),
                }));
            }
        }
    }
    let failed_pushes = result.pushed.iter().filter(|p| p.status == "failed").count();
    if failed_pushes > 0 {
        result.failed = true;
        result.totals.outcome = "failed".into();
        let error = format!("{failed_pushes} file(s) could not be pushed back");
        if let Err(e) = store.set_run_outcome(result.run_id, "failed", Some(&error)) {
            warn!(error = %format!("{e:#}"), "Could not record the push failure.");
        }
        result.totals.error = Some(error);
    }

    if let Some(settings) = &job.email {
        let t = &result.totals;
        let r = &result.reconciled;
        let counts = vec![
            ("Records loaded", t.records),
            ("Rejected records", t.rejects),
            ("Matched pairs", t.matches),
            ("External ID conflicts", t.conflicts),
            ("Possible matches to review", r.possible_matches as u64),
            ("Possible duplicates", r.duplicates as u64),
            ("ID updates for the EHR", r.id_updates as u64),
            ("Files loaded", t.files),
        ];
        let mut notes = Vec::new();
        let pushed = result.pushed.iter().filter(|p| p.status == "pushed").count();
        if !result.pushed.is_empty() {
            notes.push(format!(
                "Pushed back: {pushed} file(s), {} skipped as empty, {failed_pushes} failed.",
                result.pushed.iter().filter(|p| p.status == "skipped").count()
            ));
        }
        let facts = email::Facts {
            job: &job.name,
            run_id: result.run_id,
            outcome: &result.totals.outcome,
            started: &started.with_timezone(&job.time_zone).format("%Y-%m-%d %H:%M %Z").to_string(),
            counts: &counts,
            report_dir: Some(&result.report_dir),
            notes: &notes,
        };
        result.mail = Some(send_mail(job, settings, &facts));
    }

    match prune(job, store, result.run_id, clock::now()) {
        Ok(p) => result.pruned = p,
        Err(e) => {
            warn!(job = %job.name, error = %format!("{e:#}"), "Pruning old runs failed; tried again next run.")
        }
    }
}

/// Put the run's message in the outbox, then send everything waiting there.
fn send_mail(job: &Job, settings: &crate::job::Email, facts: &email::Facts) -> MailOutcome {
    let outbox = Outbox::new(&job.state_dir, &job.name);
    let now = clock::now();
    let mut outcome = MailOutcome::default();
    match email::compose(settings, facts, now).and_then(|m| outbox.put(&m)) {
        Ok(path) => info!(job = %job.name, file = %path.display(), "Email queued."),
        Err(e) => {
            let why = format!("{e:#}");
            warn!(job = %job.name, error = %why, "Email could not be composed.");
            outcome.error = Some(why);
        }
    }
    let flushed = outbox.flush(settings, now);
    if let Some(e) = &flushed.error {
        warn!(
            job = %job.name,
            waiting = flushed.waiting,
            outbox = %outbox.dir().display(),
            error = %e,
            "Email not sent; it waits in the outbox and is sent on the next run."
        );
    }
    outcome.sent = flushed.sent;
    outcome.waiting = flushed.waiting;
    outcome.error = outcome.error.or(flushed.error).or_else(|| refusals(&flushed.refused));
    outcome
}

/// Send a job's waiting email, if the back-off allows (for `run-due`
/// between runs). Call with the job's lock held.
pub fn flush_outbox(job: &Job, _lock: &JobLock) -> Option<MailOutcome> {
    let settings = job.email.as_ref()?;
    let outbox = Outbox::new(&job.state_dir, &job.name);
    let now = clock::now();
    if !outbox.ready(now).unwrap_or(false) {
        return None;
    }
    let f = outbox.flush(settings, now);
    if let Some(e) = &f.error {
        warn!(job = %job.name, waiting = f.waiting, error = %e, "Waiting email still not sent.");
    }
    let error = f.error.or_else(|| refusals(&f.refused));
    Some(MailOutcome { sent: f.sent, waiting: f.waiting, error })
}

/// The messages the relay refused for good, as one problem to report.
fn refusals(refused: &[String]) -> Option<String> {
    (!refused.is_empty())
        .then(|| format!("{} message(s) refused for good: {}", refused.len(), refused.join("; ")))
}

/// Every current patient of both sides: built from the flat files just
/// loaded when they are all the store holds, else read from the store.
fn current_patients(
    store: &Store,
    job: &str,
    loaded: Vec<(Side, i64, ParsedFile)>,
    hl7_sides: &[Side],
) -> Result<(Vec<PatientRecord>, Vec<PatientRecord>)> {
    let (mut ehr, mut practice): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for (side, id, parsed) in loaded {
        match side {
            Side::Ehr => ehr.push((id, parsed)),
            Side::Practice => practice.push((id, parsed)),
        }
    }
    // A side that also loaded HL7 this run is read back: its messages may
    // have changed rows after the flat files.
    for (side, files) in [(Side::Ehr, &mut ehr), (Side::Practice, &mut practice)] {
        if hl7_sides.contains(&side) {
            files.clear();
        }
    }
    match (
        store.patients_just_loaded(job, Side::Ehr, &mut ehr)?,
        store.patients_just_loaded(job, Side::Practice, &mut practice)?,
    ) {
        (Some(e), Some(p)) => Ok((e, p)),
        (Some(e), None) => Ok((e, store.patients(job, Side::Practice)?)),
        (None, Some(p)) => Ok((store.patients(job, Side::Ehr)?, p)),
        (None, None) => {
            // The parsed files are not needed: free them before reading.
            drop((ehr, practice));
            store.patients_of_both(job)
        }
    }
}

fn run_stages(
    job: &Job,
    store: &mut Store,
    run_id: i64,
    started: &chrono::DateTime<chrono::Local>,
    opts: &RunOptions,
) -> Result<RunResult> {
    if !job.missing.is_empty() {
        anyhow::bail!("{} (not mounted, moved or not yet written?)", job.missing.join("; "));
    }
    let received = job.state_dir.join("received").join(&job.name).join(format!("run-{run_id}"));
    let mut files: Vec<FileSummary> = store
        .carry_unreported_files(&job.name, run_id)?
        .into_iter()
        .map(|f| FileSummary {
            side: f.side,
            name: f.name,
            status: "loaded".into(),
            read: f.read,
            accepted: f.accepted,
            rejected: f.rejected,
            warnings: f.warnings,
            detail: [
                format!("loaded by run {}, which stopped before it reported them", f.run_id),
                f.older.detail(),
            ]
            .into_iter()
            .filter(|d| !d.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        })
        .collect();
    if !files.is_empty() {
        warn!(job = %job.name, files = files.len(), "Files loaded by runs that wrote no reports are reported by this run.");
    }
    let mut pending: Vec<Pending> = Vec::new();

    let src = &job.source;
    let mut source =
        transport::open(&src.endpoint).with_context(|| format!("cannot open {}", src.endpoint.describe()))?;
    take_from_source(job, src, source.as_mut(), store, &received, &mut files, &mut pending)?;

    let mut practice_transport = None;
    if let Some(practice) = &job.practice {
        let dir = practice.file.parent().unwrap_or(Path::new("."));
        let name = practice.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut t = LocalTransport::new(dir);
        let entry = t
            .list()
            .with_context(|| format!("cannot list {}", dir.display()))?
            .into_iter()
            .find(|e| e.name == name)
            .with_context(|| format!("practice roster {} is missing", practice.file.display()))?;
        let pick = Pick::practice(practice);
        take_one(job, &mut t, store, &received, entry, pick, Origin::Practice, &mut files, &mut pending)?;
        practice_transport = Some(t);
    }
    take_interrupted(job, store, &mut files, &mut pending)?;

    // Files are read in parallel across files, in input order so runs are
    // repeatable: every flat file, and the HL7 files that are mapped whole
    // ahead of their load (see `MAP_AHEAD`); a larger HL7 file maps its
    // messages in parallel as it loads, a chunk at a time.
    let mut budget = match std::env::var("FERRY_MAP_AHEAD") {
        Ok(v) if v == "off" => 0,
        _ => MAP_AHEAD.total,
    };
    let ahead: Vec<bool> = pending
        .iter()
        .map(|p| {
            let take = matches!(p.schema, InputSchema::Hl7(_))
                && p.taken.size <= MAP_AHEAD.file
                && p.taken.size <= budget;
            if take {
                budget -= p.taken.size;
            }
            take
        })
        .collect();
    let read: Vec<Read<'_>> = crate::timed("reading files ahead of their load", || {
        pending
            .par_iter()
            .zip(&ahead)
            .map(|(p, &ahead)| match p.schema {
                InputSchema::Flat(schema) => Read::Flat(
                    fs::read(&p.taken.local_path)
                        .with_context(|| format!("cannot read {}", p.taken.local_path))
                        .map(|bytes| {
                            parse_bytes(&bytes, schema, p.taken.side, chrono::Local::now().date_naive())
                        }),
                ),
                InputSchema::Hl7(schema) => {
                    Read::Hl7(schema, ahead.then(|| map_whole(job, p, schema)).flatten())
                }
            })
            .collect()
    });
    let mapped_ahead = read.iter().filter(|r| matches!(r, Read::Hl7(_, Some(_)))).count();
    debug!(files = mapped_ahead, "Mapped HL7 files ahead of their load.");

    let bar = progress_bar(opts.progress, pending.iter().map(|p| p.taken.size).sum());
    let mut failed = false;
    // Flat files loaded, kept: their records are the store's rows when
    // nothing else is (see `Store::patients_just_loaded`).
    let mut loaded_flat: Vec<(Side, i64, ParsedFile)> = Vec::new();
    let mut hl7_sides: Vec<Side> = Vec::new();
    for (p, read) in pending.iter().zip(read) {
        bar.set_message(p.taken.name.clone());
        let base = bar.position();
        let (file_id, mut summary) = match read {
            Read::Hl7(schema, mapped) => {
                // A file whose load stopped part-way has messages in it.
                let fatal = match &p.resume {
                    None => crate::hl7::not_hl7(&map_copy(&p.taken.local_path)?),
                    Some(_) => None,
                };
                if let Some(reason) = fatal {
                    files.push(not_loaded(p, 0, 0, 0, reason));
                    failed = true;
                    continue;
                }
                hl7_sides.push(p.taken.side);
                load_hl7(job, store, run_id, p, schema, mapped, opts.batch, &bar)?
            }
            Read::Flat(parsed) => {
                let parsed = parsed?;
                let empty = empty_snapshot(p.load, &parsed);
                let shrunk = match opts.accept_shrink {
                    false => shrunk_snapshot(job, store, p, &parsed)?,
                    true => None,
                };
                if let Some(reason) = parsed.fatal.as_ref().or(empty.as_ref()).or(shrunk.as_ref()) {
                    files.push(not_loaded(p, parsed.read, parsed.rejected(), parsed.warnings(), reason));
                    failed = true;
                    continue;
                }
                let summary = FileSummary {
                    side: p.taken.side,
                    name: p.taken.name.clone(),
                    status: "loaded".into(),
                    read: parsed.read,
                    accepted: parsed.accepted(),
                    rejected: parsed.rejected(),
                    warnings: parsed.warnings(),
                    detail: String::new(),
                };
                let file_id = crate::timed("loading a file into the store", || {
                    store.load_file_batched(
                        &job.name,
                        run_id,
                        &p.taken,
                        &parsed,
                        p.load,
                        Batching {
                            resume: p.resume.as_ref(),
                            reload: p.reload,
                            size: opts.batch,
                            progress: &mut |done| {
                                let share = done as f64 / parsed.records.len().max(1) as f64;
                                bar.set_position(base + (p.taken.size as f64 * share) as u64);
                            },
                            state: p.after.loaded_state(),
                        },
                    )
                })
                .with_context(|| format!("cannot load {}", p.taken.name))?;
                loaded_flat.push((p.taken.side, file_id, parsed));
                (file_id, summary)
            }
        };
        bar.set_position(base + p.taken.size);
        info!(file = %p.taken.name, read = summary.read, accepted = summary.accepted, rejected = summary.rejected, warnings = summary.warnings, "Loaded file.");
        let transport: &mut dyn Transport = match (p.origin, practice_transport.as_mut()) {
            (Origin::Practice, Some(t)) => t,
            _ => source.as_mut(),
        };
        if let Some((name, at)) = store.same_content(file_id)? {
            warn!(file = %p.taken.name, earlier = %name, "File has the same bytes as one loaded before.");
            let again = format!("the same bytes as {name}, loaded {at}: sent again under another name?");
            add_detail(&mut summary.detail, &again);
        }
        if p.origin == Origin::Ledger {
            add_detail(
                &mut summary.detail,
                "an interrupted load, finished from ferry's copy: the source no longer lists the file as it \
                 was, and is left as it is",
            );
        } else {
            let loaded = p.after.loaded_state();
            finish_source_file(transport, store, file_id, loaded, &p.entry.name, p.after, src_archive(job))?;
        }
        files.push(summary);
    }
    bar.finish_and_clear();

    let (ehr, practice) = crate::timed("reading patients from the store", || {
        current_patients(store, &job.name, loaded_flat, &hl7_sides)
    })?;
    let history = store.id_changes(&job.name)?;
    let outcome = crate::timed("reconciling", || reconcile(&ehr, &practice, &history, &job.reconcile));
    let rejects = store.rejects_of_run(run_id)?;
    let merges = store.merges(&job.name)?;
    let appointments = store.appointment_counts(&job.name)?;
    // A file the source refused, or whose load cannot go on, fails the run
    // as one that could not be read does.
    let failed = failed || files.iter().any(|f| f.status == "failed");
    let loaded = files.iter().filter(|f| f.status == "loaded");
    let mut totals = RunTotals {
        outcome: if failed { "failed" } else { "ok" }.to_string(),
        files: files.iter().filter(|f| f.status == "loaded").count() as u64,
        records: loaded.clone().map(|f| f.accepted).sum(),
        rejects: loaded.map(|f| f.rejected).sum::<u64>(),
        matches: outcome.links.len() as u64,
        conflicts: outcome.conflicts.len() as u64,
        report_dir: None,
        error: failed
            .then(|| "a file could not be fetched or read; see summary.csv and rejects.csv".to_string()),
    };
    let history = store.runs(Some(&job.name), 40)?;
    let history: Vec<_> = history.into_iter().filter(|r| r.id != run_id).collect();
    let started_text = started.format("%Y-%m-%d %H:%M:%S %z").to_string();
    crate::store::failpoint("reports");
    let report_dir = crate::timed("writing reports", || {
        report::write(
            &job.reports_dir,
            &started.format("%Y-%m-%dT%H%M%S").to_string(),
            &RunReport {
                job: &job.name,
                run_id,
                started: &started_text,
                files: &files,
                ehr: &ehr,
                practice: &practice,
                outcome: &outcome,
                rejects: &rejects,
                merges: &merges,
                appointments: &appointments,
                totals: &totals,
                history: &history,
            },
            |dir| store.claim_report_dir(run_id, &dir.display().to_string()),
        )
    })?;
    crate::store::failpoint("reports_written");
    totals.report_dir = Some(report_dir.display().to_string());
    let by_demographics = outcome.links.iter().filter(|l| l.key.is_none()).count();
    let reconciled = Reconciled {
        ehr: ehr.len(),
        practice: practice.len(),
        by_id: outcome.links.len() - by_demographics,
        by_demographics,
        possible_matches: outcome.possible_matches.len(),
        duplicates: outcome.duplicates.len(),
        id_updates: outcome.id_updates.len(),
        candidate_pairs: outcome.matching.as_ref().map_or(0, |m| m.candidates),
    };
    // Deliver: the outbox folders go out last, after the run's own work.
    let sent = crate::outbox::send_all(job)?;
    Ok(RunResult {
        run_id,
        report_dir,
        files,
        totals,
        failed,
        reconciled,
        pushed: Vec::new(),
        mail: None,
        pruned: Pruned::default(),
        sent,
    })
}

fn src_archive(job: &Job) -> &str {
    &job.source.archive_dir
}

/// Archive, delete or keep a source file that is safely in the ledger, in
/// ledger `state`, and record the after-action's state if it is not the
/// state already: a source of files left in place lists them all at every
/// run, and a kept file needs nothing, at the source or in the store.
#[allow(clippy::too_many_arguments)]
fn finish_source_file(
    transport: &mut dyn Transport,
    store: &Store,
    file_id: i64,
    state: &str,
    name: &str,
    after: AfterAction,
    archive_dir: &str,
) -> Result<()> {
    let limits = transport.limits();
    let what = format!("{} {name}", after.as_str());
    // A retry after a dropped connection may find the work done (the file
    // already moved or removed): NotFound is success here.
    let result = retry(&limits, &what, || match after {
        AfterAction::Keep => Ok(()),
        AfterAction::Delete => transport.remove(name),
        // A file of the same name archived before (the EHR sent the name
        // again): this one goes beside it under a name with its ledger ID,
        // and a number after that when its same bytes come again.
        AfterAction::Archive => {
            let mut result = transport.rename(name, archive_dir, name);
            let mut copy = 1;
            while let Err(TransportError::Exists { .. }) = result
                && copy <= MAX_ARCHIVED_COPIES
            {
                result = transport.rename(name, archive_dir, &archived_name(name, file_id, copy));
                copy += 1;
            }
            result
        }
    });
    match result {
        Ok(()) => {}
        // Done already, if the file is gone. A server may also answer "not
        // found" for a refusal (FTP's 550 for no permission) or for a
        // missing archive folder: then the file is still there.
        Err(TransportError::NotFound { .. })
            if !transport
                .list()
                .with_context(|| format!("cannot list {}", transport.describe()))?
                .iter()
                .any(|e| e.name == name) => {}
        Err(e) => {
            let hint = match (&e, after) {
                (TransportError::NotFound { .. }, AfterAction::Archive) => {
                    format!(" (it is still there: no permission, or no archive folder {archive_dir}?)")
                }
                (TransportError::NotFound { .. }, _) => " (it is still there: no permission?)".to_string(),
                _ => String::new(),
            };
            return Err(e).with_context(|| {
                format!("cannot {} {name} at {}{hint}", after.as_str(), transport.describe())
            });
        }
    }
    if state != after.done_state() {
        store.set_file_state(file_id, after.done_state())?;
    }
    Ok(())
}

/// How many copies of one ledger file the archive takes beside the first
/// (the same bytes sent again and again under one name) before archiving
/// fails, naming the file.
const MAX_ARCHIVED_COPIES: u32 = 100;

/// `name` with the ledger ID of its file before its extension: "adt.hl7"
/// is archived as "adt.ledger-42.hl7" when the archive holds an "adt.hl7",
/// and its `copy`th copy after that as "adt.ledger-42-2.hl7" and so on.
fn archived_name(name: &str, file_id: i64, copy: u32) -> String {
    let id = if copy > 1 { format!("{file_id}-{copy}") } else { file_id.to_string() };
    transport::tagged_name(name, &format!("ledger-{id}"))
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} loading [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, \
             ETA {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

/// Used by `ferry check`: what would be considered in the job's source folder.
pub fn preview_source(job: &Job) -> Result<Vec<String>> {
    let src = &job.source;
    let mut t = transport::open(&src.endpoint)?;
    let entries = t.list().with_context(|| format!("cannot list {}", t.describe()))?;
    Ok(entries
        .into_iter()
        .filter(|e| !transport::is_in_progress_name(&e.name) && src.filter.matches(&e.name))
        .map(|e| e.name)
        .collect())
}

/// `text` put first in a file's summary detail, before what it says already.
fn add_detail(detail: &mut String, text: &str) {
    *detail = match detail.as_str() {
        "" => text.to_string(),
        rest => format!("{text}; {rest}"),
    };
}
