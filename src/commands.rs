//! What each `ferry` subcommand does, for `main.rs` to call. Messages for
//! people go to stderr; data (parse output, history) goes to stdout.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::clock;
use crate::flatfile::parse_bytes;
use crate::generate::{GenOptions, Noise, generate};
use crate::hl7;
use crate::job::{ConfigError, InputSchema, Job, default_state_dir, jobs_dir, load_schema_file, schema_path};
use crate::model::{Field, Side, shown};
use crate::report::email::{self, Outbox};
use crate::run::{
    JobLock, RunOptions, RunResult, flush_outbox, lock_job, preview_source, run_job, run_job_locked,
};
use crate::store::{Applied, FileLoad, QueueItem, RunRow, Store};
use crate::transport;

/// How a command ended, as the exit status says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done,
    Failed,
    BadConfig,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub struct Logging {
    pub verbose: u8,
    pub quiet: bool,
    pub format: LogFormat,
}

/// Whether stderr carries JSON lines (`--log-format json`): the lines for
/// people (`say!`) are JSON objects too, then.
static JSON_LINES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// A line for people on stderr (a run's summary, an error, what a command
/// did): as it is, or with `--log-format json` a JSON object shaped as the
/// log lines around it, so that a pipeline reading one object a line reads
/// it too. Errors are at level ERROR ([`say_at`]).
macro_rules! say {
    ($($arg:tt)*) => { say_at("INFO", &format!($($arg)*)) };
}

fn say_at(level: &str, text: &str) {
    if JSON_LINES.get() == Some(&true) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let line = serde_json::json!({"timestamp": at, "level": level, "fields": {"message": text}, "target": "ferry"});
        eprintln!("{line}");
    } else {
        eprintln!("{text}");
    }
}

/// Log lines go to stderr. The default level is `warn`, so cron stays quiet
/// unless something needs a person; `FERRY_LOG` (an env-filter) overrides.
pub fn init_logging(l: Logging) {
    let _ = JSON_LINES.set(matches!(l.format, LogFormat::Json));
    let level = match (l.quiet, l.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ferry={level}")))
        // suppaftp traces each command it sends, the password's PASS too:
        // never its trace, whatever FERRY_LOG asks (an env-filter's more
        // specific directive, `suppaftp::sync_ftp=trace`, would win over a
        // directive here).
        .and(filter_fn(|event| !(event.target().starts_with("suppaftp") && *event.level() == Level::TRACE)));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match l.format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_ansi(std::io::stderr().is_terminal()).with_filter(filter))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry().with(layer.json().with_filter(filter)).try_init(),
    };
}

/// Print the error chain once and pick the exit status.
pub fn exit_status(result: Result<Exit>) -> Exit {
    match result {
        Ok(exit) => exit,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ConfigError>() {
                say_at("ERROR", &ce.to_string());
                Exit::BadConfig
            } else {
                say_at("ERROR", &format!("ferry: {e:#}"));
                Exit::Failed
            }
        }
    }
}

pub fn run(job: &str, accept_shrink: bool, quiet: bool) -> Result<Exit> {
    let job = Job::load(job)?;
    let progress = !quiet && std::io::stderr().is_terminal();
    let result = run_job(&job, &RunOptions { progress, accept_shrink, ..RunOptions::default() })?;
    if !quiet {
        let t = &result.totals;
        say!(
            "{}: run {} {}: {} file(s) loaded, {} record(s), {} rejected, {} matched, {} ID conflict(s)",
            job.name,
            result.run_id,
            t.outcome,
            t.files,
            t.records,
            t.rejects,
            t.matches,
            t.conflicts
        );
        for f in result.files.iter().filter(|f| f.status != "loaded") {
            say!("  {} {}: {} {}", f.side, shown(&f.name), f.status, shown(&f.detail));
        }
        for s in &result.sent {
            say!("  sent {}: {} to {} {}", shown(&s.name), s.status, s.to, shown(&s.detail));
        }
        say!("Reports: {}", result.report_dir.display());
        print_delivery(&result);
    }
    Ok(if result.failed { Exit::Failed } else { Exit::Done })
}

/// Push-back, email and pruning, as `run` and `backfill` tell them.
fn print_delivery(result: &RunResult) {
    for p in &result.pushed {
        match p.status {
            "pushed" => say!("Pushed {} as {} ({} bytes)", p.file, p.name, p.bytes),
            "skipped" => say!("Not pushed {}: {}", p.file, p.detail),
            _ => say!("PUSH FAILED {}: {}", p.file, p.detail),
        }
    }
    if let Some(m) = &result.mail {
        if !m.sent.is_empty() {
            say!("Email sent ({} message(s))", m.sent.len());
        }
        if m.waiting > 0 {
            say!(
                "Email NOT sent: {} message(s) wait in the outbox for the next run: {}",
                m.waiting,
                m.error.as_deref().unwrap_or("")
            );
        } else if let Some(e) = &m.error {
            say!("Email problem: {e}");
        }
    }
    if result.pruned.runs > 0 {
        say!(
            "Pruned {} old run(s): {} folder(s), {} file(s) deleted",
            result.pruned.runs,
            result.pruned.folders,
            result.pruned.files
        );
    }
}

