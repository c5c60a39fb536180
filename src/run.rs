//! The job runner: one run of one job, stage by stage. Take new files from
//! the source, put each on local disk (fsynced) and parse them in parallel,
//! load each in its own transaction with its ledger row, only then archive
//! or delete the source file, reconcile what the store holds, write the
//! reports.
//!
//! A crash at any point loses nothing: before the ledger commit the source
//! file is untouched and the next run takes it again; after it, the next
//! run finds it in the ledger and only finishes the after-action.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::clock;
use crate::flatfile::{ParsedFile, parse_bytes};
use crate::hl7::{self, MapSettings, Mapped, MessageOutcome};
use crate::job::{AfterAction, InputSchema, Job, Settle, Source};
use crate::model::{PatientRecord, Reject, Severity, Side};
use crate::prune::{Pruned, prune};
use crate::push::{self, Pushed};
use crate::reconcile::reconcile;
use crate::report::email::{self, Outbox};
use crate::report::{self, FileSummary, RunReport};
use crate::store::{
    Applied, Batching, Counts, FileLoad, LedgerEntry, LoadMode, MessageRow, RunTotals, Store, TakenFile,
};
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { progress: false, kind: "run", batch: DEFAULT_BATCH }
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
}

#[derive(Clone, Copy)]
enum Origin {
    Source,
    Practice,
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

pub fn lock_job(job: &Job) -> Result<JobLock> {
    let dir = job.state_dir.join("locks");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{}.lock", job.name));
    let file = File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(JobLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(AlreadyRunning { job: job.name.clone(), lock: path }.into()),
        Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
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

/// After the reports: push files back, email the report, prune old runs.
/// A failed push fails the run; an email that cannot be sent waits in the
/// outbox and does not.
fn deliver(job: &Job, store: &mut Store, started: &chrono::DateTime<chrono::Local>, result: &mut RunResult) {
    let stamp = started.format("%Y%m%dT%H%M%S").to_string();
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
    outcome.error = outcome.error.or(flushed.error);
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
    Some(MailOutcome { sent: f.sent, waiting: f.waiting, error: f.error })
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
    let received = job.state_dir.join("received").join(&job.name).join(format!("run-{run_id}"));
    let mut files: Vec<FileSummary> = Vec::new();
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
        let pick = Pick {
            side: Side::Practice,
            schema: &practice.schema,
            load: LoadMode::Replace,
            after: AfterAction::Keep,
        };
        take_one(job, &mut t, store, &received, entry, pick, Origin::Practice, &mut files, &mut pending)?;
        practice_transport = Some(t);
    }

    // Flat files are parsed in parallel, in input order so runs are
    // repeatable; HL7 files map their messages in parallel as they load.
    let parsed: Vec<Option<Result<ParsedFile>>> = crate::timed("parsing flat files", || {
        pending
            .par_iter()
            .map(|p| match p.schema {
                InputSchema::Flat(schema) => Some(
                    fs::read(&p.taken.local_path)
                        .with_context(|| format!("cannot read {}", p.taken.local_path))
                        .map(|bytes| {
                            parse_bytes(&bytes, schema, p.taken.side, chrono::Local::now().date_naive())
                        }),
                ),
                InputSchema::Hl7(_) => None,
            })
            .collect()
    });

    let bar = progress_bar(opts.progress, pending.iter().map(|p| p.taken.size).sum());
    let mut failed = false;
    // Flat files loaded, kept: their records are the store's rows when
    // nothing else is (see `Store::patients_just_loaded`).
    let mut loaded_flat: Vec<(Side, i64, ParsedFile)> = Vec::new();
    let mut hl7_sides: Vec<Side> = Vec::new();
    for (p, parsed) in pending.iter().zip(parsed) {
        bar.set_message(p.taken.name.clone());
        let base = bar.position();
        let (file_id, summary) = match (p.schema, parsed) {
            (InputSchema::Hl7(schema), _) => {
                hl7_sides.push(p.taken.side);
                load_hl7(job, store, run_id, p, schema, opts.batch, &bar)?
            }
            (_, Some(parsed)) => {
                let parsed = parsed?;
                let mut summary = FileSummary {
                    side: p.taken.side,
                    name: p.taken.name.clone(),
                    status: "loaded".into(),
                    read: parsed.read,
                    accepted: parsed.accepted(),
                    rejected: parsed.rejected(),
                    warnings: parsed.warnings(),
                    detail: String::new(),
                };
                if let Some(reason) = &parsed.fatal {
                    // Not loaded and not in the ledger: the source file stays where
                    // it is, to be taken again once the schema or file is fixed.
                    warn!(file = %p.taken.name, "File could not be read; left at the source.");
                    failed = true;
                    summary.status = "failed".into();
                    summary.detail = reason.clone();
                    files.push(summary);
                    continue;
                }
                let file_id = crate::timed("loading a file into the store", || {
                    store.load_file_batched(
                        &job.name,
                        run_id,
                        &p.taken,
                        &parsed,
                        p.load,
                        Batching {
                            resume: p.resume.as_ref(),
                            size: opts.batch,
                            progress: &mut |done| {
                                let share = done as f64 / parsed.records.len().max(1) as f64;
                                bar.set_position(base + (p.taken.size as f64 * share) as u64);
                            },
                        },
                    )
                })
                .with_context(|| format!("cannot load {}", p.taken.name))?;
                loaded_flat.push((p.taken.side, file_id, parsed));
                (file_id, summary)
            }
            (InputSchema::Flat(_), None) => unreachable!("flat files are parsed above"),
        };
        bar.set_position(base + p.taken.size);
        info!(file = %p.taken.name, read = summary.read, accepted = summary.accepted, rejected = summary.rejected, warnings = summary.warnings, "Loaded file.");
        let transport: &mut dyn Transport = match (p.origin, practice_transport.as_mut()) {
            (Origin::Practice, Some(t)) => t,
            _ => source.as_mut(),
        };
        finish_source_file(transport, store, file_id, &p.entry.name, p.after, src_archive(job))?;
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
    let loaded = files.iter().filter(|f| f.status == "loaded");
    let mut totals = RunTotals {
        outcome: if failed { "failed" } else { "ok" }.to_string(),
        files: files.iter().filter(|f| f.status == "loaded").count() as u64,
        records: loaded.clone().map(|f| f.accepted).sum(),
        rejects: loaded.map(|f| f.rejected).sum::<u64>(),
        matches: outcome.links.len() as u64,
        conflicts: outcome.conflicts.len() as u64,
        report_dir: None,
        error: failed.then(|| "a file could not be read; see rejects.csv".to_string()),
    };
    let history = store.runs(Some(&job.name), 40)?;
    let history: Vec<_> = history.into_iter().filter(|r| r.id != run_id).collect();
    let started_text = started.format("%Y-%m-%d %H:%M:%S %z").to_string();
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
        )
    })?;
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

/// How a taken file is to be read and finished.
#[derive(Clone, Copy)]
struct Pick<'j> {
    side: Side,
    schema: &'j InputSchema,
    load: LoadMode,
    after: AfterAction,
}

