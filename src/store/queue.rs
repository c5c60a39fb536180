//! The message queue as the EHR's interface queue shows it: every HL7
//! message with its state (NEW, PROCESSED, ERROR, DELETED), and for those
//! in ERROR the reason and the message itself, to show and retry.

use anyhow::{Result, bail};
use rusqlite::{OptionalExtension, params};

use super::{FORGET_DELETED_MESSAGES, FileLoad, Store, now};

/// A queued message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueItem {
    pub id: i64,
    pub job: String,
    pub file: String,
    pub file_id: i64,
    /// The schema the file was read with.
    pub schema: String,
    pub number: u64,
    pub line: u64,
    pub control_id: Option<String>,
    pub event: Option<String>,
    pub time: Option<String>,
    pub state: String,
    pub reason: Option<String>,
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
}

const SELECT: &str =
    "SELECT m.id, m.job, f.name, m.file_id, f.schema, m.number, m.line, m.control_id, m.event,
                             m.msg_time, m.state, m.reason, m.raw
                      FROM messages m JOIN files f ON f.id = m.file_id";

fn row(r: &rusqlite::Row) -> rusqlite::Result<QueueItem> {
    Ok(QueueItem {
        id: r.get(0)?,
        job: r.get(1)?,
        file: r.get(2)?,
        file_id: r.get(3)?,
        schema: r.get(4)?,
        number: r.get::<_, i64>(5)? as u64,
        line: r.get::<_, i64>(6)? as u64,
        control_id: r.get(7)?,
        event: r.get(8)?,
        time: r.get(9)?,
        state: r.get(10)?,
        reason: r.get(11)?,
        raw: r.get(12)?,
    })
}

impl Store {
    /// Messages in `state`, oldest first.
    pub fn queue(&self, job: Option<&str>, state: &str) -> Result<Vec<QueueItem>> {
        let sql = format!("{SELECT} WHERE m.state = ?1 AND (?2 IS NULL OR m.job = ?2) ORDER BY m.id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![state, job], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn queue_item(&self, id: i64) -> Result<Option<QueueItem>> {
        let sql = format!("{SELECT} WHERE m.id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], row).optional()?)
    }

    /// Mark a message DELETED (kept, with its reason, for the record). Its
    /// bytes stay until its run is pruned ([`Store::prune_run`]), or go now
    /// if that run was pruned already.
    pub fn delete_message(&self, id: i64) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE messages SET state = 'DELETED', state_at = ?2 WHERE id = ?1 AND state = 'ERROR'",
            params![id, now()],
        )?;
        if n == 0 {
            bail!("message {id} is not in ERROR");
        }
        // Should this fail, the next prune drops the bytes.
        self.conn.execute(FORGET_DELETED_MESSAGES, [])?;
        Ok(())
    }

