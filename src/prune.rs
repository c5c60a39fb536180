//! History pruning: runs older than the job's `history.keep` go, together
//! with what the job's `history.delete` names: ferry's received copies, the
//! report folder, the source files the run archived.
//!
//! Files go first, then the store forgets the run, so a crash half-way is
//! finished by the next prune (a file already gone counts as deleted). The
//! ledger rows of pruned runs stay: they are what stops a file that is
//! still at the source being loaded again. A file whose load was
//! interrupted (`loading`) keeps its received copy, which the next run
//! needs to go on. Nothing outside the job's own folders is ever deleted.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::job::{Job, PruneWhat, Source};
use crate::store::Store;
use crate::transport::{self, Endpoint, FtpEndpoint, SftpEndpoint, Transport, TransportError};

/// What a prune did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub runs: usize,
    pub files: usize,
    pub folders: usize,
}

/// Prune `job`'s runs that started before `now - keep`; never `current`.
pub fn prune(job: &Job, store: &mut Store, current: i64, now: DateTime<Utc>) -> Result<Pruned> {
    let mut done = Pruned::default();
    let Some(keep) = job.history.keep else { return Ok(done) };
    let Some(cutoff) = chrono::Duration::from_std(keep).ok().and_then(|k| now.checked_sub_signed(k)) else {
        return Ok(done);
    };
    let runs = store.runs_started_before(&job.name, cutoff, current)?;
    if runs.is_empty() {
        return Ok(done);
    }
    let wants = |w: PruneWhat| job.history.delete.contains(&w);
    let mut archive: Option<Box<dyn Transport>> = if wants(PruneWhat::Archived) {
        Some(transport::open(&archive_endpoint(&job.source))?)
    } else {
        None
    };
    let received_root = job.state_dir.join("received").join(&job.name);
    let reports_root = job.reports_dir.join(&job.name);
    for run in runs {
        let files = store.files_of_run(run.id)?;
        if wants(PruneWhat::Received) {
            let dir = received_root.join(format!("run-{}", run.id));
            if files.iter().any(|f| f.state == "loading") {
                for f in files.iter().filter(|f| f.state != "loading") {
                    let p = PathBuf::from(&f.local_path);
                    if p.parent() == Some(dir.as_path()) && remove_file(&p)? {
                        done.files += 1;
                    }
                }
            } else if remove_dir(&dir)? {
                done.folders += 1;
            }
        }
        if wants(PruneWhat::Reports)
            && let Some(report) = run.report_dir.as_deref().map(PathBuf::from)
            && inside(&report, &reports_root)
            && remove_dir(&report)?
        {
            done.folders += 1;
        }
        if let Some(t) = archive.as_mut() {
            for f in files.iter().filter(|f| f.state == "archived") {
                match t.remove(&f.name) {
                    Ok(()) => done.files += 1,
                    Err(TransportError::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot delete {} from {}", f.name, t.describe()));
                    }
                }
            }
        }
        store.prune_run(run.id)?;
        done.runs += 1;
    }
    info!(job = %job.name, runs = done.runs, files = done.files, folders = done.folders, "Pruned old runs.");
    Ok(done)
}

/// `path` is strictly below `root` (no `..` games: both are made absolute
/// and compared component by component).
fn inside(path: &Path, root: &Path) -> bool {
    let (Ok(p), Ok(r)) = (std::path::absolute(path), std::path::absolute(root)) else { return false };
    let clean = |x: &Path| !x.components().any(|c| matches!(c, std::path::Component::ParentDir));
    clean(&p) && clean(&r) && p.starts_with(&r) && p != r
}

fn remove_dir(dir: &Path) -> Result<bool> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            warn!(folder = %dir.display(), error = %e, "Could not delete a pruned run's folder.");
            Err(e).with_context(|| format!("cannot delete {}", dir.display()))
        }
    }
}

fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
    }
}

/// Where the source's archived files are: its archive folder, relative to
/// the source folder unless absolute, on the same server.
fn archive_endpoint(source: &Source) -> Endpoint {
    let remote = |folder: &str| {
        let archive = source.archive_dir.as_str();
        if archive.starts_with('/') {
            archive.to_string()
        } else {
            format!("{}/{archive}", folder.trim_end_matches('/'))
        }
    };
    match &source.endpoint {
        Endpoint::Local(dir) => Endpoint::Local(dir.join(&source.archive_dir)),
        Endpoint::Sftp(e) => Endpoint::Sftp(SftpEndpoint { folder: remote(&e.folder), ..e.clone() }),
        Endpoint::Ftp(e) => Endpoint::Ftp(FtpEndpoint { folder: remote(&e.folder), ..e.clone() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_refuses_escapes() {
        assert!(inside(Path::new("/srv/reports/demo/2026"), Path::new("/srv/reports/demo")));
        assert!(!inside(Path::new("/srv/reports/demo"), Path::new("/srv/reports/demo")));
        assert!(!inside(Path::new("/srv/reports/demo/../other"), Path::new("/srv/reports/demo")));
        assert!(!inside(Path::new("/etc"), Path::new("/srv/reports/demo")));
    }
}
