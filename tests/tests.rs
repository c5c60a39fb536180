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

// A real SMTP server (aiosmtpd) for the email tests, started and stopped by PID.
mod smtpd;

// Email: STARTTLS and implicit TLS with AUTH, the encrypted report zip, the outbox, `check`.
mod smtp;

// Schedules and run-due on a clock the tests set: catch-up, no overlap, crashes, daylight saving.
mod schedule;

// History: what `ferry history` lists, and pruning old runs with their files.
mod history;

// Push-back of report files to the job's destination.
mod push;

// report.html rendered by headless Chromium: no errors, no requests, a page with charts.
mod report_html;

// No patient data in any log line (text and JSON, most verbose) or the email body.
mod logs;
// Real servers for the transport tests: OpenSSH's sshd and pyftpdlib on loopback, stopped by PID.
mod servers;

// SFTP: pull with every after-action, logins, host keys, growing files, hostile names, kills, push.
mod sftp;

// FTP and explicit FTPS: pull, after-actions, certificates (CA file, refused, pinned), login, push.
mod ftp;
