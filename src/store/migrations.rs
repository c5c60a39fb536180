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
    // 2: HL7: demographics from ADT, the message queue, appointments, merges,
    // the history of external IDs, and the source time of each patient row
    // (so an older message arriving late never overwrites newer data).
    r#"
    ALTER TABLE patients ADD COLUMN language TEXT;
    ALTER TABLE patients ADD COLUMN race TEXT;
    ALTER TABLE patients ADD COLUMN ethnicity TEXT;
    ALTER TABLE patients ADD COLUMN provider_id TEXT;
    ALTER TABLE patients ADD COLUMN source_time TEXT;

    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY,
        job         TEXT NOT NULL,
        file_id     INTEGER NOT NULL REFERENCES files(id),
        number      INTEGER NOT NULL,
        line        INTEGER NOT NULL,
        control_id  TEXT,
        event       TEXT,
        msg_time    TEXT,
        state       TEXT NOT NULL,
        reason      TEXT,
        raw         BLOB,
        state_at    TEXT NOT NULL
    );
    CREATE INDEX messages_state ON messages(job, state);

    CREATE TABLE appointments (
        id               INTEGER PRIMARY KEY,
        job              TEXT NOT NULL,
        appt_id          TEXT NOT NULL,
        patient_ehr_id   TEXT,
        patient_mrn      TEXT,
        provider_id      TEXT,
        department_id    TEXT,
        appointment_type TEXT,
        start_utc        TEXT,
        duration_minutes INTEGER,
        status           TEXT NOT NULL,
        source_time      TEXT,
        message_id       INTEGER REFERENCES messages(id),
        UNIQUE (job, appt_id)
    );

    CREATE TABLE id_history (
        id          INTEGER PRIMARY KEY,
        job         TEXT NOT NULL,
        side        TEXT NOT NULL,
        own_id      TEXT NOT NULL,
        kind        TEXT NOT NULL,
        old_value   TEXT,
        new_value   TEXT,
        source_time TEXT,
        message_id  INTEGER REFERENCES messages(id)
    );
    CREATE INDEX id_history_own ON id_history(job, side, own_id);

    CREATE TABLE merges (
        id            INTEGER PRIMARY KEY,
        job           TEXT NOT NULL,
        surviving_id  TEXT NOT NULL,
        merged_id     TEXT NOT NULL,
        source_time   TEXT,
        message_id    INTEGER REFERENCES messages(id)
    );
    "#,
    // 3: loads commit in batches; an interrupted one goes on from here.
    r#"
    ALTER TABLE files ADD COLUMN records_done INTEGER NOT NULL DEFAULT 0;
    "#,
    // 4: schedules and history. A pruned run whose ledger rows must stay
    // (they stop a file being loaded twice) is kept as a stub marked
    // pruned; `schedules` remembers when run-due first saw each job, so a
    // new job waits for its first firing instead of running at once.
    r#"
    ALTER TABLE runs ADD COLUMN pruned_at TEXT;
    CREATE TABLE schedules (
        job        TEXT PRIMARY KEY,
        first_seen TEXT NOT NULL
    );
    "#,
    // 5: a deleted message's bytes (patient data) go with its run's
    // history; those of runs pruned before this version go now.
    r#"
    UPDATE messages SET raw = NULL
    WHERE state = 'DELETED' AND raw IS NOT NULL
      AND file_id IN (SELECT f.id FROM files f JOIN runs r ON r.id = f.run_id WHERE r.pruned_at IS NOT NULL);
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