    /// A retry that failed again: keep it in ERROR with the new reason.
    pub fn requeue_message(&self, id: i64, reason: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE messages SET reason = ?2, state_at = ?3 WHERE id = ?1",
            params![id, reason, now()],
        )?;
        Ok(())
    }

    /// Reopen the file a queued message came from, to apply it in one
    /// transaction together with its move to PROCESSED
    /// ([`FileLoad::processed`]).
    pub fn reopen_file(&mut self, job: &str, file_id: i64) -> Result<FileLoad<'_>> {
        FileLoad::reopen(&self.conn, job, file_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;
    use crate::store::{LoadMode, MessageRow, TakenFile};

    /// A store with one run that loaded a file of three messages: M1
    /// PROCESSED, M2 and M3 in ERROR. Returns the store, the run and M2's ID.
    fn loaded() -> (Store, i64, i64) {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.start_run("j", "run").unwrap();
        let taken = TakenFile {
            side: Side::Ehr,
            name: "a.hl7".into(),
            size: 1,
            mtime: "1".into(),
            sha256: "h".into(),
            local_path: "/x".into(),
            schema: "ehr_hl7".into(),
        };
        let mut load = s.begin_file("j", run, &taken, LoadMode::Upsert).unwrap();
        let base = MessageRow {
            number: 1,
            line: 1,
            control_id: Some("M1"),
            event: "ADT^A28",
            time: None,
            state: "PROCESSED",
            reason: None,
            raw: None,
        };
        load.message(&base).unwrap();
        let bad = MessageRow {
            number: 2,
            line: 4,
            control_id: Some("M2"),
            state: "ERROR",
            reason: Some("no PID segment"),
            raw: Some(b"MSH|..."),
            ..base
        };
        let id = load.message(&bad).unwrap();
        load.message(&MessageRow { number: 3, control_id: Some("M3"), ..bad }).unwrap();
        load.finish(&crate::store::Counts::default()).unwrap();
        (s, run, id)
    }

    #[test]
    fn error_messages_can_be_listed_shown_retried_and_deleted() {
        let (mut s, _, id) = loaded();
        let errors = s.queue(Some("j"), "ERROR").unwrap();
        assert_eq!(
            errors.iter().map(|q| q.control_id.as_deref()).collect::<Vec<_>>(),
            [Some("M2"), Some("M3")]
        );
        let item = s.queue_item(id).unwrap().unwrap();
        assert_eq!(
            (item.file.as_str(), item.number, item.reason.as_deref()),
            ("a.hl7", 2, Some("no PID segment"))
        );
        assert_eq!(item.raw.as_deref(), Some(&b"MSH|..."[..]));

        s.requeue_message(id, "still no PID").unwrap();
        assert_eq!(s.queue_item(id).unwrap().unwrap().reason.as_deref(), Some("still no PID"));
        let load = s.reopen_file("j", item.file_id).unwrap();
        load.processed(id).unwrap();
        assert_eq!(s.queue_item(id).unwrap().unwrap().state, "PROCESSED");

        s.delete_message(errors[1].id).unwrap();
        assert!(s.queue(Some("j"), "ERROR").unwrap().is_empty());
        assert!(s.delete_message(errors[1].id).is_err(), "only messages in ERROR are deleted");
    }

    #[test]
    fn deleted_messages_lose_their_bytes_when_their_run_is_pruned() {
        let (mut s, run, id) = loaded();
        let m3 = s.queue(Some("j"), "ERROR").unwrap()[1].id;
        s.delete_message(id).unwrap();
        s.prune_run(run).unwrap();
        let deleted = s.queue_item(id).unwrap().unwrap();
        assert_eq!((deleted.state.as_str(), deleted.raw), ("DELETED", None));
        assert_eq!(deleted.reason.as_deref(), Some("no PID segment"), "the record of why stays");
        let error = s.queue_item(m3).unwrap().unwrap();
        assert_eq!(error.raw.as_deref(), Some(&b"MSH|..."[..]), "a message in ERROR can still be retried");
        // Deleted after its run was pruned: the bytes go at once.
        s.delete_message(m3).unwrap();
        assert_eq!(s.queue_item(m3).unwrap().unwrap().raw, None);
    }

    #[test]
    fn upgrading_drops_the_bytes_of_messages_deleted_in_runs_pruned_before() {
        let (mut s, run, id) = loaded();
        let m3 = s.queue(Some("j"), "ERROR").unwrap()[1].id;
        s.delete_message(id).unwrap();
        // As version 4 pruned: the run marked, the message's bytes left.
        s.conn.execute("UPDATE runs SET pruned_at = 'then' WHERE id = ?1", [run]).unwrap();
        s.conn.pragma_update(None, "user_version", 4).unwrap();
        assert!(s.queue_item(id).unwrap().unwrap().raw.is_some());
        crate::store::migrations::migrate(&mut s.conn).unwrap();
        assert_eq!(s.queue_item(id).unwrap().unwrap().raw, None);
        assert!(s.queue_item(m3).unwrap().unwrap().raw.is_some(), "a message in ERROR keeps its bytes");
    }
}
