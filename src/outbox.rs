//! Sending: at the end of a run, every file in each `[[outbox]]` folder
//! that matches its globs goes to its destination through
//! [`Transport::put`] (`.NAME.part`, size checked, renamed), under the
//! destination's retry policy; only then is the local file moved to the
//! archive folder (or deleted). A file still being written here (a dot-file,
//! `*.part`, `*.tmp`) is left for the next run.
//!
//! A crash between the remote rename and the local move sends the file
//! again on the next run, under the same name: the destination holds the
//! same bytes, replaced whole, unless its reader took the first copy in
//! between (the one window where a file can arrive twice).

use std::fs::File;

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::job::{AfterAction, Job};
use crate::transport::{self, LocalTransport, Transport, retry};

/// One file an outbox dealt with, for the run's summary.
#[derive(Debug, Clone)]
pub struct Sent {
    pub name: String,
    pub to: String,
    /// sent, refused.
    pub status: &'static str,
    pub bytes: u64,
    pub detail: String,
}

/// Send every outbox of the job. Fails (naming the file and the server)
/// when a file cannot be sent after the retries; files sent before it stay
/// sent.
pub fn send_all(job: &Job) -> Result<Vec<Sent>> {
    let mut out = Vec::new();
    for ob in &job.outbox {
        let mut local = LocalTransport::new(&ob.folder);
        let entries = local.list().with_context(|| format!("cannot list outbox {}", ob.folder.display()))?;
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|e| !transport::is_in_progress_name(&e.name) && ob.filter.matches(&e.name))
            .collect();
        if entries.is_empty() {
            continue;
        }
        let mut dest =
            transport::open(&ob.to).with_context(|| format!("cannot open {}", ob.to.describe()))?;
        let limits = dest.limits();
        for e in entries {
            if let Err(err) = transport::check_name(&e.name) {
                warn!(error = %err, "Refused to send a file name.");
                out.push(Sent {
                    name: e.name.clone(),
                    to: dest.describe(),
                    status: "refused",
                    bytes: 0,
                    detail: err.to_string(),
                });
                continue;
            }
            let path = ob.folder.join(&e.name);
            let bytes = retry(&limits, &format!("send {}", e.name), || {
                let mut f = File::open(&path).map_err(|source| transport::TransportError::Permanent {
                    what: path.display().to_string(),
                    cause: source,
                })?;
                dest.put(&e.name, &mut f, e.size)
            })
            .with_context(|| format!("cannot send {} to {}", path.display(), dest.describe()))?;
            let archive = ob.archive_dir.display().to_string();
            let done = match ob.after {
                AfterAction::Delete => local.remove(&e.name),
                // A name sent before (a daily orders.csv) goes beside the
                // earlier file, tagged with when it was sent: left here, it
                // would be sent again each run.
                _ => match local.rename(&e.name, &archive, &e.name) {
                    Err(transport::TransportError::Exists { .. }) => {
                        let stamp = crate::clock::now().format("%Y%m%dT%H%M%S%.3fZ");
                        local.rename(
                            &e.name,
                            &archive,
                            &transport::tagged_name(&e.name, &format!("sent-{stamp}")),
                        )
                    }
                    done => done,
                },
            };
            done.with_context(|| format!("sent {}, but cannot {} it here", e.name, ob.after.as_str()))?;
            info!(file = %e.name, bytes, to = %dest.describe(), "Sent file.");
            out.push(Sent {
                name: e.name,
                to: dest.describe(),
                status: "sent",
                bytes,
                detail: String::new(),
            });
        }
    }
    Ok(out)
}
