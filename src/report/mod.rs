//! The reconciliation reports staff work from: one folder per run, written
//! under a hidden name and renamed when complete, so nobody opens half a
//! report. PHI goes only into these files, never into logs. Also here: the
//! at-a-glance `report.html`, the zip of a run's folder and the email that
//! carries it (`email`, with its outbox).

mod csvfile;
pub mod email;
mod html;
pub mod zip;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

pub use csvfile::writer as csv_writer;

use crate::job::LinkKey;
use crate::model::{Field, PatientRecord, Reject, Severity, Side};
use crate::reconcile::{ConflictKind, Outcome};
use crate::store::{RunRow, RunTotals};

/// What became of one input file in this run.
#[derive(Debug, Clone)]
pub struct FileSummary {
    pub side: Side,
    pub name: String,
    /// loaded, already loaded, failed, waiting, refused, unmatched.
    pub status: String,
    pub read: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub warnings: u64,
    pub detail: String,
}

/// Everything a run's reports are made from.
pub struct RunReport<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub started: &'a str,
    pub files: &'a [FileSummary],
    pub ehr: &'a [PatientRecord],
    pub practice: &'a [PatientRecord],
    pub outcome: &'a Outcome,
    /// (file name, reject) for the files this run loaded.
    pub rejects: &'a [(String, Reject)],
    /// ADT^A40 merges the store holds: (surviving, merged, time).
    pub merges: &'a [(String, String, Option<String>)],
    /// Appointments the store holds, by status.
    pub appointments: &'a [(String, u64)],
    /// This run's counts (its report folder not yet known).
    pub totals: &'a RunTotals,
    /// Earlier runs of the job, newest first (the charts show up to 29).
    pub history: &'a [RunRow],
}

/// The files of a run folder and what each lists, in the order people read them.
pub const OUTPUTS: [(&str, &str); 12] = [
    ("report.html", "this page: the run at a glance"),
    ("summary.csv", "count: records read, accepted, rejected, matched, ..."),
    ("matched.csv", "linked pair: EHR ID, practice MRN, how, score"),
    ("field_differences.csv", "field that differs in a linked pair: both values"),
    ("unmatched_ehr.csv", "EHR record with no practice partner"),
    ("unmatched_practice.csv", "practice record with no EHR partner"),
    ("external_id_conflicts.csv", "broken external-ID rule"),
    ("possible_matches.csv", "pair across the sides for a person to review"),
    ("possible_duplicates.csv", "pair on one side that look like one person"),
    ("id_updates.csv", "practice MRN to write back to the EHR"),
    ("merges.csv", "EHR patient merge (ADT^A40)"),
    ("rejects.csv", "input record that could not be read, or a warning"),
];

/// A store timestamp (UTC) as people read it: local time to the minute.
pub fn local_time(utc: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(utc)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| utc.to_string())
}

/// Write the run's folder under `reports_dir/JOB/` and return its path.
///
/// `claim` is told the folder's name before the folder takes it, so the
/// run can record it first: a run killed after the rename has its folder
/// on record, within the reach of pruning. Folders left `.partial` by a
/// run killed while writing hold patient data and never become reports:
/// they are removed first (the caller holds the job's lock, so no other
/// run is writing one).
pub fn write(
    reports_dir: &Path,
    stamp: &str,
    r: &RunReport,
    claim: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let parent = reports_dir.join(r.job);
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    remove_partial(&parent)?;
    let mut name = stamp.to_string();
    let mut n = 1;
    while parent.join(&name).exists() {
        n += 1;
        name = format!("{stamp}-{n}");
    }
    let partial = parent.join(format!(".{name}.partial"));
    std::fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    write_all(&partial, r).with_context(|| format!("cannot write reports in {}", partial.display()))?;
    let done = parent.join(&name);
    claim(&done)?;
    std::fs::rename(&partial, &done).with_context(|| format!("cannot rename {}", partial.display()))?;
    Ok(done)
}

/// Remove the `.NAME.partial` folders in `parent`: reports of runs killed
/// while they wrote them.
fn remove_partial(parent: &Path) -> Result<()> {
    for entry in std::fs::read_dir(parent).with_context(|| format!("cannot list {}", parent.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", parent.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".partial") && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            let path = entry.path();
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            tracing::warn!(folder = %path.display(), "Removed the unfinished reports of a run killed while writing them.");
        }
    }
    Ok(())
}

