//! ferry's integration tests: each runs the real `ferry` binary in a fresh
//! folder and reads what it wrote.

// Helpers: a scratch project folder, running the binary, reading reports.
mod util;

// The demo job: every planted case in sample-data/ is found; a second run loads nothing.
mod demo;

// Command-line contract: exit statuses, --help, check, parse, status, history.
mod cli;

// The local source: globs, in-progress names, stability, after-actions, the ledger.
mod local_source;

// HL7 feeds: ordering by message time, ID history, the ERROR queue, appointments, the debug view.
mod hl7;

// Backfill: resumable after a kill, nothing loaded twice, counts add up.
mod backfill;

// Real servers for the transport tests: OpenSSH's sshd and pyftpdlib on loopback, stopped by PID.
mod servers;

// SFTP: pull with every after-action, logins, host keys, growing files, hostile names, kills, push.
mod sftp;

// FTP and explicit FTPS: pull, after-actions, certificates (CA file, refused, pinned), login, push.
mod ftp;