fn take_from_source<'j>(
    job: &'j Job,
    src: &Source,
    transport: &mut dyn Transport,
    store: &Store,
    received: &Path,
    files: &mut Vec<FileSummary>,
    pending: &mut Vec<Pending<'j>>,
) -> Result<()> {
    let limits = transport.limits();
    let listed = retry(&limits, "list", || transport.list())
        .with_context(|| format!("cannot list {}", transport.describe()))?;
    let now = SystemTime::now();
    let mut candidates = Vec::new();
    for entry in listed {
        if transport::is_in_progress_name(&entry.name) || !src.filter.matches(&entry.name) {
            continue;
        }
        let mut note =
            |status: &str, detail: String| files.push(file_note(Side::Ehr, &entry.name, status, detail));
        if let Err(e) = transport::check_name(&entry.name) {
            warn!(error = %e, source = %transport.describe(), "Refused a file name.");
            note("refused", e.to_string());
            continue;
        }
        if let Settle::MinAge(min_age) = src.settle {
            let age = now.duration_since(entry.mtime).unwrap_or_default();
            if age < min_age {
                note(
                    "waiting",
                    format!(
                        "modified {}s ago; taken once unchanged for {}s",
                        age.as_secs(),
                        min_age.as_secs()
                    ),
                );
                continue;
            }
        }
        let Some(input) = job.input_for(&entry.name) else {
            note("not taken", "no [[inputs]] pattern matches this name; left at the source".into());
            continue;
        };
        candidates.push((entry, input));
    }

    // A remote clock cannot be trusted for an age: a remote file is taken
    // only if a second listing, `stable_for` later, shows the same size and
    // mtime. Files the ledger already has need no second look.
    if let Settle::StableFor(wait) = src.settle {
        let fresh = candidates.iter().any(|(e, input)| {
            !matches!(store.ledger_seen(&job.name, input.side, &e.name, e.size, &e.mtime_key()), Ok(Some(_)))
        });
        if fresh {
            std::thread::sleep(wait);
            let again = retry(&limits, "list", || transport.list())
                .with_context(|| format!("cannot list {}", transport.describe()))?;
            let again: std::collections::HashMap<&str, &Entry> =
                again.iter().map(|e| (e.name.as_str(), e)).collect();
            candidates.retain(|(e, input)| match again.get(e.name.as_str()) {
                Some(a) if a.size == e.size && a.mtime == e.mtime => true,
                Some(a) => {
                    files.push(file_note(
                        input.side,
                        &e.name,
                        "waiting",
                        format!(
                            "still changing ({} -> {} bytes in {}s); taken once stable",
                            e.size,
                            a.size,
                            wait.as_secs_f32()
                        ),
                    ));
                    false
                }
                None => false, // taken by someone else meanwhile
            });
        }
    }

    // Let the transport download the new files ahead, several at once.
    let ahead: Vec<Entry> = candidates
        .iter()
        .filter(|(e, input)| {
            matches!(store.ledger_seen(&job.name, input.side, &e.name, e.size, &e.mtime_key()), Ok(None))
        })
        .map(|(e, _)| e.clone())
        .collect();
    transport.prefetch(&ahead);

    let mut new = Vec::new();
    for (entry, input) in candidates {
        let pick = Pick { side: input.side, schema: &input.schema, load: input.load, after: src.after };
        if let Some(taken) = take_known(job, transport, store, entry, pick, Origin::Source, files, pending)? {
            new.push(taken);
        }
    }
    // New files are fetched in batches that are made durable together.
    for batch in new.chunks(PULL_BATCH) {
        let names: Vec<String> = batch.iter().map(|(e, _)| e.name.clone()).collect();
        let fetched = pull(transport, &names, received)?;
        for ((entry, pick), f) in batch.iter().cloned().zip(fetched) {
            take_fetched(job, transport, store, entry, pick, Origin::Source, f, files, pending)?;
        }
    }
    Ok(())
}