/// `ferry run-due`, for `* * * * * ferry run-due` in a crontab: each job in
/// the jobs folder whose schedule fired since it last ran runs once, however
/// many firings were missed. A job whose lock is held (still running) is
/// left alone, quietly; whether it is due is decided only once its lock is
/// held, so two run-dues started together never run a job twice. One job
/// failing never stops the others. Quiet unless something failed, so cron
/// mails only then.
pub fn run_due(quiet: bool) -> Result<Exit> {
    let dir = jobs_dir();
    let files = toml_files(&dir).with_context(|| format!("cannot list jobs folder {}", dir.display()))?;
    if files.is_empty() {
        say!("ferry run-due: no job files in {}; set --jobs-dir or FERRY_JOBS_DIR", dir.display());
        return Ok(Exit::BadConfig);
    }
    let (mut failed, mut bad) = (false, false);
    for job in folder_jobs(&files) {
        let job = match job {
            Ok(j) => j,
            Err(e) => {
                say_at("ERROR", &e.to_string());
                bad = true;
                continue;
            }
        };
        if job.schedule.is_none() && job.email.is_none() {
            continue;
        }
        let lock = match try_lock(&job) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::info!(job = %job.name, "Still running; not started again.");
                continue;
            }
            Err(e) => {
                say_at("ERROR", &format!("ferry: job {}: {e:#}", job.name));
                failed = true;
                continue;
            }
        };
        match due_now(&job) {
            Ok(Some(due)) => {
                tracing::info!(
                    job = %job.name,
                    due = %due.last.with_timezone(&job.time_zone).format("%Y-%m-%d %H:%M %Z"),
                    missed = due.missed,
                    "Schedule fired; running."
                );
                match run_job_locked(&job, &lock, &RunOptions::default()) {
                    Ok(result) => {
                        if result.failed {
                            failed = true;
                            // Cron mails this: say which files, and where the reports are.
                            let failed_files: Vec<&str> = result
                                .files
                                .iter()
                                .filter(|f| f.status == "failed")
                                .map(|f| f.name.as_str())
                                .collect();
                            say_at(
                                "ERROR",
                                &format!(
                                    "ferry: job {} run {} failed: {}{}; reports: {}",
                                    job.name,
                                    result.run_id,
                                    result.totals.error.as_deref().unwrap_or("see its report"),
                                    if failed_files.is_empty() {
                                        String::new()
                                    } else {
                                        format!(" (file(s) not read: {})", failed_files.join(", "))
                                    },
                                    result.report_dir.display()
                                ),
                            );
                        } else {
                            tracing::info!(job = %job.name, run_id = result.run_id, "Scheduled run done.");
                        }
                        if !quiet && let Some(m) = result.mail.as_ref().filter(|m| m.waiting > 0) {
                            say_waiting(&job.name, m, "wait");
                        }
                    }
                    Err(e) => {
                        failed = true;
                        say_at("ERROR", &format!("ferry: job {}: {e:#}", job.name));
                    }
                }
            }
            Ok(None) => {
                if let Some(m) = flush_outbox(&job, &lock)
                    && m.waiting > 0
                    && !quiet
                {
                    say_waiting(&job.name, &m, "still wait");
                }
            }
            Err(e) => {
                failed = true;
                say_at("ERROR", &format!("ferry: job {}: {e:#}", job.name));
            }
        }
    }
    Ok(if failed {
        Exit::Failed
    } else if bad {
        Exit::BadConfig
    } else {
        Exit::Done
    })
}