/// Every report file; each writer makes its own file, so they run side by
/// side (at 1M x 1M patients, ~5 s one after another).
fn write_all(dir: &Path, r: &RunReport) -> Result<()> {
    type Writer = fn(&Path, &RunReport) -> Result<()>;
    let writers: [Writer; 12] = [
        summary,
        matched,
        differences,
        |d, r| unmatched(d, r, Side::Ehr),
        |d, r| unmatched(d, r, Side::Practice),
        conflicts,
        rejects,
        merges,
        possible_matches,
        possible_duplicates,
        id_updates,
        page,
    ];
    writers.par_iter().try_for_each(|w| w(dir, r))
}

/// The headline numbers, for report.html and the email, in reading order.
pub fn headline(t: &RunTotals, o: &Outcome, ehr: usize, practice: usize) -> Vec<(&'static str, u64)> {
    let by_demographics = o.links.iter().filter(|l| l.key.is_none()).count() as u64;
    vec![
        ("Records loaded", t.records),
        ("Rejected records", t.rejects),
        ("Matched pairs", t.matches),
        ("External ID conflicts", t.conflicts),
        ("Possible matches to review", o.possible_matches.len() as u64),
        ("ID updates for the EHR", o.id_updates.len() as u64),
        ("Files loaded", t.files),
        ("Matched by external ID", t.matches - by_demographics),
        ("Matched by demographics", by_demographics),
        ("Possible duplicates", o.duplicates.len() as u64),
        ("Field differences", o.differences.len() as u64),
        ("Unmatched EHR records", o.unmatched_ehr.len() as u64),
        ("Unmatched practice records", o.unmatched_practice.len() as u64),
        ("EHR patients", ehr as u64),
        ("Practice patients", practice as u64),
    ]
}

fn page(dir: &Path, r: &RunReport) -> Result<()> {
    let mut history: Vec<html::Point> = r.history.iter().take(29).rev().map(html::Point::from_row).collect();
    history.push(html::Point {
        run_id: r.run_id,
        when: r.started.get(..16).unwrap_or(r.started).to_string(),
        outcome: r.totals.outcome.clone(),
        records: r.totals.records,
        rejects: r.totals.rejects,
        matches: r.totals.matches,
        conflicts: r.totals.conflicts,
    });
    let counts = headline(r.totals, r.outcome, r.ehr.len(), r.practice.len());
    let text = html::render(&html::Page {
        job: r.job,
        run_id: r.run_id,
        started: r.started,
        outcome: &r.totals.outcome,
        counts: &counts,
        files: r.files,
        history: &history,
        outputs: &OUTPUTS[1..],
    });
    let path = dir.join("report.html");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn opt<S: std::ops::Deref<Target = str>>(v: &Option<S>) -> &str {
    v.as_deref().unwrap_or("")
}

fn summary(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("summary.csv"))?;
    w.row(["scope", "metric", "value"])?;
    w.row(["run", "job", r.job])?;
    w.row(["run", "run_id", &r.run_id.to_string()])?;
    w.row(["run", "started", r.started])?;
    for f in r.files {
        let scope = format!("file:{}/{}", f.side, f.name);
        w.row([scope.as_str(), "status", &f.status])?;
        for (metric, v) in
            [("read", f.read), ("accepted", f.accepted), ("rejected", f.rejected), ("warnings", f.warnings)]
        {
            w.row([scope.as_str(), metric, &v.to_string()])?;
        }
        if !f.detail.is_empty() {
            w.row([scope.as_str(), "detail", &f.detail])?;
        }
    }
    let o = r.outcome;
    let by_key = |k: Option<LinkKey>| o.links.iter().filter(|l| l.key == k).count();
    let mut counts: Vec<(&str, usize)> = vec![
        ("ehr_patients", r.ehr.len()),
        ("practice_patients", r.practice.len()),
        ("matched", o.links.len()),
        ("matched_by_practice_mrn", by_key(Some(LinkKey::PracticeMrn))),
        ("matched_by_ehr_id", by_key(Some(LinkKey::EhrId))),
        ("matched_by_demographics", by_key(None)),
        ("possible_matches", o.possible_matches.len()),
        ("possible_duplicates", o.duplicates.len()),
        ("id_updates", o.id_updates.len()),
        ("field_differences", o.differences.len()),
        ("cosmetic_differences_ignored", o.cosmetic as usize),
        ("unmatched_ehr", o.unmatched_ehr.len()),
        ("unmatched_practice", o.unmatched_practice.len()),
        ("external_id_conflicts", o.conflicts.len()),
    ];
    for kind in [
        ConflictKind::DuplicateId,
        ConflictKind::LeadingZeroClash,
        ConflictKind::UnknownId,
        ConflictKind::DifferentPerson,
        ConflictKind::KeyDisagreement,
        ConflictKind::ChangedId,
    ] {
        counts.push((kind.as_str(), o.conflicts_of(kind)));
    }
    if let Some(m) = &o.matching {
        counts.push(("candidate_pairs_compared", m.candidates));
        counts.push(("duplicate_pairs_compared", m.duplicate_candidates));
        counts.push(("blocks_skipped_as_too_large", m.skipped_blocks));
        counts.push(("em_iterations", m.em_iterations));
    }
    counts.push(("merges", r.merges.len()));
    for (metric, v) in counts {
        w.row(["reconcile", metric, &v.to_string()])?;
    }
    for (status, n) in r.appointments {
        w.row(["appointments", &status.to_lowercase(), &n.to_string()])?;
    }
    w.finish()
}