/// Files fetched before they are made durable together: bounds the work a
/// crash throws away, and the size of the list kept in memory.
const PULL_BATCH: usize = 512;

/// Take one listed file: skip it if the ledger has it, else copy it to
/// local disk, fsync, hash, and queue it for parsing.
#[allow(clippy::too_many_arguments)]
fn take_one<'j>(
    job: &Job,
    transport: &mut dyn Transport,
    store: &Store,
    received: &Path,
    entry: Entry,
    pick: Pick<'j>,
    origin: Origin,
    files: &mut Vec<FileSummary>,
    pending: &mut Vec<Pending<'j>>,
) -> Result<()> {
    let Some((entry, pick)) = take_known(job, transport, store, entry, pick, origin, files, pending)? else {
        return Ok(());
    };
    let fetched = pull(transport, std::slice::from_ref(&entry.name), received)?;
    for f in fetched {
        take_fetched(job, transport, store, entry.clone(), pick, origin, f, files, pending)?;
    }
    Ok(())
}

fn already(side: Side, name: &str, run_id: i64) -> FileSummary {
    file_note(side, name, "already loaded", format!("in the ledger since run {run_id}; not loaded again"))
}

/// A listed file the ledger knows by name, size and mtime: finish its
/// after-action, or go on with its interrupted load. Returns the file back
/// when it is new and must be fetched.
#[allow(clippy::too_many_arguments)]
fn take_known<'j>(
    job: &Job,
    transport: &mut dyn Transport,
    store: &Store,
    entry: Entry,
    pick: Pick<'j>,
    origin: Origin,
    files: &mut Vec<FileSummary>,
    pending: &mut Vec<Pending<'j>>,
) -> Result<Option<(Entry, Pick<'j>)>> {
    let Some(seen) = store.ledger_seen(&job.name, pick.side, &entry.name, entry.size, &entry.mtime_key())?
    else {
        return Ok(Some((entry, pick)));
    };
    if seen.state == "loading" {
        resume(store, seen, entry, pick, origin, pending)?;
        return Ok(None);
    }
    // Loaded before; a crash may have come between the ledger commit and
    // the after-action, so finish that now.
    finish_source_file(transport, store, seen.id, &entry.name, pick.after, src_archive(job))?;
    files.push(already(pick.side, &entry.name, seen.run_id));
    Ok(None)
}

