//! Loading one HL7 file: its messages mapped in parallel a chunk at a time
//! ([`crate::hl7::read_file`]), each queued as PROCESSED or ERROR and
//! applied in file order, with checkpoints so that a load killed part-way
//! goes on from the last one.

use std::fs::File;

use anyhow::{Context, Result};

use super::Pending;
use crate::hl7::{self, MapSettings, Mapped, MessageOutcome};
use crate::job::Job;
use crate::model::{Field, Reject, Severity};
use crate::report::FileSummary;
use crate::store::{Applied, Counts, FileLoad, MessageRow, Older, Store};

/// An HL7 file mapped whole before its load began, across files in
/// parallel (see `run_stages`): its outcomes in file order and its
/// envelope problems, as [`hl7::read_file`] gives them.
pub(super) struct MappedFile {
    outcomes: Vec<MessageOutcome>,
    problems: Vec<Reject>,
}

/// Ferry's own copy of a taken file (`local_path`), memory-mapped. An
/// empty file maps to no bytes.
pub(crate) fn map_copy(local_path: &str) -> Result<memmap2::Mmap> {
    let file = File::open(local_path).with_context(|| format!("cannot open {local_path}"))?;
    // SAFETY: the copy is fsynced in the state folder before it is in the
    // ledger, and nothing writes it after that.
    unsafe { crate::map_file(&file) }.with_context(|| format!("cannot map {local_path}"))
}

fn settings<'s>(job: &Job, schema: &'s hl7::Hl7Schema) -> MapSettings<'s> {
    MapSettings::new(schema, job.provider, job.time_zone)
}

/// Map a whole HL7 file ahead of its load; None when it cannot be read, for
/// the load to read it itself and say why.
pub(super) fn map_whole(job: &Job, p: &Pending, schema: &hl7::Hl7Schema) -> Option<MappedFile> {
    let map = map_copy(&p.taken.local_path).ok()?;
    let mut outcomes = Vec::new();
    let problems = hl7::read_file(&map, &settings(job, schema), |chunk| -> Result<(), ()> {
        outcomes.extend(chunk);
        Ok(())
    })
    .ok()?;
    Some(MappedFile { outcomes, problems })
}