fn matched(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("matched.csv"))?;
    w.row([
        "ehr_id",
        "practice_mrn",
        "how",
        "key",
        "confirmed_by",
        "score",
        "match_probability",
        "evidence",
        "ehr_name",
        "practice_name",
        "ehr_birth_date",
        "practice_birth_date",
    ])?;
    for l in &r.outcome.links {
        let (e, p) = (&r.ehr[l.ehr], &r.practice[l.practice]);
        let confirmed: Vec<&str> = l.confirmed_by.iter().map(|k| k.as_str()).collect();
        w.row([
            e.own_id(),
            p.own_id(),
            if l.key.is_some() { "external_id" } else { "demographics" },
            l.key.map_or("", LinkKey::as_str),
            &confirmed.join(" "),
            &format!("{:.2}", l.score),
            &l.probability.map(probability).unwrap_or_default(),
            &l.evidence,
            &e.patient.display_name(),
            &p.patient.display_name(),
            &birth(e),
            &birth(p),
        ])?;
    }
    w.finish()
}

fn birth(r: &PatientRecord) -> compact_str::CompactString {
    r.patient.birth_date.map(crate::model::iso_date).unwrap_or_default()
}

fn differences(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("field_differences.csv"))?;
    w.row(["ehr_id", "practice_mrn", "patient", "field", "ehr_value", "practice_value", "changed_last"])?;
    for d in &r.outcome.differences {
        let (e, p) = (&r.ehr[d.ehr], &r.practice[d.practice]);
        w.row([
            e.own_id(),
            p.own_id(),
            &e.patient.display_name(),
            d.field.as_str(),
            &shown(d.field, &d.ehr_value),
            &shown(d.field, &d.practice_value),
            d.changed_last.map_or("", Side::as_str),
        ])?;
    }
    w.finish()
}

/// A value as staff read it: a race, ethnicity or language code with its
/// name first (`White (2106-3)`, `Spanish (spa)`), where ferry knows it;
/// any other value as it is stored.
fn shown(field: Field, value: &Option<String>) -> Cow<'_, str> {
    let value = opt(value);
    match crate::flatfile::code_name(field, value) {
        Some(name) => Cow::Owned(format!("{name} ({value})")),
        None => Cow::Borrowed(value),
    }
}

fn unmatched(dir: &Path, r: &RunReport, side: Side) -> Result<()> {
    let (file, records, list, own, carried) = match side {
        Side::Ehr => ("unmatched_ehr.csv", r.ehr, &r.outcome.unmatched_ehr, "ehr_id", "carried_practice_mrn"),
        Side::Practice => (
            "unmatched_practice.csv",
            r.practice,
            &r.outcome.unmatched_practice,
            "practice_mrn",
            "carried_ehr_id",
        ),
    };
    let mut w = csv_writer(&dir.join(file))?;
    w.row([own, "last_name", "first_name", "birth_date", carried, "source_file", "line", "reason"])?;
    for u in list {
        let rec = &records[u.index];
        w.row([
            rec.own_id(),
            opt(&rec.patient.last_name),
            opt(&rec.patient.first_name),
            &birth(rec),
            rec.carried_id().unwrap_or(""),
            &rec.source_file,
            &rec.source_line.to_string(),
            &u.reason,
        ])?;
    }
    w.finish()
}

fn conflicts(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("external_id_conflicts.csv"))?;
    w.row(["kind", "key", "side", "id", "records", "detail"])?;
    for c in &r.outcome.conflicts {
        let records: Vec<String> = c
            .records
            .iter()
            .map(|&(side, i)| {
                let rec = match side {
                    Side::Ehr => &r.ehr[i],
                    Side::Practice => &r.practice[i],
                };
                format!("{side}:{}", rec.own_id())
            })
            .collect();
        w.row([c.kind.as_str(), c.key.as_str(), c.side.as_str(), &c.id, &records.join("; "), &c.detail])?;
    }
    w.finish()
}

