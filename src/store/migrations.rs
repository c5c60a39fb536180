//! Schema migrations, keyed by `PRAGMA user_version`. Append only: never edit
//! or remove a migration that has shipped; add a new one.

use rusqlite::{Connection, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    // 1: runs, the ledger of files taken, canonical patients, rejects.
    r#"
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        job         TEXT NOT NULL,
        kind        TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        outcome     TEXT NOT NULL DEFAULT 'running',
        files       INTEGER NOT NULL DEFAULT 0,
        records     INTEGER NOT NULL DEFAULT 0,
        rejects     INTEGER NOT NULL DEFAULT 0,
        matches     INTEGER NOT NULL DEFAULT 0,
        conflicts   INTEGER NOT NULL DEFAULT 0,
        report_dir  TEXT,
        error       TEXT
    );
    CREATE INDEX runs_job ON runs(job, id);

    CREATE TABLE files (
        id          INTEGER PRIMARY KEY,
        job         TEXT NOT NULL,
        side        TEXT NOT NULL,
        name        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        mtime       TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        state       TEXT NOT NULL,
        local_path  TEXT NOT NULL,
        schema      TEXT NOT NULL,
        run_id      INTEGER NOT NULL REFERENCES runs(id),
        read        INTEGER NOT NULL,
        accepted    INTEGER NOT NULL,
        rejected    INTEGER NOT NULL,
        warnings    INTEGER NOT NULL,
        loaded_at   TEXT NOT NULL,
        state_at    TEXT NOT NULL,
        UNIQUE (job, side, name, size, sha256)
    );
    CREATE INDEX files_seen ON files(job, side, name, size, mtime);

    CREATE TABLE patients (
        id                 INTEGER PRIMARY KEY,
        job                TEXT NOT NULL,
        side               TEXT NOT NULL,
        own_id             TEXT NOT NULL,
        ehr_id             TEXT,
        practice_mrn       TEXT,
        first_name         TEXT,
        middle_name        TEXT,
        last_name          TEXT,
        birth_date         TEXT,
        sex                TEXT,
        address1           TEXT,
        address2           TEXT,
        city               TEXT,
        state              TEXT,
        zip                TEXT,
        phone_home         TEXT,
        phone_mobile       TEXT,
        email              TEXT,
        insurance_provider TEXT,
        member_id          TEXT,
        group_number       TEXT,
        file_id            INTEGER NOT NULL REFERENCES files(id),
        line               INTEGER NOT NULL,
        UNIQUE (job, side, own_id)
    );

    CREATE TABLE rejects (
        id        INTEGER PRIMARY KEY,
        file_id   INTEGER NOT NULL REFERENCES files(id),
        line      INTEGER NOT NULL,
        severity  TEXT NOT NULL,
        record_id TEXT,
        col       TEXT,
        field     TEXT,
        reason    TEXT NOT NULL
    );
    CREATE INDEX rejects_file ON rejects(file_id);
    "#,
];

/// Bring the database up to the newest version, in one exclusive transaction.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()
}

/// The version this build migrates to.
#[cfg(test)]
pub(super) fn latest() -> usize {
    MIGRATIONS.len()
}