/// Load one HL7 file in one transaction with its ledger row (with
/// checkpoints every `batch` messages or so): mapped ahead, or else
/// memory-mapped and its messages mapped in parallel a chunk at a time as
/// they load. Every message lands in the queue as PROCESSED or ERROR.
#[allow(clippy::too_many_arguments)]
pub(super) fn load_hl7(
    job: &Job,
    store: &mut Store,
    run_id: i64,
    p: &Pending,
    schema: &hl7::Hl7Schema,
    ahead: Option<MappedFile>,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> Result<(i64, FileSummary)> {
    // A resumed load goes on counting from its last checkpoint.
    let (mut load, done, mut older) = match &p.resume {
        Some(entry) => (store.resume_file(&job.name, entry.id, run_id)?, entry.records_done, entry.older),
        None => (store.begin_file(&job.name, run_id, &p.taken, p.load)?, 0, Older::default()),
    };
    let base = bar.position();
    let mut counts = Counts::default();
    let mut since_checkpoint = 0usize;
    let mut sink = |chunk: &[MessageOutcome]| -> Result<()> {
        for o in chunk {
            counts.read += 1;
            match o.result {
                Ok(_) => counts.accepted += 1,
                Err(_) => counts.rejected += 1,
            }
            // Messages up to the checkpoint of an interrupted load are in.
            if o.number <= done {
                continue;
            }
            match apply_message(&mut load, o, schema)? {
                Queued::Loaded(Applied::Stale) => older.stale += 1,
                Queued::Loaded(Applied::InPart) => older.in_part += 1,
                Queued::Ignored => older.ignored += 1,
                Queued::Loaded(Applied::Written) | Queued::Error => {}
            }
            since_checkpoint += 1;
            // Every `batch` messages, wherever that falls in a chunk.
            if since_checkpoint >= batch && o.end < p.taken.size {
                load.older(&older)?;
                load.checkpoint(o.number)?;
                since_checkpoint = 0;
            }
        }
        if let Some(last) = chunk.last() {
            bar.set_position(base + last.end);
        }
        Ok(())
    };
    let problems = match ahead {
        Some(mapped) => {
            mapped.outcomes.chunks(hl7::CHUNK).try_for_each(&mut sink)?;
            mapped.problems
        }
        None => hl7::read_file(&map_copy(&p.taken.local_path)?, &settings(job, schema), |chunk| sink(&chunk))
            .with_context(|| format!("cannot load {}", p.taken.name))?,
    };
    for r in &problems {
        load.reject(r)?;
        if r.severity == Severity::Rejected {
            counts.read += 1;
            counts.rejected += 1;
        }
    }
    // Warnings come from the envelope, from messages (a value dropped, a
    // merged ID brought back), and, for a resumed load, from before the
    // interruption: the file's rows count them all.
    counts.warnings = load.warnings()?;
    load.older(&older)?;
    let file_id = load.finish(&counts, p.after.loaded_state())?;
    let detail = older.detail();
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

/// What became of one message.
enum Queued {
    Error,
    /// An event the schema ignores: PROCESSED, with nothing loaded.
    Ignored,
    Loaded(Applied),
}

/// The reason a message of an event the schema ignores is PROCESSED with
/// nothing loaded, as the queue shows it.
pub(crate) fn ignored_note(schema: &hl7::Hl7Schema, event: &str) -> String {
    format!("not loaded: schema {} ignores {event} ([events] ignore)", schema.name)
}

/// Queue one message and apply what it says.
fn apply_message(load: &mut FileLoad, o: &MessageOutcome, schema: &hl7::Hl7Schema) -> Result<Queued> {
    let time = o.header.time.map(crate::store::timestamp);
    let row = MessageRow {
        number: o.number,
        line: o.line,
        control_id: o.header.control_id.as_deref(),
        event: &o.header.event,
        time: time.as_deref(),
        state: "PROCESSED",
        reason: None,
        raw: None,
        cut: false,
    };
    let mapped = match &o.result {
        Ok(m) => m,
        Err(failure) => {
            let hl7::Failure { reason, raw, cut } = &**failure;
            let error = MessageRow { state: "ERROR", reason: Some(reason), raw: Some(raw), cut: *cut, ..row };
            load.message(&error)?;
            let event = if o.header.event.is_empty() { "HL7" } else { o.header.event.as_str() };
            load.reject(&Reject {
                line: o.line,
                severity: Severity::Rejected,
                record_id: o.header.control_id.as_deref().map(String::from),
                column: Some(format!("message {}", o.number)),
                field: None,
                reason: format!("{event} message {}: {reason}", o.number),
            })?;
            return Ok(Queued::Error);
        }
    };
    let note = matches!(mapped, Mapped::Ignored).then(|| ignored_note(schema, &o.header.event));
    let id = load.message(&MessageRow { reason: note.as_deref(), ..row })?;
    let at = At { line: o.line, number: o.number, event: &o.header.event, control_id: row.control_id };
    Ok(match apply_mapped(load, mapped, &at, time.as_deref(), id)? {
        Some(applied) => Queued::Loaded(applied),
        None => Queued::Ignored,
    })
}

/// Where a message stands, for the warnings about it.
pub(crate) struct At<'a> {
    pub line: u64,
    /// 1-based number in its file.
    pub number: u64,
    pub event: &'a str,
    pub control_id: Option<&'a str>,
}

/// Write what a mapped message says, with a warning for each value it gave
/// that could not be read (the field is loaded empty). Used by loading and
/// by `ferry queue retry`. None for an event the schema ignores, which
/// says nothing to load.
pub(crate) fn apply_mapped(
    load: &mut FileLoad,
    mapped: &Mapped,
    at: &At,
    time: Option<&str>,
    message_id: i64,
) -> Result<Option<Applied>> {
    let (patient, applied) = match mapped {
        Mapped::Ignored => return Ok(None),
        Mapped::Patient(pt) => (Some(pt), load.patient(pt, at.line, time, Some(message_id))?),
        Mapped::Appointment(a) => (None, load.appointment(a, time, Some(message_id))?),
        Mapped::Merge { surviving, merged_ehr_id } => {
            let applied = load.patient(surviving, at.line, time, Some(message_id))?;
            let surviving_id = surviving.ehr_id.as_deref().unwrap_or_default();
            let merged = load.merge(surviving_id, merged_ehr_id, time, Some(message_id))?;
            let mut warn = |what: &str| {
                load.reject(&Reject {
                    line: at.line,
                    severity: Severity::Warning,
                    record_id: at.control_id.map(String::from),
                    column: Some("MRG-1".into()),
                    field: None,
                    reason: format!("{} message {}: {what}", at.event, at.number),
                })
            };
            if merged.elsewhere {
                warn(
                    "an earlier ADT^A40 merged this EHR ID into another patient; merges.csv lists both merges, \
                     which cannot both be right: check with the EHR",
                )?;
            }
            if merged.kept {
                warn(
                    "the merged EHR ID's stored data comes from a message newer than this merge, which arrived \
                     late; the record is kept, as it would have been brought back in time order (merges.csv)",
                )?;
            }
            (Some(surviving), applied)
        }
    };
    if applied == Applied::Stale {
        return Ok(Some(applied));
    }
    // A value read but not loaded as it stood, named by where it came from.
    let mut warn = |field: Option<Field>, from: &str, what: &str| {
        load.reject(&Reject {
            line: at.line,
            severity: Severity::Warning,
            record_id: at.control_id.map(String::from),
            column: Some(from.to_string()),
            field,
            reason: format!("{} message {}: {from} {what}", at.event, at.number),
        })
    };
    let cleaned = "held control characters (bytes that are no text, such as NUL, or a line break inside the \
                   value); loaded without them";
    if let Some(p) = patient {
        for field in p.dropped.iter() {
            let (from, kind) = hl7::dropped_from(field);
            warn(Some(field), from, &format!("is not a valid {kind}; loaded without it"))?;
        }
        for field in p.cleaned.iter() {
            warn(Some(field), hl7::source_of(field), cleaned)?;
        }
    }
    if let Mapped::Appointment(a) = mapped {
        for text in a.cleaned.iter() {
            warn(None, hl7::appointment_source_of(text), cleaned)?;
        }
    }
    Ok(Some(applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_copy_maps_to_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.hl7");
        std::fs::write(&path, b"").unwrap();
        assert!(map_copy(path.to_str().unwrap()).unwrap().is_empty());
        let missing = dir.path().join("missing.hl7");
        let e = map_copy(missing.to_str().unwrap()).unwrap_err();
        assert!(format!("{e:#}").starts_with(&format!("cannot open {}", missing.display())), "{e:#}");
    }
}