/// The job's lock, or None when another process holds it.
fn try_lock(job: &Job) -> Result<Option<JobLock>> {
    match lock_job(job) {
        Ok(lock) => Ok(Some(lock)),
        Err(e) if e.downcast_ref::<crate::run::AlreadyRunning>().is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the job's schedule fired since it last ran. Records when
/// run-due first saw the job, which a new job's first firing counts from.
fn due_now(job: &Job) -> Result<Option<crate::schedule::Due>> {
    let Some(schedule) = &job.schedule else { return Ok(None) };
    let store = Store::open(&job.db_path())?;
    let now = clock::now();
    let (since, ahead) = store.schedule_since(&job.name, now)?;
    if ahead {
        clock_behind(job);
    }
    Ok(schedule.due(since, now, job.time_zone))
}

/// Say that `job` has a run recorded after this machine's clock (see
/// [`Store::schedule_since`]).
fn clock_behind(job: &Job) {
    tracing::warn!(
        job = %job.name,
        "A run of the job is recorded after this machine's clock (was the clock wrong then, or is it \
         now?); its schedule goes on from the last run before the clock."
    );
}

/// `ferry backfill JOB`: the full load, in committed batches so that a
/// killed backfill goes on where it stopped, with a progress bar on a
/// terminal, then a full reconciliation and a summary.
pub fn backfill(job: &str, batch: usize, quiet: bool) -> Result<Exit> {
    let job = Job::load(job)?;
    let progress = !quiet && std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let result = run_job(&job, &RunOptions { progress, kind: "backfill", batch, ..RunOptions::default() })?;
    let secs = started.elapsed().as_secs_f64();
    if !quiet {
        let t = &result.totals;
        let r = &result.reconciled;
        let read: u64 = result.files.iter().map(|f| f.read).sum();
        say!("{}: backfill (run {}) {} in {secs:.1}s", job.name, result.run_id, t.outcome);
        say!(
            "  loaded   {} file(s), {read} record(s) read: {} accepted, {} rejected ({:.0} records/s)",
            t.files,
            t.records,
            t.rejects,
            read as f64 / secs.max(1e-3)
        );
        for f in result.files.iter().filter(|f| f.status != "loaded") {
            say!("  {} {}: {} {}", f.side, shown(&f.name), f.status, shown(&f.detail));
        }
        say!("  patients {} EHR, {} practice", r.ehr, r.practice);
        say!(
            "  matched  {} by external ID, {} by demographics ({} candidate pairs compared)",
            r.by_id,
            r.by_demographics,
            r.candidate_pairs
        );
        say!(
            "  review   {} possible match(es), {} possible duplicate(s), {} ID conflict(s)",
            r.possible_matches,
            r.duplicates,
            t.conflicts
        );
        say!("  id updates for the EHR: {}", r.id_updates);
        say!("Reports: {}", result.report_dir.display());
        print_delivery(&result);
    }
    Ok(if result.failed { Exit::Failed } else { Exit::Done })
}

/// `ferry gen`: a labelled population for testing matching.
pub fn generate_population(patients: usize, seed: u64, noise: &str, out: &Path, quiet: bool) -> Result<Exit> {
    let noise = match noise {
        "none" => Noise::none(),
        "default" => Noise::default(),
        "high" => Noise::high(),
        other => {
            say!("ferry gen: --noise {other:?} is not one of none, default, high");
            return Ok(Exit::BadConfig);
        }
    };
    if patients == 0 {
        say!("ferry gen: --patients must be at least 1");
        return Ok(Exit::BadConfig);
    }
    let started = std::time::Instant::now();
    let s = generate(&GenOptions { patients, seed, noise, out_dir: out.to_path_buf() })?;
    if !quiet {
        say!(
            "wrote {} EHR and {} practice records ({} persons, {} on both sides, {} twin pairs, {} namesake \
             pairs, {} duplicates per side) to {} in {:.1}s",
            s.ehr_records,
            s.practice_records,
            s.persons,
            s.true_pairs,
            s.twin_pairs,
            s.namesake_pairs,
            s.duplicates_per_side,
            out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Exit::Done)
}

/// `ferry check [JOB...]`: validate files (exit 2 when one is bad); with
/// jobs, connect to each server a job names and say step by step what
/// works (exit 1 when a server cannot be reached, trusted or used).
pub fn check(jobs: &[String], accept_new_host_key: bool) -> Result<Exit> {
    let mut worst = Exit::Done;
    let mut note = |e: Exit| {
        worst = match (worst, e) {
            (Exit::BadConfig, _) | (_, Exit::BadConfig) => Exit::BadConfig,
            (Exit::Failed, _) | (_, Exit::Failed) => Exit::Failed,
            _ => Exit::Done,
        }
    };
    if jobs.is_empty() {
        let mut any = false;
        for path in toml_files(&jobs_dir().join("../schemas"))? {
            any = true;
            match load_schema_file(&path) {
                Ok(InputSchema::Flat(s)) => {
                    say!("ok    schema {} ({} columns)", s.name, s.columns.len())
                }
                Ok(InputSchema::Hl7(s)) => say!("ok    schema {} (HL7; {})", s.name, s.summary()),
                Err(e) => {
                    note(Exit::BadConfig);
                    say_at("ERROR", &e.to_string());
                }
            }
        }
        let files = toml_files(&jobs_dir())?;
        for (path, job) in files.iter().zip(folder_jobs(&files)) {
            any = true;
            // A file that loads but shares its name is refused here; one
            // that does not load, check_job tells in full.
            if let Err(e) = &job
                && Job::load(&path.display().to_string()).is_ok()
            {
                say_at("ERROR", &e.to_string());
                note(Exit::BadConfig);
                continue;
            }
            note(check_job(&path.display().to_string(), accept_new_host_key));
        }
        if !any {
            say!(
                "ferry: no job files in {} and no schemas beside it; name a job to check",
                jobs_dir().display()
            );
            return Ok(Exit::BadConfig);
        }
    } else {
        for j in jobs {
            note(check_job(j, accept_new_host_key));
        }
    }
    Ok(worst)
}

/// The jobs of the jobs folder's files, in their order. Two files of one
/// name would share one ledger, lock, reports and schedule (a job file
/// copied, its name left as it was): every file of such a name is refused,
/// as ferry cannot tell which of them the operator means.
fn folder_jobs(files: &[PathBuf]) -> Vec<Result<Job, ConfigError>> {
    let mut jobs: Vec<Result<Job, ConfigError>> =
        files.iter().map(|f| Job::load(&f.display().to_string())).collect();
    let mut files_of: std::collections::HashMap<String, Vec<PathBuf>> = Default::default();
    for job in jobs.iter().flatten() {
        files_of.entry(job.name.clone()).or_default().push(job.file.clone());
    }
    for slot in &mut jobs {
        let Ok(job) = slot else { continue };
        let others: Vec<String> =
            files_of[&job.name].iter().filter(|f| **f != job.file).map(|f| f.display().to_string()).collect();
        if !others.is_empty() {
            let why = format!(
                "name: {:?} is also the name of {}: the jobs would share one ledger, lock, reports and \
                 schedule, so none of them runs; give each its own name",
                job.name,
                others.join(", ")
            );
            *slot = Err(ConfigError::new(&job.file, why));
        }
    }
    jobs
}

/// Tell the operator that emails of `job` wait in the outbox, and why.
fn say_waiting(job: &str, m: &crate::run::MailOutcome, verb: &str) {
    say!(
        "ferry: job {job}: {} email(s) {verb} in the outbox: {}",
        m.waiting,
        m.error.as_deref().unwrap_or("")
    );
}

fn check_job(name: &str, accept_new_host_key: bool) -> Exit {
    let job = match Job::load(name) {
        Ok(job) => job,
        Err(e) => {
            say_at("ERROR", &e.to_string());
            return Exit::BadConfig;
        }
    };
    if !job.missing.is_empty() {
        // Each a mistake in the job file, or a share not mounted: a run
        // would fail until it is there.
        say!("{}: {}", job.file.display(), job.missing.join("; "));
        return Exit::BadConfig;
    }
    say!("ok    job {} ({})", job.name, job.file.display());
    say!("      source: {}", job.source.endpoint.describe());
    let mut print = |s: &transport::Step| match &s.result {
        Ok(d) => say!("      ok    {:<9} {d}", s.name),
        Err(d) => say!("      FAIL  {:<9} {d}", s.name),
    };
    if !transport::check(&job.source.endpoint, false, accept_new_host_key, &mut print) {
        return match job.source.endpoint {
            // A missing local folder is a mistake in the job file.
            transport::Endpoint::Local(_) => Exit::BadConfig,
            _ => Exit::Failed,
        };
    }
    match preview_source(&job) {
        Ok(names) => say!("      source lists {} file(s) to consider", names.len()),
        Err(e) => {
            say!("      source: {e:#}");
            return Exit::Failed;
        }
    }
    let mut exit = Exit::Done;
    if let Some(s) = &job.schedule {
        let next = s.next_after(clock::now(), job.time_zone);
        say!(
            "      schedule {:?} ({}): next {}",
            s.as_str(),
            job.time_zone,
            next.map(|t| t.with_timezone(&job.time_zone).format("%Y-%m-%d %H:%M %Z").to_string())
                .unwrap_or_else(|| "never".into())
        );
    }
    for (i, p) in job.push.iter().enumerate() {
        say!("      push[{i}]: {} -> {}", p.files.join(", "), p.to.describe());
        if !transport::check(&p.to, true, accept_new_host_key, &mut print) {
            exit = Exit::Failed;
        }
    }
    for (i, ob) in job.outbox.iter().enumerate() {
        say!("      outbox[{i}]: {} -> {}", ob.folder.display(), ob.to.describe());
        if !transport::check(&ob.to, true, accept_new_host_key, &mut print) {
            exit = Exit::Failed;
        }
    }
    if let Some(settings) = &job.email {
        if let Some(Err(e)) = settings.zip_password.as_ref().map(|s| s.get()) {
            say!("      email: {e}");
            exit = Exit::Failed;
        }
        match email::check(settings) {
            Ok(msg) => say!("      email: {msg}"),
            Err(e) => {
                say!("      email: {e:#}");
                exit = Exit::Failed;
            }
        }
        let waiting = Outbox::new(&job.state_dir, &job.name).waiting().map(|w| w.len()).unwrap_or(0);
        if waiting > 0 {
            say!("      email: {waiting} message(s) wait in the outbox");
        }
    }
    exit
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    Ok(out)
}

/// How `ferry parse` reads a file: as a job would, or by the schema and
/// settings named on the command line.
#[derive(Debug, Default)]
pub struct ParseOptions<'a> {
    /// A schema name (looked up in `schemas/`) or a path to a schema file.
    pub schema: Option<&'a str>,
    pub side: Option<&'a str>,
    pub json: bool,
    /// Read the file as this job does: its input for the file's name, its
    /// time zone and its provider ID.
    pub job: Option<&'a str>,
    /// Read HL7 times without an offset in this zone (before the job's).
    pub time_zone: Option<chrono_tz::Tz>,
}

pub fn parse(file: &Path, o: &ParseOptions) -> Result<Exit> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let job = o.job.map(Job::load).transpose()?;
    // What the job reads the file as: one of its inputs, or its roster.
    let input = match &job {
        Some(job) => {
            let name = file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            let roster = job.practice.as_ref().filter(|p| p.file.file_name() == file.file_name());
            let input = job
                .input_for(&name)
                .map(|i| (&i.schema, i.side))
                .or(roster.map(|p| (&p.schema, Side::Practice)));
            if input.is_none() && o.schema.is_none() {
                let why = format!(
                    "no input of job {} takes a file named {name:?}; name the schema with --schema",
                    job.name
                );
                return Err(ConfigError::new(&job.file, why).into());
            }
            input
        }
        None => None,
    };
    // The named schema, else the job's for this file.
    let schema = match o.schema {
        Some(name) => {
            let path = schema_path(Path::new(""), Path::new("schemas"), name);
            Some(load_schema_file(&path).map_err(|e| ConfigError::new(&path, e))?)
        }
        None => input.map(|(schema, _)| schema.clone()),
    };
    if looks_like_hl7(&bytes) {
        let settings = Hl7View {
            schema,
            time_zone: o.time_zone.or(job.as_ref().map(|j| j.time_zone)),
            provider: job.as_ref().map_or(hl7::ProviderKind::Npi, |j| j.provider),
        };
        return parse_hl7(file, &bytes, settings, o.json);
    }
    let Some(schema) = schema else {
        let why = if bytes.iter().all(u8::is_ascii_whitespace) {
            "the file is empty (nothing but blank lines, if anything): no messages or records to show"
        } else {
            "not HL7: name the flat-file layout with --schema, or the job that reads it with --job"
        };
        return Err(ConfigError::new(file, why).into());
    };
    let schema = match schema {
        InputSchema::Flat(s) => s,
        InputSchema::Hl7(s) => {
            return Err(ConfigError::new(&s.path, "an HL7 schema, but the file is not HL7").into());
        }
    };
    let side = match (o.side.and_then(Side::parse), input) {
        (Some(s), _) => s,
        (None, Some((_, side))) => side,
        (None, None) if schema.check_side(Side::Ehr).is_ok() => Side::Ehr,
        (None, None) => Side::Practice,
    };
    let json = o.json;
    let parsed = parse_bytes(&bytes, &schema, side, chrono::Local::now().date_naive());
    let mut out = std::io::stdout().lock();
    let mut rejects = parsed.rejects.iter().peekable();
    for rec in &parsed.records {
        while let Some(r) = rejects.next_if(|r| r.line <= rec.line) {
            print_reject(&mut out, r, json)?;
        }
        if json {
            let line = serde_json::json!({ "line": rec.line, "record": rec.patient });
            writeln!(out, "{line}")?;
        } else {
            let fields: Vec<String> =
                Field::ALL.iter().filter_map(|f| f.get(&rec.patient).map(|v| format!("{f}={v:?}"))).collect();
            writeln!(out, "line {}: {}", rec.line, fields.join(" "))?;
        }
    }
    for r in rejects {
        print_reject(&mut out, r, json)?;
    }
    if let Some(f) = &parsed.fatal {
        say!("{}: {f}", file.display());
        return Ok(Exit::Failed);
    }
    say!(
        "{}: {} read = {} accepted + {} rejected ({} warnings), as {side} records via schema {}",
        file.display(),
        parsed.read,
        parsed.accepted(),
        parsed.rejected(),
        parsed.warnings(),
        schema.name
    );
    Ok(Exit::Done)
}

/// HL7 starts with MSH, FHS or BHS, or an MLLP start byte, after any BOM and blank lines.
fn looks_like_hl7(bytes: &[u8]) -> bool {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let b = &b[b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len())..];
    b.first() == Some(&0x0B) || [b"MSH", b"FHS", b"BHS"].iter().any(|h| b.starts_with(*h))
}

