//! Taking files from a source: list, skip what is still being written or
//! refused by name, look each up in the ledger (finish its after-action, go
//! on with an interrupted load, or fetch it), and queue what is new for
//! loading. The copy to local disk itself is [`super::pull::pull`].

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

use super::pull::{Fetched, pull};
use super::{Origin, Pending, finish_source_file, src_archive};
use crate::job::{AfterAction, Input, InputSchema, Job, Practice, Settle, Source};
use crate::model::Side;
use crate::report::FileSummary;
use crate::store::{LedgerEntry, LoadMode, Store, TakenFile};
use crate::transport::{self, Entry, Transport, retry};

/// How a taken file is to be read and finished.
#[derive(Clone, Copy)]
pub(super) struct Pick<'j> {
    pub(super) side: Side,
    pub(super) schema: &'j InputSchema,
    pub(super) load: LoadMode,
    pub(super) after: AfterAction,
}

impl<'j> Pick<'j> {
    /// A file of the source that `input` reads.
    pub(super) fn input(input: &'j Input, after: AfterAction) -> Pick<'j> {
        Pick { side: input.side, schema: &input.schema, load: input.load, after }
    }

    /// A flat file that replaces its side whole: the last version loaded
    /// is the side's truth, so an earlier version sent again is loaded
    /// again (HL7 is never one: its messages each say when they were).
    fn snapshot(&self) -> bool {
        self.load == LoadMode::Replace && matches!(self.schema, InputSchema::Flat(_))
    }

    /// The practice roster: a full snapshot of its side, left where it is.
    pub(super) fn practice(practice: &'j Practice) -> Pick<'j> {
        Pick {
            side: Side::Practice,
            schema: &practice.schema,
            load: LoadMode::Replace,
            after: AfterAction::Keep,
        }
    }
}

pub(super) fn take_from_source<'j>(
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
    // Local files whose mtime is ahead of this machine's clock.
    let mut clock_ahead = std::collections::HashSet::new();
    for entry in listed {
        if transport::is_in_progress_name(&entry.name) || !src.filter.matches(&entry.name) {
            continue;
        }
        let mut note =
            |status: &str, detail: String| files.push(file_note(Side::Ehr, &entry.name, status, detail));
        if let Err(e) = transport::check_name(&entry.name) {
            warn!(error = %e, source = %transport.describe(), "Refused a file name.");
            // The status says it is refused, and the scope names the file.
            let why = match e {
                transport::TransportError::HostileName { why, .. } => format!("its name {why}"),
                e => e.to_string(),
            };
            note("refused", why);
            continue;
        }
        if let Settle::MinAge(min_age) = src.settle {
            match now.duration_since(entry.mtime) {
                Ok(age) if age < min_age => {
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
                Ok(_) => {}
                Err(ahead) => {
                    warn!(file = %entry.name, ahead_secs = ahead.duration().as_secs(), "A file's mtime is ahead of this machine's clock: taken once two listings agree.");
                    clock_ahead.insert(entry.name.clone());
                }
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
    // mtime. Nor can an mtime ahead of this machine's clock (the writer's
    // clock runs ahead, or it kept a timestamp): such a local file is taken
    // as a remote one is, by a second listing `min_age` later. Files the
    // ledger already has need no second look.
    let recheck = match src.settle {
        Settle::StableFor(wait) => Some(wait),
        Settle::MinAge(wait) if !clock_ahead.is_empty() => Some(wait),
        Settle::MinAge(_) => None,
    };
    let concerned = |e: &Entry| matches!(src.settle, Settle::StableFor(_)) || clock_ahead.contains(&e.name);
    if let Some(wait) = recheck {
        let fresh = candidates.iter().any(|(e, input)| {
            concerned(e)
                && !matches!(
                    known_as_listed(store, &job.name, e, &Pick::input(input, src.after)),
                    Ok(Some(_))
                )
        });
        if fresh {
            std::thread::sleep(wait);
            let again = retry(&limits, "list", || transport.list())
                .with_context(|| format!("cannot list {}", transport.describe()))?;
            let again: std::collections::HashMap<&str, &Entry> =
                again.iter().map(|e| (e.name.as_str(), e)).collect();
            candidates.retain(|(e, input)| match again.get(e.name.as_str()) {
                _ if !concerned(e) => true,
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
            matches!(known_as_listed(store, &job.name, e, &Pick::input(input, src.after)), Ok(None))
        })
        .map(|(e, _)| e.clone())
        .collect();
    transport.prefetch(&ahead);

    let mut new = Vec::new();
    for (entry, input) in candidates {
        let pick = Pick::input(input, src.after);
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
pub(super) fn take_one<'j>(
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

/// A listed file the ledger has loaded before: finish its after-action (a
/// crash may have come between the ledger commit and it) and report it as
/// already loaded.
fn finish_known(
    job: &Job,
    transport: &mut dyn Transport,
    store: &Store,
    known: &LedgerEntry,
    entry: &Entry,
    pick: &Pick,
    files: &mut Vec<FileSummary>,
) -> Result<()> {
    finish_source_file(transport, store, known.id, &known.state, &entry.name, pick.after, src_archive(job))?;
    // A file this report has already (loaded by a run that stopped before
    // its reports, carried to this one) is not listed twice.
    if files.iter().any(|f| f.side == pick.side && f.name == entry.name) {
        return Ok(());
    }
    let why = format!("in the ledger since run {}; not loaded again", known.run_id);
    files.push(file_note(pick.side, &entry.name, "already loaded", why));
    Ok(())
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
    let Some(seen) = known_as_listed(store, &job.name, &entry, &pick)? else {
        return Ok(Some((entry, pick)));
    };
    if seen.state == "loading" {
        resume(store, seen, entry, pick, origin, pending)?;
        return Ok(None);
    }
    finish_known(job, transport, store, &seen, &entry, &pick, files)?;
    Ok(None)
}

/// The ledger's entry for a listed file, known by its name, size and mtime
/// without reading it; None when it must be fetched and hashed first. A
/// file ferry archived or deleted that is back at the source is one of
/// those: the same file sent again, or another of the same size whose
/// sender kept the timestamp (`cp -p`, `rsync -t`). Taken as known, it
/// would be archived or deleted unread.
fn known_as_listed(store: &Store, job: &str, entry: &Entry, pick: &Pick) -> Result<Option<LedgerEntry>> {
    let Some(seen) = store.ledger_seen(job, pick.side, &entry.name, entry.size, &entry.mtime_key())? else {
        return Ok(None);
    };
    if pick.after != AfterAction::Keep && seen.state == pick.after.done_state() {
        return Ok(None);
    }
    // So is a snapshot of an earlier version (its timestamp kept), after a
    // later one: see `take_fetched`.
    if pick.snapshot() && store.loaded_since(job, pick.side, &entry.name, seen.id)? {
        return Ok(None);
    }
    Ok(Some(seen))
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
        Fetched::Refused(why) => {
            warn!(file = %entry.name, "The source refused to give a file; left there.");
            let why = format!("could not be fetched ({why}); left at the source, taken again next run");
            files.push(file_note(pick.side, &entry.name, "failed", why));
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
    let mut reload = None;
    if let Some(found) = store.ledger_find(&job.name, pick.side, &entry.name, entry.size, &sha256)? {
        if found.state == "loading" {
            // The same bytes under a new mtime: go on with the interrupted load.
            fs::remove_file(&local)?;
            return resume(store, found, entry, pick, origin, pending);
        }
        // A snapshot back to an earlier version (a roster export, then a
        // partial one, then the first again) replaces the later one.
        if !(pick.snapshot() && store.loaded_since(&job.name, pick.side, &entry.name, found.id)?) {
            fs::remove_file(&local)?;
            return finish_known(job, transport, store, &found, &entry, &pick, files);
        }
        info!(file = %entry.name, earlier = found.id, "A snapshot back to an earlier version: loading it again.");
        reload = Some(found.id);
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
        reload,
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
        reload: None,
    });
    Ok(())
}

/// Loads of this job that stopped after a checkpoint and that no source
/// listed this run as they were (the file went away, or came again with
/// other bytes under its name): they go on from ferry's own copy, first,
/// as they began before anything taken this run. Nothing is done at the
/// source for them: what it holds now is not the file that was loading.
pub(super) fn take_interrupted<'j>(
    job: &'j Job,
    store: &Store,
    files: &mut Vec<FileSummary>,
    pending: &mut Vec<Pending<'j>>,
) -> Result<()> {
    let resuming: Vec<i64> = pending.iter().filter_map(|p| p.resume.as_ref().map(|r| r.id)).collect();
    let mut orphans = Vec::new();
    for ledger in store.interrupted_loads(&job.name)? {
        if resuming.contains(&ledger.id) {
            continue;
        }
        let taken = store.ledger_taken(ledger.id)?;
        let pick = match (&job.practice, taken.side) {
            (Some(practice), Side::Practice) => Some(Pick::practice(practice)),
            _ => job.input_for(&taken.name).map(|input| Pick::input(input, job.source.after)),
        };
        let Some(pick) = pick else {
            let why = format!(
                "its load stopped after {} record(s) and cannot go on: no [[inputs]] pattern matches \
                 this name any more (ledger row {})",
                ledger.records_done, ledger.id
            );
            files.push(file_note(taken.side, &taken.name, "failed", why));
            continue;
        };
        let mtime = taken
            .mtime
            .parse::<u64>()
            .map_or(SystemTime::UNIX_EPOCH, |n| SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(n));
        let entry = Entry { name: taken.name.clone(), size: taken.size, mtime };
        resume(store, ledger, entry, pick, Origin::Ledger, &mut orphans)?;
    }
    pending.splice(0..0, orphans);
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