/// A probability as staff read it: four decimals, never rounded up to 1.
fn probability(p: f64) -> String {
    let text = format!("{p:.4}");
    if text == "1.0000" && p < 1.0 { "0.9999".to_string() } else { text }
}

fn possible_matches(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("possible_matches.csv"))?;
    w.row([
        "ehr_id",
        "practice_mrn",
        "match_probability",
        "match_weight",
        "why_not_linked",
        "evidence",
        "ehr_name",
        "practice_name",
        "ehr_birth_date",
        "practice_birth_date",
    ])?;
    for m in &r.outcome.possible_matches {
        let (e, p) = (&r.ehr[m.ehr], &r.practice[m.practice]);
        w.row([
            e.own_id(),
            p.own_id(),
            &probability(m.probability),
            &format!("{:.1}", m.weight),
            m.reason,
            &m.evidence,
            &e.patient.display_name(),
            &p.patient.display_name(),
            &birth(e),
            &birth(p),
        ])?;
    }
    w.finish()
}

fn possible_duplicates(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("possible_duplicates.csv"))?;
    w.row([
        "side",
        "id_a",
        "id_b",
        "match_probability",
        "evidence",
        "name_a",
        "name_b",
        "birth_date_a",
        "birth_date_b",
    ])?;
    for d in &r.outcome.duplicates {
        let records = match d.side {
            Side::Ehr => r.ehr,
            Side::Practice => r.practice,
        };
        let (a, b) = (&records[d.a], &records[d.b]);
        w.row([
            d.side.as_str(),
            a.own_id(),
            b.own_id(),
            &probability(d.probability),
            &d.evidence,
            &a.patient.display_name(),
            &b.patient.display_name(),
            &birth(a),
            &birth(b),
        ])?;
    }
    w.finish()
}

/// The EHR's patient import: its patient ID and the practice MRN for the
/// custom field, with the same column names as its patient export.
fn id_updates(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("id_updates.csv"))?;
    w.row(["PatientID", "PracticeMRN"])?;
    for &(e, p) in &r.outcome.id_updates {
        w.row([r.ehr[e].own_id(), r.practice[p].own_id()])?;
    }
    w.finish()
}

fn merges(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("merges.csv"))?;
    w.row(["surviving_ehr_id", "merged_ehr_id", "time"])?;
    for (surviving, merged, time) in r.merges {
        w.row([surviving.as_str(), merged.as_str(), time.as_deref().unwrap_or("")])?;
    }
    w.finish()
}

fn rejects(dir: &Path, r: &RunReport) -> Result<()> {
    let mut w = csv_writer(&dir.join("rejects.csv"))?;
    w.row(["file", "line", "severity", "record_id", "column", "field", "reason"])?;
    for (file, rej) in r.rejects {
        w.row([
            file.as_str(),
            &rej.line.to_string(),
            rej.severity.as_str(),
            opt(&rej.record_id),
            opt(&rej.column),
            rej.field.map_or("", |f| f.as_str()),
            &rej.reason,
        ])?;
    }
    // Files that could not be read at all are one line each, so the sheet
    // staff work from shows them too.
    for f in r.files.iter().filter(|f| f.status == "failed") {
        w.row([f.name.as_str(), "", Severity::Rejected.as_str(), "", "", "", &f.detail])?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_shown_with_their_names() {
        let shown = |field: Field, v: &str| shown(field, &Some(v.to_string())).into_owned();
        assert_eq!(shown(Field::Race, "2106-3"), "White (2106-3)");
        assert_eq!(shown(Field::Race, "2054-5"), "Black or African American (2054-5)");
        assert_eq!(shown(Field::Ethnicity, "2135-2"), "Hispanic or Latino (2135-2)");
        assert_eq!(shown(Field::Language, "spa"), "Spanish (spa)");
        assert_eq!(shown(Field::Language, "yue"), "Yue Chinese (yue)");
        // A detailed CDC code, an old value stored before codes, another field.
        assert_eq!(shown(Field::Race, "2108-9"), "2108-9");
        assert_eq!(shown(Field::Language, "english"), "english");
        assert_eq!(shown(Field::City, "2106-3"), "2106-3");
        assert_eq!(super::shown(Field::Language, &None), "");
    }
}