/// What `--json` maps HL7 messages with: the schema (named, the job's, else
/// `schemas/ehr_hl7.toml`), the time zone and the provider ID.
struct Hl7View {
    schema: Option<InputSchema>,
    time_zone: Option<chrono_tz::Tz>,
    provider: hl7::ProviderKind,
}

/// The debug view of an HL7 file: each message's segments and fields with
/// their components, or (`--json`) the records each message maps to.
fn parse_hl7(file: &Path, bytes: &[u8], view: Hl7View, json: bool) -> Result<Exit> {
    let mut out = std::io::stdout().lock();
    let (mut read, mut errors) = (0u64, 0u64);
    if json {
        let schema = match view.schema {
            Some(s) => s,
            None => {
                let path = schema_path(Path::new(""), Path::new("schemas"), "ehr_hl7");
                load_schema_file(&path).map_err(|e| ConfigError::new(&path, e))?
            }
        };
        let schema = match schema {
            InputSchema::Hl7(s) => s,
            InputSchema::Flat(s) => return Err(ConfigError::new(&s.path, "not an HL7 schema").into()),
        };
        let tz = view.time_zone.unwrap_or_else(|| {
            say!(
                "{}: times without an offset are read as UTC; name the job (--job) or --time-zone to read them as the job does",
                file.display()
            );
            chrono_tz::Tz::UTC
        });
        let settings = hl7::MapSettings::new(&schema, view.provider, tz);
        let problems = hl7::read_file(bytes, &settings, |chunk| -> Result<()> {
            for o in chunk {
                read += 1;
                let mut v = serde_json::json!({
                    "message": o.number, "line": o.line, "event": o.header.event,
                    "control_id": o.header.control_id, "time": o.header.time,
                });
                match &o.result {
                    Ok(m) => v["record"] = serde_json::to_value(m)?,
                    Err(failure) => {
                        errors += 1;
                        v["error"] = failure.reason.clone().into();
                    }
                }
                writeln!(out, "{v}")?;
            }
            Ok(())
        })?;
        for p in &problems {
            print_reject(&mut out, p, true)?;
        }
    } else {
        let batch = hl7::split(bytes);
        for item in &batch.items {
            read += 1;
            let flag = if item.truncated.is_some() { " (truncated)" } else { "" };
            writeln!(out, "message {} (line {}){flag}", item.number, item.line)?;
            match item.parse() {
                Ok(msg) => print_segments(&mut out, &msg)?,
                Err(e) => {
                    errors += 1;
                    writeln!(out, "  ERROR {e}")?;
                }
            }
        }
        for p in &batch.problems {
            writeln!(out, "PROBLEM {p}")?;
        }
    }
    let what = if json { "read or mapped" } else { "read" };
    say!("{}: {read} message(s), {errors} that could not be {what}", file.display());
    Ok(Exit::Done)
}