/// A file now on local disk (or not, and why): check it against the
/// listing and the ledger, and queue it for loading.
#[allow(clippy::too_many_arguments)]
fn take_fetched<'j>(
    job: &Job,
    transport: &mut dyn Transport,
    store: &Store,
    entry: Entry,
    pick: Pick<'j>,
    origin: Origin,
    fetched: Fetched,
    files: &mut Vec<FileSummary>,
    pending: &mut Vec<Pending<'j>>,
) -> Result<()> {
    let (local, sha256) = match fetched {
        Fetched::Whole(local, sha256) => (local, sha256),
        Fetched::Changed(why) => {
            files.push(file_note(pick.side, &entry.name, "waiting", format!("{why}; taken next run")));
            return Ok(());
        }
        Fetched::Gone => {
            let why = "listed, then gone before it was read (taken by someone else?)".to_string();
            files.push(file_note(pick.side, &entry.name, "gone", why));
            return Ok(());
        }
    };
    let size = fs::metadata(&local)?.len();
    if size != entry.size {
        // Changed between listing and reading: still being written.
        fs::remove_file(&local)?;
        let why = format!("size changed while reading ({} -> {size} bytes); taken next run", entry.size);
        files.push(file_note(pick.side, &entry.name, "waiting", why));
        return Ok(());
    }
    if let Some(found) = store.ledger_find(&job.name, pick.side, &entry.name, entry.size, &sha256)? {
        fs::remove_file(&local)?;
        if found.state == "loading" {
            // The same bytes under a new mtime: go on with the interrupted load.
            return resume(store, found, entry, pick, origin, pending);
        }
        finish_source_file(transport, store, found.id, &entry.name, pick.after, src_archive(job))?;
        files.push(already(pick.side, &entry.name, found.run_id));
        return Ok(());
    }
    pending.push(Pending {
        taken: TakenFile {
            side: pick.side,
            name: entry.name.clone(),
            size,
            mtime: entry.mtime_key(),
            sha256,
            local_path: local.display().to_string(),
            schema: pick.schema.name().to_string(),
        },
        entry,
        schema: pick.schema,
        load: pick.load,
        after: pick.after,
        origin,
        resume: None,
    });
    Ok(())
}

/// Queue a load that stopped after a checkpoint, to go on with ferry's own
/// copy of the file, which was fsynced before the first batch.
fn resume<'j>(
    store: &Store,
    ledger: LedgerEntry,
    entry: Entry,
    pick: Pick<'j>,
    origin: Origin,
    pending: &mut Vec<Pending<'j>>,
) -> Result<()> {
    let taken = store.ledger_taken(ledger.id)?;
    if !Path::new(&taken.local_path).exists() {
        bail!(
            "{} was being loaded (ledger row {}) but ferry's copy {} is gone; restore it or remove the \
             row's partial load before running again",
            entry.name,
            ledger.id,
            taken.local_path
        );
    }
    info!(file = %entry.name, done = ledger.records_done, "Going on with an interrupted load.");
    pending.push(Pending {
        taken,
        entry,
        schema: pick.schema,
        load: pick.load,
        after: pick.after,
        origin,
        resume: Some(ledger),
    });
    Ok(())
}

/// A file that was listed but not loaded, for the run's summary.
fn file_note(side: Side, name: &str, status: &str, detail: String) -> FileSummary {
    FileSummary {
        side,
        name: name.to_string(),
        status: status.into(),
        read: 0,
        accepted: 0,
        rejected: 0,
        warnings: 0,
        detail,
    }
}

/// What came of copying a source file to local disk.
#[derive(Debug)]
pub enum Fetched {
    /// On local disk, fsynced, under its own name: the path and SHA-256.
    Whole(PathBuf, String),
    /// It changed while it was read (still being written); nothing kept.
    Changed(String),
    /// It was listed but is gone.
    Gone,
}

