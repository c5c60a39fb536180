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
    // 6: cheaper loads (every HL7 message wrote two index entries whose
    // keys began with values equal across the whole job).
    // - The queue's index holds only the messages a person looks for: a
    //   PROCESSED message, nearly every one, is in no index, and a list of
    //   ERROR messages reads the index instead of the table. The old index
    //   led with the job, so the list never used it.
    // - The unique keys of patients and appointments lead with their own
    //   ID, which tells rows apart at its first value. The tables are
    //   rebuilt with them, as SQLite cannot change a table's constraint in
    //   place.
    r#"
    DROP INDEX IF EXISTS messages_state;
    CREATE INDEX IF NOT EXISTS messages_queue ON messages(state, job) WHERE state <> 'PROCESSED';

    CREATE TABLE patients_by_own_id (
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
        language           TEXT,
        race               TEXT,
        ethnicity          TEXT,
        provider_id        TEXT,
        source_time        TEXT,
        UNIQUE (own_id, job, side)
    );
    INSERT INTO patients_by_own_id (id, job, side, own_id, ehr_id, practice_mrn, first_name, middle_name,
        last_name, birth_date, sex, address1, address2, city, state, zip, phone_home, phone_mobile, email,
        insurance_provider, member_id, group_number, file_id, line, language, race, ethnicity, provider_id,
        source_time)
    SELECT id, job, side, own_id, ehr_id, practice_mrn, first_name, middle_name,
        last_name, birth_date, sex, address1, address2, city, state, zip, phone_home, phone_mobile, email,
        insurance_provider, member_id, group_number, file_id, line, language, race, ethnicity, provider_id,
        source_time
    FROM patients;
    DROP TABLE patients;
    ALTER TABLE patients_by_own_id RENAME TO patients;

    CREATE TABLE appointments_by_own_id (
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
        UNIQUE (appt_id, job)
    );
    INSERT INTO appointments_by_own_id (id, job, appt_id, patient_ehr_id, patient_mrn, provider_id,
        department_id, appointment_type, start_utc, duration_minutes, status, source_time, message_id)
    SELECT id, job, appt_id, patient_ehr_id, patient_mrn, provider_id,
        department_id, appointment_type, start_utc, duration_minutes, status, source_time, message_id
    FROM appointments;
    DROP TABLE appointments;
    ALTER TABLE appointments_by_own_id RENAME TO appointments;
    "#,
    // 7: message times keep their fraction of a second, so two updates in
    // one second are ordered by their own times. They are written as the
    // store's other times are (milliseconds always), and those written to
    // the second before are brought to that form: the newer-than checks
    // compare the text, and `...:05Z` sorts after `...:05.500Z`.
    r#"
    UPDATE patients SET source_time = substr(source_time, 1, 19) || '.000Z' WHERE source_time GLOB '*:[0-9][0-9]Z';
    UPDATE appointments SET source_time = substr(source_time, 1, 19) || '.000Z'
        WHERE source_time GLOB '*:[0-9][0-9]Z';
    UPDATE id_history SET source_time = substr(source_time, 1, 19) || '.000Z' WHERE source_time GLOB '*:[0-9][0-9]Z';
    UPDATE merges SET source_time = substr(source_time, 1, 19) || '.000Z' WHERE source_time GLOB '*:[0-9][0-9]Z';
    UPDATE messages SET msg_time = substr(msg_time, 1, 19) || '.000Z' WHERE msg_time GLOB '*:[0-9][0-9]Z';
    "#,
    // 8: a message that may have been cut short is marked, as its bytes end
    // at the cut and it must never be retried into the store. Those queued
    // before are known by their reason, which this ferry wrote.
    r#"
    ALTER TABLE messages ADD COLUMN cut INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET cut = 1 WHERE state <> 'PROCESSED' AND reason LIKE 'truncated: %';
    "#,
    // 9: when each field of a patient was last said, where that is not the
    // row's time, so that a late message still sets what no newer message
    // said (see `SaidTimes`). NULL: every field is as new as the row.
    r#"
    ALTER TABLE patients ADD COLUMN said_times TEXT;
    "#,
    // 10: the same for appointments: a late SIU message still sets what no
    // newer message about the appointment said.
    r#"
    ALTER TABLE appointments ADD COLUMN said_times TEXT;
    "#,
    // 11: an ADT^A40 finds the merged ID's appointments by their patient
    // (`FileLoad::merge`), without reading the whole table.
    r#"
    CREATE INDEX appointments_by_patient ON appointments(patient_ehr_id, job);
    "#,
    // 12: an HL7 file's messages that changed less than they said (older
    // than the stored data, applied in part, of ignored events), counted
    // at each checkpoint: the file's detail in the reports holds also when
    // its load was resumed, or reported by a later run.
    r#"
    ALTER TABLE files ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN in_part INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN ignored INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// Bring the database up to the newest version, in one exclusive transaction.