fn print_segments(out: &mut impl Write, msg: &hl7::Message) -> Result<()> {
    for seg in msg.segments() {
        for n in 1..=seg.field_count() {
            let field = seg.field(n);
            if field.is_empty() {
                continue;
            }
            let reps: Vec<hl7::Field> = field.repetitions().collect();
            for (r, rep) in reps.iter().enumerate() {
                let at = if reps.len() > 1 {
                    format!("{}-{n}[{}]", seg.id(), r + 1)
                } else {
                    format!("{}-{n}", seg.id())
                };
                // MSH-1 and MSH-2 are the delimiters themselves: show them raw.
                let parts: Vec<String> = if seg.id() == "MSH" && n <= 2 {
                    vec![String::from_utf8_lossy(rep.raw()).into_owned()]
                } else {
                    rep.components()
                        .enumerate()
                        .filter(|(_, c)| !c.is_empty())
                        .map(|(i, c)| {
                            // A value the sender cut short is shown as it
                            // stands, marked: what is left of it helps find it.
                            let t = match c.text() {
                                Ok(t) => format!("{t:?}"),
                                Err(hl7::Hl7Error::Truncated { .. }) => {
                                    format!(
                                        "{:?} (cut short by the sender)",
                                        String::from_utf8_lossy(c.raw())
                                    )
                                }
                                Err(e) => format!("{:?}", format!("<{e}>")),
                            };
                            if rep.components().count() > 1 { format!(".{}={t}", i + 1) } else { t }
                        })
                        .collect()
                };
                writeln!(out, "  {at:<10} {}", parts.join(" "))?;
            }
        }
    }
    Ok(())
}

fn print_reject(out: &mut impl Write, r: &crate::model::Reject, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::json!({ "line": r.line, "reject": r }))?;
    } else {
        writeln!(
            out,
            "line {}: {} {}: {}",
            r.line,
            r.severity.as_str().to_uppercase(),
            r.column.as_deref().unwrap_or("-"),
            r.reason
        )?;
    }
    Ok(())
}

/// State folders to look in: each job's, plus the default.
fn known_stores() -> Vec<(PathBuf, Option<String>)> {
    let mut dirs = BTreeSet::new();
    let mut names = Vec::new();
    if let Ok(files) = toml_files(&jobs_dir()) {
        for f in files {
            if let Ok(job) = Job::load(&f.display().to_string()) {
                dirs.insert(job.state_dir.clone());
                names.push((job.state_dir, Some(job.name)));
            }
        }
    }
    let default = default_state_dir();
    if !dirs.contains(&default) {
        names.push((default, None));
    }
    names
}

/// The stores to look in: the job's, or every known one.
fn stores_for(job: Option<&str>) -> Result<Vec<Store>> {
    let dirs: Vec<PathBuf> = match job {
        Some(j) => vec![Job::load(j)?.state_dir],
        None => {
            let mut d: Vec<PathBuf> = known_stores().into_iter().map(|(d, _)| d).collect();
            d.sort();
            d.dedup();
            d
        }
    };
    dirs.iter().map(|d| d.join("ferry.db")).filter(|db| db.exists()).map(|db| Store::open(&db)).collect()
}

/// Message `id` and the store it is in; with a job, only a message of that
/// job: jobs may share a state folder, and with it the numbering of their
/// messages.
fn find_message(job: Option<&str>, id: i64) -> Result<(Store, QueueItem)> {
    let name = job.map(Job::load).transpose()?.map(|j| j.name);
    for store in stores_for(job)? {
        if let Some(item) = store.queue_item(id)?
            && name.as_ref().is_none_or(|n| *n == item.job)
        {
            return Ok((store, item));
        }
    }
    anyhow::bail!("no message {id} in the queue{}", name.map(|j| format!(" of job {j}")).unwrap_or_default())
}

/// The states `ferry queue --state` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueState {
    New,
    Processed,
    Error,
    Deleted,
}

impl QueueState {
    /// In the order a message goes through them (and of their discriminants).
    const ALL: [QueueState; 4] =
        [QueueState::New, QueueState::Processed, QueueState::Error, QueueState::Deleted];

    fn as_str(self) -> &'static str {
        match self {
            QueueState::New => "NEW",
            QueueState::Processed => "PROCESSED",
            QueueState::Error => "ERROR",
            QueueState::Deleted => "DELETED",
        }
    }
}

pub fn queue_list(job: Option<&str>, state: QueueState, json: bool) -> Result<Exit> {
    let name = job.map(Job::load).transpose()?.map(|j| j.name);
    // Opened before the header is printed, so a store that cannot be
    // opened leaves only its error.
    let stores = stores_for(job)?;
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:>6} {:<12} {:<28} {:>6} {:>6} {:<14} {:<10} REASON",
            "ID", "JOB", "FILE", "MSG", "LINE", "CONTROL ID", "EVENT"
        )?;
    }
    let mut print = |q: &QueueItem| -> Result<()> {
        if json {
            writeln!(out, "{}", serde_json::to_string(q)?)?;
        } else {
            writeln!(
                out,
                "{:>6} {:<12} {:<28} {:>6} {:>6} {:<14} {:<10} {}",
                q.id.map_or("-".to_string(), |id| id.to_string()),
                q.job,
                shown(&q.file),
                q.number,
                q.line,
                shown(q.control_id.as_deref().unwrap_or("-")),
                shown(q.event.as_deref().unwrap_or("-")),
                shown(q.reason.as_deref().unwrap_or(""))
            )?;
        }
        Ok(())
    };
    // Each job's count of messages in each state (in `QueueState::ALL` order).
    let mut totals: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
    for store in stores {
        if state != QueueState::New {
            for q in store.queue(name.as_deref(), state.as_str())? {
                print(&q)?;
            }
        }
        for (job, stored, n) in store.queue_counts(name.as_deref())? {
            if let Some(i) = QueueState::ALL.iter().position(|s| s.as_str() == stored) {
                totals.entry(job).or_default()[i] += n;
            }
        }
        for w in store.waiting_files(name.as_deref())? {
            let show = (state == QueueState::New).then_some(&mut print as ShowItem);
            totals.entry(w.job.clone()).or_default()[QueueState::New as usize] += waiting_messages(&w, show)?;
        }
    }
    if !json {
        for (job, counts) in &totals {
            let counts: Vec<String> =
                QueueState::ALL.iter().zip(counts).map(|(s, n)| format!("{n} {}", s.as_str())).collect();
            writeln!(out, "\njob {job}: {}", counts.join(", "))?;
        }
    }
    Ok(Exit::Done)
}