/// Copy source files into `dir`: each under a temporary name (`.NAME.part`),
/// hashed as it arrives; then all of them made durable at once, renamed
/// into place, and the folder synced. A dropped connection is retried from
/// the start of that file under the transport's limits; a half-read file
/// never gets its real name. Fails when the retries are spent.
///
/// Durable at once: one `syncfs` for the batch instead of an fsync per file
/// (two journal commits each) takes 5,000 small files from ~400/s to
/// thousands per second; the guarantee is the same, since nothing is
/// renamed or recorded before the sync.
pub fn pull(transport: &mut dyn Transport, names: &[String], dir: &Path) -> Result<Vec<Fetched>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let limits = transport.limits();
    let mut out = Vec::with_capacity(names.len());
    let mut written = Vec::new();
    for name in names {
        let name = transport::check_name(name)?;
        let tmp = dir.join(format!(".{name}.part"));
        let fetched = retry(&limits, &format!("fetch {name}"), || {
            let file = File::create(&tmp).map_err(|e| TransportError::Permanent {
                what: format!("cannot create {}", tmp.display()),
                source: e,
            })?;
            let mut w = HashingWriter::new(file);
            transport.fetch(name, &mut w)?;
            w.finish().map_err(|e| TransportError::Permanent {
                what: format!("cannot write {}", tmp.display()),
                source: e,
            })
        });
        match fetched {
            Ok((file, sha256)) => {
                written.push(file);
                out.push(Fetched::Whole(tmp, sha256));
            }
            Err(TransportError::Changed { why, .. }) => {
                let _ = fs::remove_file(&tmp);
                out.push(Fetched::Changed(why));
            }
            Err(TransportError::NotFound { .. }) => {
                let _ = fs::remove_file(&tmp);
                out.push(Fetched::Gone);
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("cannot fetch {name} from {}", transport.describe()));
            }
        }
    }
    if written.is_empty() {
        return Ok(out);
    }
    sync_files(dir, &written).with_context(|| format!("cannot sync files in {}", dir.display()))?;
    drop(written);
    for (f, name) in out.iter_mut().zip(names) {
        if let Fetched::Whole(path, _) = f {
            let real = dir.join(name);
            fs::rename(&*path, &real).with_context(|| format!("cannot rename {}", path.display()))?;
            *path = real;
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(out)
}

/// Make written files durable: one fsync for a single file, else one
/// `syncfs` of the filesystem (Linux), else an fsync each.
fn sync_files(dir: &Path, files: &[File]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if files.len() > 1 {
        use std::os::fd::AsRawFd;
        let d = File::open(dir)?;
        // SAFETY: a plain syscall on a descriptor we own for its duration.
        if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    let _ = dir;
    for f in files {
        f.sync_all()?;
    }
    Ok(())
}

/// Where a fetched file is written: its `.NAME.part`, hashed (SHA-256) on
/// the way. The first [`PIPE_AFTER`] bytes are written and hashed in line,
/// as small files come whole and a thread would cost more than it saves.
/// Past that, the bytes go in [`PIPE_BUF`] blocks over a bounded channel
/// to a thread that hashes and writes them ([`BlockWriter`]), so the disk
/// and the hash run beside the network instead of in turn with it.
///
/// [`HashingWriter::finish`] hands back the file and its hash only once
/// every byte is written; dropping the writer without it (a failed
/// attempt) still waits for the thread, so a retry that truncates the
/// same file never races a write left over from the attempt before.
struct HashingWriter {
    state: WriterState,
    written: u64,
}

enum WriterState {
    Inline {
        file: File,
        hash: Sha256,
    },
    Piped(Pipe),
    /// Between states, or after an error ended the thread.
    Done,
}

struct Pipe {
    /// Filled by `write`, sent when full.
    block: Block,
    full: Option<std::sync::mpsc::SyncSender<Block>>,
    /// Emptied blocks back from the thread, to fill again.
    empty: std::sync::mpsc::Receiver<Block>,
    thread: Option<std::thread::JoinHandle<io::Result<(File, Sha256)>>>,
}

/// Bytes written in line before a file gets a writer thread.
const PIPE_AFTER: u64 = 4 << 20;
/// Bytes per hand-over to the writer thread.
const PIPE_BUF: usize = 1 << 20;
/// Full blocks waiting for the writer thread, at most.
const PIPE_DEPTH: usize = 8;
/// What direct I/O wants aligned: file offsets, lengths and memory.
const DIRECT_ALIGN: usize = 4096;

/// Page-aligned memory (an anonymous map), so the writer thread can hand
/// it to the disk directly.
struct Block {
    mem: memmap2::MmapMut,
    len: usize,
    /// Bytes this block takes: less than its size for the first one, so
    /// that every later block starts at a multiple of [`PIPE_BUF`] in the
    /// file.
    cap: usize,
}

impl Block {
    fn new() -> io::Result<Block> {
        Ok(Block { mem: memmap2::MmapMut::map_anon(PIPE_BUF)?, len: 0, cap: PIPE_BUF })
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[..self.len]
    }
}

impl HashingWriter {
    fn new(file: File) -> HashingWriter {
        HashingWriter { state: WriterState::Inline { file, hash: Sha256::new() }, written: 0 }
    }

    /// Move the file and the hash to a writer thread.
    fn start_pipe(&mut self) -> io::Result<()> {
        let WriterState::Inline { file, hash } = std::mem::replace(&mut self.state, WriterState::Done) else {
            return Ok(());
        };
        let mut block = Block::new()?;
        block.cap = PIPE_BUF - (self.written % PIPE_BUF as u64) as usize;
        let (full, full_rx) = std::sync::mpsc::sync_channel::<Block>(PIPE_DEPTH);
        let (empty_tx, empty) = std::sync::mpsc::channel();
        let mut w = BlockWriter::new(file, self.written);
        let thread = std::thread::Builder::new().name("ferry-write".into()).spawn(move || {
            let mut hash = hash;
            for mut block in full_rx {
                hash.update(block.bytes());
                w.write(block.bytes())?;
                block.len = 0;
                block.cap = PIPE_BUF;
                let _ = empty_tx.send(block);
            }
            Ok((w.into_file()?, hash))
        })?;
        self.state = WriterState::Piped(Pipe { block, full: Some(full), empty, thread: Some(thread) });
        Ok(())
    }

    /// Everything written, the file and its SHA-256 in hex.
    fn finish(mut self) -> io::Result<(File, String)> {
        match std::mem::replace(&mut self.state, WriterState::Done) {
            WriterState::Inline { file, hash } => Ok((file, hex(&hash.finalize()))),
            WriterState::Piped(mut pipe) => {
                pipe.send()?;
                let (file, hash) = pipe.join()?;
                Ok((file, hex(&hash.finalize())))
            }
            WriterState::Done => Err(io::Error::other("the writer thread stopped")),
        }
    }
}

impl Pipe {
    /// Hand the filled block to the thread and take an empty one.
    fn send(&mut self) -> io::Result<()> {
        if self.block.len == 0 {
            return Ok(());
        }
        let next = match self.empty.try_recv() {
            Ok(b) => b,
            Err(_) => Block::new()?,
        };
        let full = std::mem::replace(&mut self.block, next);
        let sent = self.full.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if sent {
            return Ok(());
        }
        // The thread stopped on an error: that error is the answer.
        Err(match self.join() {
            Err(e) => e,
            Ok(_) => io::Error::other("the writer thread stopped"),
        })
    }

    /// Close the channel and wait for the thread to write what it holds.
    fn join(&mut self) -> io::Result<(File, Sha256)> {
        self.full = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the writer thread panicked")),
            None => Err(io::Error::other("the writer thread stopped")),
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Writes a large file's blocks with direct I/O where it can (Linux
/// `O_DIRECT`): the bytes go from the block to the disk without a copy
/// into the page cache, which was the largest single cost of a 1 GiB pull
/// after the network, and the final fsync has little left to write. What
/// is not aligned (the start after the in-line part, the tail) is written
/// through the page cache as before, and a filesystem without direct I/O
/// (tmpfs) gets plain writes throughout. The fsync before the rename is
/// unchanged: direct I/O skips the page cache, not the device's cache.
struct BlockWriter {
    file: File,
    /// The file offset of the next byte.
    pos: u64,
    /// Direct I/O is on for the file now.
    direct: bool,
    /// Direct I/O may still be tried (not refused by the filesystem).
    can_direct: bool,
}

impl BlockWriter {
    fn new(file: File, pos: u64) -> BlockWriter {
        BlockWriter { file, pos, direct: false, can_direct: cfg!(target_os = "linux") }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let aligned = rest.len() / DIRECT_ALIGN * DIRECT_ALIGN;
            let use_direct = self.can_direct
                && aligned > 0
                && self.pos.is_multiple_of(DIRECT_ALIGN as u64)
                && (rest.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
            let use_direct = use_direct && self.set_direct(true);
            if !use_direct {
                self.set_direct(false);
            }
            let part = if use_direct { &rest[..aligned] } else { rest };
            match self.file.write(part) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n as u64;
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Refused for this file or filesystem: plain writes from here.
                Err(e) if use_direct && e.raw_os_error() == Some(libc::EINVAL) => self.can_direct = false,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Turn direct I/O on or off; false if it is not on afterwards.
    #[cfg(target_os = "linux")]
    fn set_direct(&mut self, on: bool) -> bool {
        use std::os::fd::AsRawFd;
        if self.direct == on {
            return on;
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with flags from F_GETFL.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags) == 0
        };
        if ok {
            self.direct = on;
        } else if on {
            self.can_direct = false;
        }
        self.direct
    }

    #[cfg(not(target_os = "linux"))]
    fn set_direct(&mut self, _on: bool) -> bool {
        false
    }

    fn into_file(mut self) -> io::Result<File> {
        if self.set_direct(false) {
            return Err(io::Error::other("cannot turn direct I/O off"));
        }
        Ok(self.file)
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Test hooks: a crash, or a pause, part-way through a download.
        crate::store::failpoint("fetch-write");
        crate::store::pausepoint("fetch-write");
        if self.written >= PIPE_AFTER && matches!(self.state, WriterState::Inline { .. }) {
            self.start_pipe()?;
        }
        let n = match &mut self.state {
            WriterState::Inline { file, hash } => {
                let n = file.write(buf)?;
                hash.update(&buf[..n]);
                n
            }
            WriterState::Piped(pipe) => {
                let b = &mut pipe.block;
                let n = buf.len().min(b.cap - b.len);
                b.mem[b.len..b.len + n].copy_from_slice(&buf[..n]);
                b.len += n;
                if b.len == b.cap {
                    pipe.send()?;
                }
                n
            }
            WriterState::Done => return Err(io::Error::other("the writer thread stopped")),
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            WriterState::Inline { file, .. } => file.flush(),
            _ => Ok(()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Load one HL7 file: memory-mapped, its messages mapped in parallel a
/// chunk at a time and loaded in one transaction with its ledger row. Every
/// message lands in the queue as PROCESSED or ERROR.
fn load_hl7(
    job: &Job,
    store: &mut Store,
    run_id: i64,
    p: &Pending,
    schema: &hl7::Hl7Schema,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> Result<(i64, FileSummary)> {
    let file =
        File::open(&p.taken.local_path).with_context(|| format!("cannot open {}", p.taken.local_path))?;
    // SAFETY: the map is of ferry's own fsynced copy in the state folder,
    // which nothing else writes while it is mapped.
    let map = if p.taken.size == 0 { None } else { Some(unsafe { crate::map_file(&file)? }) };
    let bytes: &[u8] = map.as_deref().unwrap_or_default();
    let settings = MapSettings { schema, provider: job.provider, time_zone: job.time_zone };
    let (mut load, done) = match &p.resume {
        Some(entry) => (store.resume_file(&job.name, entry.id)?, entry.records_done),
        None => (store.begin_file(&job.name, run_id, &p.taken, p.load)?, 0),
    };
    let base = bar.position();
    let mut counts = Counts::default();
    let (mut stale, mut since_checkpoint) = (0u64, 0usize);
    let problems = hl7::read_file(bytes, &settings, |chunk| -> Result<()> {
        for o in &chunk {
            counts.read += 1;
            match o.result {
                Ok(_) => counts.accepted += 1,
                Err(_) => counts.rejected += 1,
            }
            // Messages up to the checkpoint of an interrupted load are in.
            if o.number <= done {
                continue;
            }
            if apply_message(&mut load, o)? == Some(Applied::Stale) {
                stale += 1;
            }
            since_checkpoint += 1;
        }
        if let Some(last) = chunk.last() {
            if since_checkpoint >= batch && (last.end as usize) < bytes.len() {
                load.checkpoint(last.number)?;
                since_checkpoint = 0;
            }
            bar.set_position(base + last.end);
        }
        Ok(())
    })
    .with_context(|| format!("cannot load {}", p.taken.name))?;
    for r in &problems {
        load.reject(r)?;
        match r.severity {
            Severity::Rejected => {
                counts.read += 1;
                counts.rejected += 1;
            }
            Severity::Warning => counts.warnings += 1,
        }
    }
    let file_id = load.finish(&counts)?;
    let detail = if stale > 0 {
        format!("{stale} message(s) older than the stored data were queued but not applied")
    } else {
        String::new()
    };
    let summary = FileSummary {
        side: p.taken.side,
        name: p.taken.name.clone(),
        status: "loaded".into(),
        read: counts.read,
        accepted: counts.accepted,
        rejected: counts.rejected,
        warnings: counts.warnings,
        detail,
    };
    Ok((file_id, summary))
}

/// Queue one message and apply what it says. Returns whether its record
/// was written, or None for a message in ERROR.
fn apply_message(load: &mut FileLoad, o: &MessageOutcome) -> Result<Option<Applied>> {
    let time = o.header.time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let row = MessageRow {
        number: o.number,
        line: o.line,
        control_id: o.header.control_id.as_deref(),
        event: &o.header.event,
        time: time.as_deref(),
        state: "PROCESSED",
        reason: None,
        raw: None,
    };
    let mapped = match &o.result {
        Ok(m) => m,
        Err(failure) => {
            let hl7::Failure { reason, raw } = &**failure;
            load.message(&MessageRow { state: "ERROR", reason: Some(reason), raw: Some(raw), ..row })?;
            let event = if o.header.event.is_empty() { "HL7" } else { o.header.event.as_str() };
            load.reject(&Reject {
                line: o.line,
                severity: Severity::Rejected,
                record_id: o.header.control_id.as_deref().map(String::from),
                column: Some(format!("message {}", o.number)),
                field: None,
                reason: format!("{event} message {}: {reason}", o.number),
            })?;
            return Ok(None);
        }
    };
    let id = load.message(&row)?;
    apply_mapped(load, mapped, o.line, time.as_deref(), id).map(Some)
}

/// Write what a mapped message says. Used by loading and by `ferry queue retry`.
pub(crate) fn apply_mapped(
    load: &mut FileLoad,
    mapped: &Mapped,
    line: u64,
    time: Option<&str>,
    message_id: i64,
) -> Result<Applied> {
    Ok(match mapped {
        Mapped::Patient(pt) => load.patient(pt, line, time, Some(message_id))?,
        Mapped::Appointment(a) => load.appointment(a, time, Some(message_id))?,
        Mapped::Merge { surviving, merged_ehr_id } => {
            let applied = load.patient(surviving, line, time, Some(message_id))?;
            load.merge(
                surviving.ehr_id.as_deref().unwrap_or_default(),
                merged_ehr_id,
                time,
                Some(message_id),
            )?;
            applied
        }
    })
}

/// Archive, delete or keep a source file that is safely in the ledger.
fn finish_source_file(
    transport: &mut dyn Transport,
    store: &Store,
    file_id: i64,
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
        AfterAction::Archive => transport.rename(name, archive_dir),
    });
    match result {
        Ok(()) | Err(TransportError::NotFound { .. }) => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot {} {name} at {}", after.as_str(), transport.describe()));
        }
    }
    let state = match after {
        AfterAction::Keep => "kept",
        AfterAction::Delete => "deleted",
        AfterAction::Archive => "archived",
    };
    store.set_file_state(file_id, state)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A large file goes through the writer thread (and direct I/O where
    /// the filesystem has it): every byte lands in order, and the hash is
    /// the file's, whatever the sizes of the writes.
    #[test]
    fn hashing_writer_keeps_every_byte_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; (PIPE_AFTER as usize) + 3 * PIPE_BUF + 12_345];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Odd write sizes, as the network hands them over; one past a block.
        for sizes in [&[261_120usize, 7, 65_536, 1][..], &[PIPE_BUF + 1][..], &[data.len()][..]] {
            let path = dir.path().join("f.part");
            let mut w = HashingWriter::new(File::create(&path).unwrap());
            let mut at = 0;
            for &n in sizes.iter().cycle() {
                if at == data.len() {
                    break;
                }
                let end = (at + n).min(data.len());
                w.write_all(&data[at..end]).unwrap();
                at = end;
            }
            let (file, sha256) = w.finish().unwrap();
            file.sync_all().unwrap();
            drop(file);
            assert_eq!(sha256, hex(&Sha256::digest(&data)), "{sizes:?}");
            assert!(fs::read(&path).unwrap() == data, "{sizes:?}: contents differ");
        }
    }
}