/// A store written by a newer ferry is refused: this one would read and
/// write it by keys and indexes it no longer has.
pub(super) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Bring the database up to `target` (tests build older stores with it).
pub(super) fn migrate_to(conn: &mut Connection, target: usize) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version as usize > MIGRATIONS.len() {
        anyhow::bail!(
            "the store is at version {version}, newer than this ferry knows (version {}): it was written by \
             a newer ferry, which is the one to run with it",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    Ok(tx.commit()?)
}

/// The version this build migrates to.
#[cfg(test)]
pub(super) fn latest() -> usize {
    MIGRATIONS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 ORDER BY name")
            .unwrap();
        stmt.query_map([table], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    /// A store at `version` with a run and a file (ID 1 each) of job `j`.
    fn with_a_file(version: usize) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, version).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, job, kind, started_at) VALUES (1, 'j', 'run', 't');
             INSERT INTO files (id, job, side, name, size, mtime, sha256, state, local_path, schema, run_id,
                                read, accepted, rejected, warnings, loaded_at, state_at)
             VALUES (1, 'j', 'ehr', 'a.hl7', 1, '1', 'h', 'loaded', '/x', 's', 1, 2, 1, 1, 0, 't', 't');",
        )
        .unwrap();
        conn
    }

    #[test]
    fn a_store_from_a_newer_ferry_is_refused_untouched() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let newer = MIGRATIONS.len() as i64 + 1;
        conn.pragma_update(None, "user_version", newer).unwrap();
        let e = migrate(&mut conn).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("the store is at version {newer}, newer than this ferry knows")),
            "{e}"
        );
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, newer);
    }

    #[test]
    fn version_6_keeps_every_row_and_finds_patients_appointments_and_errors_by_their_new_keys() {
        let mut conn = with_a_file(5);
        conn.execute_batch(
            "INSERT INTO patients (id, job, side, own_id, last_name, file_id, line, race, source_time)
             VALUES (7, 'j', 'ehr', 'E1', 'Smith', 1, 3, '2106-3', '2026-01-01T00:00:00Z'),
                    (8, 'j', 'practice', 'E1', 'Smyth', 1, 4, NULL, NULL);
             INSERT INTO messages (job, file_id, number, line, state, state_at)
             VALUES ('j', 1, 1, 1, 'PROCESSED', 't'), ('j', 1, 2, 5, 'ERROR', 't');
             INSERT INTO appointments (id, job, appt_id, patient_ehr_id, start_utc, duration_minutes, status,
                                       source_time, message_id)
             VALUES (3, 'j', 'A1', 'E1', '2026-02-03T14:00:00Z', 30, 'BOOKED', '2026-01-02T00:00:00Z', 1);",
        )
        .unwrap();
        assert_eq!(indexes(&conn, "messages"), ["messages_state"]);

        migrate_to(&mut conn, 6).unwrap();
        let rows: Vec<String> = conn
            .prepare(
                "SELECT concat_ws(' ', id, side, last_name, ifnull(race, '-'), ifnull(source_time, '-'))
                 FROM patients ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, ["7 ehr Smith 2106-3 2026-01-01T00:00:00Z", "8 practice Smyth - -"]);
        assert_eq!(indexes(&conn, "messages"), ["messages_queue"]);
        // The key still allows one row per job, side and own ID.
        let again = "INSERT INTO patients (job, side, own_id, file_id, line) VALUES ('j', 'ehr', 'E1', 1, 9)";
        assert!(conn.execute(again, []).is_err());
        let patient = plan(
            &conn,
            "SELECT practice_mrn FROM patients WHERE job = 'j' AND side = 'ehr' AND own_id = 'E1'",
        );
        assert!(
            patient.contains("USING INDEX sqlite_autoindex_patients_1 (own_id=? AND job=? AND side=?)"),
            "{patient}"
        );
        let appointment: String = conn
            .query_row(
                "SELECT concat_ws(' ', id, appt_id, patient_ehr_id, start_utc, duration_minutes, status,
                                  source_time, message_id) FROM appointments",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(appointment, "3 A1 E1 2026-02-03T14:00:00Z 30 BOOKED 2026-01-02T00:00:00Z 1");
        let again = "INSERT INTO appointments (job, appt_id, status) VALUES ('j', 'A1', 'CANCELLED')";
        assert!(conn.execute(again, []).is_err());
        let appointment =
            plan(&conn, "SELECT source_time FROM appointments WHERE job = 'j' AND appt_id = 'A1'");
        assert!(
            appointment.contains("USING INDEX sqlite_autoindex_appointments_1 (appt_id=? AND job=?)"),
            "{appointment}"
        );
        let errors =
            plan(&conn, "SELECT m.line FROM messages m WHERE m.state = 'ERROR' AND m.state <> 'PROCESSED'");
        assert!(errors.contains("USING INDEX messages_queue"), "{errors}");
        let count: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages m WHERE m.state = 'ERROR' AND m.state <> 'PROCESSED'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn version_7_writes_message_times_to_the_millisecond_so_they_still_sort() {
        let mut conn = with_a_file(6);
        conn.execute_batch(
            "INSERT INTO patients (job, side, own_id, file_id, line, source_time)
             VALUES ('j', 'ehr', 'E1', 1, 3, '2026-01-01T10:00:05Z'), ('j', 'ehr', 'E2', 1, 4, NULL),
                    ('j', 'practice', 'M1', 1, 5, '2026-01-01T10:00:05.250Z');
             INSERT INTO messages (id, job, file_id, number, line, msg_time, state, state_at)
             VALUES (1, 'j', 1, 1, 1, '2026-01-01T10:00:05Z', 'ERROR', 't');
             INSERT INTO appointments (job, appt_id, status, source_time) VALUES ('j', 'A1', 'BOOKED', '2026-01-02T00:00:00Z');
             INSERT INTO id_history (job, side, own_id, kind, source_time) VALUES ('j', 'ehr', 'E1', 'practice_mrn', '2026-01-03T00:00:00Z');
             INSERT INTO merges (job, surviving_id, merged_id, source_time) VALUES ('j', 'E1', 'E9', '2026-01-04T00:00:00Z');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let times: Vec<Option<String>> = conn
            .prepare(
                "SELECT source_time FROM patients UNION ALL SELECT msg_time FROM messages
                 UNION ALL SELECT source_time FROM appointments UNION ALL SELECT source_time FROM id_history
                 UNION ALL SELECT source_time FROM merges",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let times: Vec<Option<&str>> = times.iter().map(Option::as_deref).collect();
        assert_eq!(
            times,
            [
                Some("2026-01-01T10:00:05.000Z"),
                None,
                Some("2026-01-01T10:00:05.250Z"),
                Some("2026-01-01T10:00:05.000Z"),
                Some("2026-01-02T00:00:00.000Z"),
                Some("2026-01-03T00:00:00.000Z"),
                Some("2026-01-04T00:00:00.000Z"),
            ]
        );
        // Now a time within the second sorts after the whole second.
        assert!(times[0] < times[2]);
    }

    #[test]
    fn version_8_marks_the_messages_queued_as_cut_short() {
        let mut conn = with_a_file(7);
        conn.execute_batch(
            "INSERT INTO messages (job, file_id, number, line, state, reason, state_at)
             VALUES ('j', 1, 1, 1, 'PROCESSED', NULL, 't'),
                    ('j', 1, 2, 3, 'ERROR', 'truncated: the file ends inside an MLLP frame', 't'),
                    ('j', 1, 3, 5, 'ERROR', 'no PID segment', 't');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let cut: Vec<i64> = conn
            .prepare("SELECT cut FROM messages ORDER BY number")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(cut, [0, 1, 0]);
    }
}