/// Where `ferry queue` prints a message.
type ShowItem<'s> = &'s mut dyn FnMut(&QueueItem) -> Result<()>;

/// A waiting file's NEW messages (see `store::queue`): those after the
/// last one loaded, read from ferry's own copy as the next run will read
/// them, each handed to `show` when given. Returns how many there are.
fn waiting_messages(w: &crate::store::WaitingFile, mut show: Option<ShowItem<'_>>) -> Result<u64> {
    let map = crate::run::map_copy(&w.local_path)
        .with_context(|| format!("cannot read the copy of {} that a run goes on loading", w.file))?;
    // Message times are read in the job's time zone, as the run reads them.
    let time_zone = Job::load(&w.job).ok().map(|j| j.time_zone);
    let reason =
        format!("not loaded yet: this file's load stopped after message {}; the next run goes on", w.loaded);
    let mut n = 0;
    for item in hl7::Splitter::new(&map).filter_map(Result::ok).filter(|i| i.number as u64 > w.loaded) {
        n += 1;
        let Some(show) = show.as_mut() else { continue };
        let header = item.parse().ok().map(|m| hl7::header(&m, time_zone.unwrap_or(chrono_tz::UTC)));
        let header = header.as_ref();
        show(&QueueItem {
            id: None,
            job: w.job.clone(),
            file: w.file.clone(),
            file_id: w.file_id,
            schema: w.schema.clone(),
            number: item.number as u64,
            line: item.line as u64,
            control_id: header.and_then(|h| h.control_id.as_deref()).map(String::from),
            event: header.map(|h| h.event.to_string()).filter(|e| !e.is_empty()),
            time: header.and_then(|h| h.time.filter(|_| time_zone.is_some())).map(crate::store::timestamp),
            state: "NEW".into(),
            reason: Some(reason.clone()),
            raw: None,
            cut: false,
        })?;
    }
    Ok(n)
}

pub fn queue_show(job: Option<&str>, id: i64) -> Result<Exit> {
    let (_, q) = find_message(job, id)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "message {id} of job {}: {} message {} (line {})", q.job, q.file, q.number, q.line)?;
    writeln!(out, "control ID: {}", q.control_id.as_deref().unwrap_or("-"))?;
    writeln!(out, "event:      {}", q.event.as_deref().unwrap_or("-"))?;
    writeln!(out, "state:      {}", q.state)?;
    if let Some(r) = &q.reason {
        writeln!(out, "reason:     {r}")?;
    }
    match q.raw.as_deref().map(hl7::Message::parse) {
        Some(Ok(msg)) => print_segments(&mut out, &msg)?,
        Some(Err(e)) => writeln!(
            out,
            "  (cannot be parsed: {e})\n{}",
            String::from_utf8_lossy(q.raw.as_deref().unwrap_or_default()).replace('\r', "\n")
        )?,
        // The store keeps a message's bytes only while someone may act on it.
        None => writeln!(
            out,
            "  (the message itself is not kept: {})",
            match q.state.as_str() {
                "DELETED" => "deleted, and its run was pruned (history.keep)",
                _ => "it was processed",
            }
        )?,
    }
    Ok(Exit::Done)
}

/// `ferry queue retry`: message `id`, or with none, every message in ERROR.
/// Either holds the job's lock, as a run does, so that a retry and a run
/// never load the same job at once.
pub fn queue_retry(job: Option<&str>, id: Option<i64>) -> Result<Exit> {
    let Some(id) = id else { return queue_retry_all(job) };
    let (mut store, q) = find_message(job, id)?;
    if q.state != "ERROR" {
        anyhow::bail!("message {id} is {}, not in ERROR", q.state);
    }
    if q.cut {
        anyhow::bail!(
            "message {id} may have been cut short, so what it said after the cut is lost: it cannot be \
             loaded. Ask the sender to send it again, then `ferry queue delete {id}`"
        );
    }
    let job = Job::load(job.unwrap_or(&q.job))?;
    let _lock = lock_job(&job)?;
    let schema = hl7_schema(&job, &q.schema)?;
    let mut load = store.reopen_file(&job.name, q.file_id)?;
    let retried = retry_message(&mut load, &job, schema, &q)?;
    load.commit()?;
    Ok(match retried {
        Retried::Loaded(applied) => {
            match applied {
                None => say!(
                    "message {id} processed: schema {} ignores {}; nothing is loaded",
                    q.schema,
                    q.event.as_deref().unwrap_or_default()
                ),
                Some(Applied::Written) => {
                    say!("message {id} processed; the next run's reports include it")
                }
                Some(Applied::InPart) => say!(
                    "message {id} processed; newer messages had said some of its record's fields, which stay \
                     as they are; the rest are set, and the next run's reports include them"
                ),
                Some(Applied::Stale) => say!(
                    "message {id} processed; the store holds newer data for its record, which stays as it is"
                ),
            }
            Exit::Done
        }
        Retried::Error(reason) => {
            say!("message {id} is still in ERROR: {}", shown(&reason));
            Exit::Failed
        }
    })
}

/// What became of a retried message.
enum Retried {
    /// PROCESSED: its record applied as [`Applied`] says, or None for an
    /// event the schema ignores.
    Loaded(Option<Applied>),
    /// Still in ERROR, for this reason (the queue now shows it).
    Error(String),
}

/// The HL7 schema `name` as `job` reads it now.
fn hl7_schema<'j>(job: &'j Job, name: &str) -> Result<&'j hl7::Hl7Schema> {
    job.inputs
        .iter()
        .find_map(|i| match &i.schema {
            InputSchema::Hl7(s) if s.name == name => Some(s),
            _ => None,
        })
        .with_context(|| format!("job {} has no HL7 input with schema {name:?} any more", job.name))
}

/// Map message `q` (in ERROR, not cut short) again with `job`'s `schema`
/// and settings as they are now, and load it into its reopened file, or
/// note why it is still in ERROR. Stored when `load` is committed.
fn retry_message(load: &mut FileLoad, job: &Job, schema: &hl7::Hl7Schema, q: &QueueItem) -> Result<Retried> {
    let id = q.id.context("a NEW message is not in the store yet")?;
    let raw = q.raw.as_deref().unwrap_or_default();
    let settings = hl7::MapSettings::new(schema, job.provider, job.time_zone);
    let mapped = hl7::Message::parse(raw).map_err(|e| e.to_string()).and_then(|msg| {
        let (header, bad_time) = hl7::header_checked(&msg, &settings);
        hl7::with_time(hl7::map(&msg, &settings), bad_time).map(|mapped| (mapped, header))
    });
    let (m, header) = match mapped {
        Ok(mapped) => mapped,
        Err(reason) => {
            load.still_in_error(id, &reason)?;
            return Ok(Retried::Error(reason));
        }
    };
    let time = header.time.map(crate::store::timestamp);
    let event = header.event;
    let at =
        crate::run::At { line: q.line, number: q.number, event: &event, control_id: q.control_id.as_deref() };
    let applied = crate::run::apply_mapped(load, &m, &at, time.as_deref(), id)?;
    let note = applied.is_none().then(|| crate::run::ignored_note(schema, &event));
    load.processed(id, note.as_deref())?;
    Ok(Retried::Loaded(applied))
}

