//! Push-back: after a run, files from its report folder (such as
//! `id_updates.csv`, the EHR's import of practice MRNs) are sent to the
//! other side through a [`Transport`], whose `put` uploads under a
//! temporary name and renames when whole, so the other side never picks up
//! half a file.
//!
//! This module takes any `&mut dyn Transport`; which transport a
//! destination opens is decided in [`open`], the one place that grows when
//! a destination can be an SFTP or FTP server.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::job::Push;
use crate::transport::{Endpoint, Transport, TransportError, retry};

/// What became of one file of a `[[push]]` entry.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The report file.
    pub file: String,
    /// Its name at the destination.
    pub name: String,
    /// `pushed`, `skipped` (empty) or `failed`.
    pub status: &'static str,
    pub bytes: u64,
    /// Why it was skipped or failed (no patient data: transport errors only).
    pub detail: String,
}

/// The transport a destination names.
pub fn open(to: &Endpoint) -> Result<Box<dyn Transport>> {
    Ok(crate::transport::open(to)?)
}

/// The name a pushed file gets: the entry's template with {stem}, {ext},
/// {stamp}, {job} and {run} filled in.
pub fn dest_name(template: &str, file: &str, job: &str, run_id: i64, stamp: &str) -> String {
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (&file[..i], &file[i..]),
        _ => (file, ""),
    };
    template
        .replace("{stem}", stem)
        .replace("{ext}", ext)
        .replace("{stamp}", stamp)
        .replace("{job}", job)
        .replace("{run}", &run_id.to_string())
}

/// Push one entry's files from `report_dir` through `transport`. A file
/// that fails does not stop the others.
pub fn push(
    entry: &Push,
    report_dir: &Path,
    job: &str,
    run_id: i64,
    stamp: &str,
    transport: &mut dyn Transport,
) -> Vec<Pushed> {
    let mut out = Vec::new();
    for file in &entry.files {
        let name = dest_name(&entry.name, file, job, run_id, stamp);
        let mut done = Pushed {
            file: file.clone(),
            name: name.clone(),
            status: "pushed",
            bytes: 0,
            detail: String::new(),
        };
        match push_one(entry, &report_dir.join(file), &name, transport) {
            Ok(Some(bytes)) => {
                info!(file = %file, to = %transport.describe(), name = %name, bytes, "Pushed file.");
                done.bytes = bytes;
            }
            Ok(None) => {
                info!(file = %file, "Nothing to push: no rows.");
                done.status = "skipped";
                done.detail = "no rows".into();
            }
            Err(e) => {
                let why = format!("{e:#}");
                warn!(file = %file, to = %transport.describe(), error = %why, "Push failed.");
                done.status = "failed";
                done.detail = why;
            }
        }
        out.push(done);
    }
    out
}

/// Returns the bytes sent, or None for an empty CSV that was skipped.
fn push_one(entry: &Push, path: &Path, name: &str, transport: &mut dyn Transport) -> Result<Option<u64>> {
    let size = File::open(path)
        .and_then(|f| f.metadata())
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    if entry.skip_empty && csv_has_no_rows(path)? {
        return Ok(None);
    }
    // A dropped connection is retried with the destination's back-off, as
    // the source's and the outboxes' are.
    let limits = transport.limits();
    let n = retry(&limits, &format!("put {name}"), || {
        let mut f = File::open(path).map_err(|source| TransportError::Permanent {
            what: path.display().to_string(),
            cause: source,
        })?;
        transport.put(name, &mut f, size)
    })
    .with_context(|| format!("cannot put {name} to {}", transport.describe()))?;
    Ok(Some(n))
}

/// A file with at most a header line (a CSV with no rows), or nothing.
fn csv_has_no_rows(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.iter().all(|b| b.is_ascii_whitespace())).count();
    Ok(lines <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fill_the_template() {
        assert_eq!(
            dest_name("{stem}_{stamp}{ext}", "id_updates.csv", "demo", 4, "20260601T0230"),
            "id_updates_20260601T0230.csv"
        );
        assert_eq!(dest_name("{job}-{run}-{stem}", "x", "demo", 4, "s"), "demo-4-x");
    }

    #[test]
    fn pushes_whole_files_and_skips_empty_ones() {
        let reports = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::fs::write(reports.path().join("id_updates.csv"), "\u{feff}PatientID,PracticeMRN\r\nE1,M1\r\n")
            .unwrap();
        std::fs::write(reports.path().join("merges.csv"), "\u{feff}surviving_ehr_id,merged_ehr_id,time\r\n")
            .unwrap();
        let entry = Push {
            files: vec!["id_updates.csv".into(), "merges.csv".into(), "missing.csv".into()],
            name: "{stem}_{stamp}{ext}".into(),
            skip_empty: true,
            to: Endpoint::Local(dest.path().to_path_buf()),
        };
        let mut t = open(&entry.to).unwrap();
        let done = push(&entry, reports.path(), "demo", 1, "S", t.as_mut());
        let status: Vec<&str> = done.iter().map(|p| p.status).collect();
        assert_eq!(status, ["pushed", "skipped", "failed"]);
        let body = std::fs::read_to_string(dest.path().join("id_updates_S.csv")).unwrap();
        assert!(body.contains("E1,M1"));
        assert!(!dest.path().join("merges_S.csv").exists());
    }
}