/// How many messages `ferry queue retry --all` reads from the store at a
/// time, and retries in one transaction at most: a queue of any length
/// is retried in bounded memory, at about one commit a thousand messages
/// rather than one a message.
const RETRY_PAGE: usize = 1000;

/// `ferry queue retry --all`: every message in ERROR (of the job, or of
/// every job), oldest first, as `ferry queue retry ID` retries one; a
/// message that may have been cut short stays in ERROR, as do those of a
/// job that cannot be loaded or is running (they are counted, and the
/// other jobs' messages are retried). Fails when any is still in ERROR
/// after it, with how many for each reason.
fn queue_retry_all(job: Option<&str>) -> Result<Exit> {
    // Each job loaded and locked once, or why its messages are left. The
    // job named may be a path: its messages are read as that file says.
    let mut jobs: std::collections::HashMap<String, Result<(Job, JobLock), String>> = Default::default();
    let lock = |job: Job| lock_job(&job).map(|lock| (job, lock)).map_err(|e| format!("{e:#}"));
    let name = match job.map(Job::load).transpose()? {
        Some(given) => {
            let name = given.name.clone();
            jobs.insert(name.clone(), lock(given));
            Some(name)
        }
        None => None,
    };
    let (mut processed, mut ignored, mut cut) = (0u64, 0u64, 0u64);
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    let mut left: std::collections::BTreeMap<String, u64> = Default::default();
    for mut store in stores_for(job)? {
        let mut after = 0;
        loop {
            let page = store.errors_after(name.as_deref(), after, RETRY_PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.id.context("a message in ERROR is in the store")?;
            // Each run of messages from one file in one transaction.
            for group in page.chunk_by(|a, b| a.job == b.job && a.file_id == b.file_id) {
                let first = &group[0];
                let ready = jobs
                    .entry(first.job.clone())
                    .or_insert_with(|| Job::load(&first.job).map_err(|e| format!("{e:#}")).and_then(lock));
                let schema = match &*ready {
                    Ok((job, _)) => {
                        hl7_schema(job, &first.schema).map(|s| (job, s)).map_err(|e| e.to_string())
                    }
                    Err(why) => Err(why.clone()),
                };
                let (job, schema) = match schema {
                    Ok(ready) => ready,
                    Err(why) => {
                        *left.entry(why).or_default() += group.len() as u64;
                        continue;
                    }
                };
                let mut load = store.reopen_file(&job.name, first.file_id)?;
                for q in group {
                    if q.cut {
                        cut += 1;
                        continue;
                    }
                    match retry_message(&mut load, job, schema, q)? {
                        Retried::Loaded(None) => ignored += 1,
                        Retried::Loaded(Some(_)) => processed += 1,
                        Retried::Error(reason) => *errors.entry(reason).or_default() += 1,
                    }
                }
                load.commit()?;
            }
        }
    }
    let still: u64 = errors.values().sum();
    say!(
        "{} message(s) in ERROR retried: {processed} processed, {ignored} of events the schema ignores \
         processed with nothing loaded, {still} still in ERROR",
        processed + ignored + still
    );
    let mut by_count: Vec<(&String, &u64)> = errors.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    for (reason, n) in by_count {
        say!("  {n} x {}", shown(reason));
    }
    if cut > 0 {
        say!(
            "{cut} message(s) that may have been cut short stay in ERROR: ask the sender to send them again, \
             then `ferry queue delete ID`"
        );
    }
    for (why, n) in &left {
        say!("{n} message(s) not retried, left in ERROR: {why}");
    }
    let not_retried: u64 = left.values().sum();
    Ok(if still + cut + not_retried == 0 { Exit::Done } else { Exit::Failed })
}

pub fn queue_delete(job: Option<&str>, id: i64) -> Result<Exit> {
    let (store, _) = find_message(job, id)?;
    store.delete_message(id)?;
    say!("message {id} deleted");
    Ok(Exit::Done)
}

/// One line of `ferry status`.
struct StatusRow {
    job: String,
    /// The job's time zone, in which its times are shown; None for a job
    /// without a job file (this machine's zone).
    zone: Option<chrono_tz::Tz>,
    last: Option<RunRow>,
    next: String,
    mail: usize,
}

pub fn status() -> Result<Exit> {
    let mut seen = BTreeSet::new();
    let mut rows: Vec<StatusRow> = Vec::new();
    let mut bad = Vec::new();
    let files = toml_files(&jobs_dir()).unwrap_or_default();
    let has_jobs = !files.is_empty();
    for job in folder_jobs(&files) {
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                bad.push(e);
                continue;
            }
        };
        if !seen.insert(job.name.clone()) {
            continue;
        }
        let db = job.db_path();
        let store = if db.exists() { Some(Store::open(&db)?) } else { None };
        let last = match &store {
            Some(s) => s.runs(Some(&job.name), 1)?.into_iter().next().map(|r| as_now(&job.state_dir, r)),
            None => None,
        };
        let next = match &job.schedule {
            None => "not scheduled".to_string(),
            Some(schedule) => {
                let now = clock::now();
                let since = match &store {
                    Some(s) => s.schedule_since_peek(&job.name, now)?.map(|(t, ahead)| {
                        if ahead {
                            clock_behind(&job);
                        }
                        t
                    }),
                    None => None,
                };
                let fmt = |t: chrono::DateTime<chrono::Utc>| {
                    t.with_timezone(&job.time_zone).format("%Y-%m-%d %H:%M %Z").to_string()
                };
                match since.map(|s| schedule.next_after(s, job.time_zone)) {
                    Some(Some(t)) if t <= now => format!("now (due since {})", fmt(t)),
                    Some(Some(t)) => fmt(t),
                    Some(None) => "never".to_string(),
                    None => match schedule.next_after(now, job.time_zone) {
                        Some(t) => format!("{} (first)", fmt(t)),
                        None => "never".to_string(),
                    },
                }
            }
        };
        let mail = Outbox::new(&job.state_dir, &job.name).waiting().map(|w| w.len()).unwrap_or(0);
        rows.push(StatusRow { job: job.name, zone: Some(job.time_zone), last, next, mail });
    }
    // Jobs that ran but have no job file here any more.
    for (dir, _) in known_stores() {
        let db = dir.join("ferry.db");
        if !db.exists() {
            continue;
        }
        for r in Store::open(&db)?.runs(None, 10_000)? {
            if seen.insert(r.job.clone()) {
                rows.push(StatusRow {
                    job: r.job.clone(),
                    zone: None,
                    last: Some(as_now(&dir, r)),
                    next: "no job file".into(),
                    mail: 0,
                });
            }
        }
    }
    // Times in each job's zone, as its schedule is read; the columns as
    // wide as what they hold.
    let last: Vec<String> = rows
        .iter()
        .map(|row| match &row.last {
            Some(r) => run_time(&r.started_at, row.zone),
            None => "never".into(),
        })
        .collect();
    let width =
        |head: &str, cells: &mut dyn Iterator<Item = usize>| cells.chain([head.len()]).max().unwrap_or(0);
    let (wj, wl, wn) = (
        width("JOB", &mut rows.iter().map(|r| r.job.len())),
        width("LAST RUN", &mut last.iter().map(String::len)),
        width("NEXT DUE", &mut rows.iter().map(|r| r.next.len())),
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<wj$} {:<wl$} {:<10} {:>6} {:>8} {:>8} {:>8} {:>9}  {:<wn$}  MAIL",
        "JOB", "LAST RUN", "OUTCOME", "FILES", "RECORDS", "REJECTS", "MATCHES", "CONFLICTS", "NEXT DUE"
    )?;
    for (row, last) in rows.into_iter().zip(last) {
        let mail = if row.mail > 0 { format!("{} waiting", row.mail) } else { "-".into() };
        match row.last {
            Some(r) => writeln!(
                out,
                "{:<wj$} {:<wl$} {:<10} {:>6} {:>8} {:>8} {:>8} {:>9}  {:<wn$}  {mail}",
                row.job, last, r.outcome, r.files, r.records, r.rejects, r.matches, r.conflicts, row.next
            )?,
            None => writeln!(
                out,
                "{:<wj$} {:<wl$} {:<10} {:>6} {:>8} {:>8} {:>8} {:>9}  {:<wn$}  {mail}",
                row.job, last, "-", "", "", "", "", "", row.next
            )?,
        }
    }
    // A job file that cannot be read never runs: say so where people look.
    for e in &bad {
        say_at("ERROR", &e.to_string());
    }
    if !bad.is_empty() {
        say_at(
            "ERROR",
            &format!("ferry: {} job file(s) cannot be read, and their jobs do not run: see above", bad.len()),
        );
        return Ok(Exit::BadConfig);
    }
    // A jobs folder mistyped, or status run from elsewhere: every job
    // above shows "no job file", and run-due, which looks there, runs none.
    if !has_jobs {
        say_at(
            "ERROR",
            &format!(
                "ferry status: no job files in {}; set --jobs-dir or FERRY_JOBS_DIR",
                jobs_dir().display()
            ),
        );
        return Ok(Exit::BadConfig);
    }
    Ok(Exit::Done)
}

/// A run as it stands now: one the store has as `running` whose job's lock
/// nobody holds was stopped (killed, a power cut) and is shown `abandoned`,
/// as the job's next run will mark it.
fn as_now(state_dir: &Path, mut run: RunRow) -> RunRow {
    if run.outcome == "running" && crate::run::lock_held(state_dir, &run.job) == Some(false) {
        run.outcome = "abandoned".into();
    }
    run
}

pub fn history(job: Option<&str>, limit: usize, json: bool) -> Result<Exit> {
    let mut unread = None;
    let (dirs, name) = match job {
        Some(j) => match Job::load(j) {
            Ok(job) => (vec![job.state_dir.clone()], Some(job.name)),
            // A job whose file is gone (retired) or broken still has its
            // history: the stores ferry knows are read for a bare name.
            Err(e) if Path::new(j).components().count() == 1 && Path::new(j).extension().is_none() => {
                unread = Some(e);
                let mut d: Vec<PathBuf> = known_stores().into_iter().map(|(d, _)| d).collect();
                d.sort();
                d.dedup();
                (d, Some(j.to_string()))
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            let mut d: Vec<PathBuf> = known_stores().into_iter().map(|(d, _)| d).collect();
            d.sort();
            d.dedup();
            (d, None)
        }
    };
    let mut runs = Vec::new();
    for dir in dirs {
        let db = dir.join("ferry.db");
        if db.exists() {
            runs.extend(Store::open(&db)?.runs(name.as_deref(), limit)?.into_iter().map(|r| as_now(&dir, r)));
        }
    }
    if let Some(e) = unread {
        if runs.is_empty() {
            return Err(e.into());
        }
        say!("ferry: {e}; the history of job {} as the store has it:", job.unwrap_or_default());
    }
    runs.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    runs.truncate(limit);
    let mut out = std::io::stdout().lock();
    if json {
        for r in &runs {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(Exit::Done);
    }
    let wj = runs.iter().map(|r| r.job.len()).chain([3]).max().unwrap_or(3);
    writeln!(
        out,
        "{:>5} {:<wj$} {:<25} {:<25} {:<10} {:>6} {:>8} {:>8} {:>8} {:>9}",
        "RUN", "JOB", "STARTED", "ENDED", "OUTCOME", "FILES", "RECORDS", "REJECTS", "MATCHES", "CONFLICTS"
    )?;
    for r in &runs {
        writeln!(
            out,
            "{:>5} {:<wj$} {:<25} {:<25} {:<10} {:>6} {:>8} {:>8} {:>8} {:>9}",
            r.id,
            r.job,
            run_time(&r.started_at, None),
            r.finished_at.as_deref().map(|t| run_time(t, None)).unwrap_or_default(),
            r.outcome,
            r.files,
            r.records,
            r.rejects,
            r.matches,
            r.conflicts
        )?;
        if let Some(e) = &r.error {
            writeln!(out, "      {e}")?;
        }
    }
    Ok(Exit::Done)
}

/// A stored time ("2026-11-21T07:30:00.123Z") for people, with its zone:
/// in `zone` ("2026-11-21 02:30 EST"), else in this machine's, with its
/// offset ("2026-11-21 07:30:00 +0000").
fn run_time(utc: &str, zone: Option<chrono_tz::Tz>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(utc) else { return utc.to_string() };
    match zone {
        Some(tz) => t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        None => t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S %z").to_string(),
    }
}
