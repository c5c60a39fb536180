//! Reading a whole HL7 file: split it into messages, parse and map them in
//! parallel a chunk at a time, and hand each chunk on in file order, so a
//! run is repeatable and memory stays bounded by one chunk however large
//! the file (the caller memory-maps it).

use compact_str::CompactString;
use rayon::prelude::*;

use super::map::{self, MapSettings, Mapped, MessageHeader};
use super::{BatchProblem, Charset, Hl7Error, Item, Message, Splitter};
use crate::model::{Reject, Severity};

/// Messages mapped per parallel step: large enough to keep both cores busy
/// (a few milliseconds of work), small enough that a chunk's items and
/// records (under 1 MB) stay in the CPU's caches between splitting, mapping
/// and the sink. 4096 measured a few percent slower on one thread.
pub const CHUNK: usize = 1024;

/// What became of one message.
#[derive(Debug, Clone)]
pub struct MessageOutcome {
    /// 1-based message number in the file.
    pub number: u64,
    /// Line on which its MSH stands.
    pub line: u64,
    /// Byte offset just past the message in the file.
    pub end: u64,
    pub header: MessageHeader,
    /// A failure is boxed, as few messages fail: an outcome is then 120
    /// bytes, which the compiler moves with a few register moves. At 144
    /// bytes, collecting a chunk's outcomes called `memcpy` three times for
    /// each message.
    pub result: Result<Mapped, Box<Failure>>,
}

/// Why a message failed, with its bytes for the queue.
#[derive(Debug, Clone)]
pub struct Failure {
    /// A reason a person can act on; it names fields, never their values.
    pub reason: String,
    /// The message as it stands in the file, for `ferry queue show` and
    /// `ferry queue retry`.
    pub raw: Vec<u8>,
    /// It may have been cut short: `raw` ends at the cut, and what it said
    /// after it is lost, so it is never to be loaded.
    pub cut: bool,
}

/// Why a file is not HL7 at all, if it is not: it is not blank, and there
/// is no MSH anywhere in it. Such a file is not loaded: it is the wrong
/// file, or HL7 saved in an encoding ferry does not read (UTF-16), and its
/// messages would be lost behind one reject. A blank file holds nothing to
/// lose. Both searches stop at the first hit, so a real HL7 file costs next
/// to nothing.
pub fn not_hl7(bytes: &[u8]) -> Option<&'static str> {
    if bytes.iter().all(u8::is_ascii_whitespace) || memchr::memmem::find(bytes, b"MSH").is_some() {
        return None;
    }
    let utf16 = bytes.starts_with(&[0xFF, 0xFE])
        || bytes.starts_with(&[0xFE, 0xFF])
        || memchr::memmem::find(bytes, b"M\0S\0H").is_some();
    Some(if utf16 {
        "not HL7 as ferry reads it: the file is UTF-16 text, and HL7 files are 8-bit (ASCII, UTF-8 or \
         ISO 8859-1); ask the sender for UTF-8. Left at the source"
    } else {
        "not HL7: there is no MSH segment anywhere in the file. Left at the source"
    })
}

/// Envelope problems and bytes outside any message: a warning (counts
/// that do not add up, a missing trailer) or a rejected record (junk).
fn problem_reject(p: &BatchProblem) -> Option<Reject> {
    let (line, severity) = match *p {
        // The truncated message itself comes as an item and goes to ERROR.
        BatchProblem::Truncated { .. } => return None,
        BatchProblem::Junk { line, .. } => (line, Severity::Rejected),
        BatchProblem::CountMismatch { line, .. } | BatchProblem::BadCount { line, .. } => {
            (line, Severity::Warning)
        }
        BatchProblem::MissingTrailer { header_line, .. } => (header_line, Severity::Warning),
    };
    let reason = p.to_string();
    let reason = reason.strip_prefix(&format!("line {line}: ")).unwrap_or(&reason).to_string();
    Some(Reject { line: line as u64, severity, record_id: None, column: None, field: None, reason })
}

fn outcome(item: &Item, s: &MapSettings) -> MessageOutcome {
    let failed = |header: MessageHeader, reason: String| MessageOutcome {
        number: item.number as u64,
        line: item.line as u64,
        end: (item.offset + item.raw.len()) as u64,
        header,
        result: Err(Box::new(Failure { reason, raw: item.raw.to_vec(), cut: item.truncated.is_some() })),
    };
    let unknown = MessageHeader { event: CompactString::default(), control_id: None, time: None };
    let msg = match item.parse() {
        Ok(m) => m,
        // With only MSH-18 unknown, the header is still read for the
        // queue: its fields are ASCII in practice, and Latin-1 reads any byte.
        Err(e @ Hl7Error::UnknownCharset(_)) => {
            let header = Message::parse_with_charset(item.raw, Charset::Latin1)
                .map_or(unknown, |m| map::header(&m, s.time_zone));
            return failed(header, e.to_string());
        }
        Err(e) => return failed(unknown, e.to_string()),
    };
    let (code, trigger) = msg.message_type();
    let (header, bad_time) = map::header_typed(&msg, s.time_zone, s.latest_time, &code, &trigger);
    if let Some(why) = item.truncated {
        return failed(header, format!("truncated: {why}"));
    }
    match map::with_time(map::map_typed(&msg, s, &code, &trigger), bad_time) {
        Ok(mapped) => MessageOutcome {
            number: item.number as u64,
            line: item.line as u64,
            end: (item.offset + item.raw.len()) as u64,
            header,
            result: Ok(mapped),
        },
        Err(reason) => failed(header, reason),
    }
}

/// Read `buf`, calling `sink` with each chunk of outcomes in file order.
/// Returns the envelope problems as rejects (junk counts as a rejected record).
///
/// Three things happen at once, each chunk a step behind the one before:
/// while one chunk is mapped (itself in parallel), the next is split
/// (splitting is serial) and the one before is handed to `sink` on the
/// calling thread. The sink (loading the store, and dropping the records)
/// is serial work too, and waiting for it would leave the other threads
/// idle. `sink` itself never leaves the calling thread, so it need not be
/// `Send`.
pub fn read_file<E>(
    buf: &[u8],
    s: &MapSettings,
    mut sink: impl FnMut(Vec<MessageOutcome>) -> Result<(), E>,
) -> Result<Vec<Reject>, E> {
    let mut splitter = Splitter::new(buf);
    let mut problems = Vec::new();
    let mut next = take_chunk(&mut splitter, &mut problems);
    let mut mapped: Option<Vec<MessageOutcome>> = None;
    while !next.is_empty() || mapped.is_some() {
        let current = std::mem::take(&mut next);
        let (mut outcomes, mut following) = (Vec::new(), Vec::new());
        let done = mapped.take();
        let (splitter, problems) = (&mut splitter, &mut problems);
        rayon::in_place_scope(|scope| {
            if !current.is_empty() {
                // In pieces of at most 32 messages (about 60 us of work), so
                // that the thread which also splits the next chunk is not
                // left with a long piece while the other waits at the end
                // of the chunk. Left to itself, rayon cuts a chunk into
                // about as many pieces as there are threads, more only when
                // one is stolen.
                //
                // Spawned last, the mapping is what a thread of its own takes
                // first (rayon runs its own spawns newest first). On one
                // thread, the chunk is then mapped right after it was split,
                // while its messages are still in the core's cache, not
                // after the next chunk's megabyte has pushed them out.
                scope.spawn(|_| following = take_chunk(splitter, problems));
                scope.spawn(|_| {
                    outcomes = current.par_iter().with_max_len(32).map(|item| outcome(item, s)).collect();
                });
            }
            done.map_or(Ok(()), &mut sink)
        })?;
        mapped = (!outcomes.is_empty()).then_some(outcomes);
        next = following;
    }
    Ok(problems)
}

fn take_chunk<'a>(splitter: &mut Splitter<'a>, problems: &mut Vec<Reject>) -> Vec<Item<'a>> {
    let mut items = Vec::with_capacity(CHUNK);
    for found in splitter.by_ref() {
        match found {
            Ok(item) => items.push(item),
            Err(p) => problems.extend(problem_reject(&p)),
        }
        if items.len() == CHUNK {
            break;
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::Hl7Schema;

    #[test]
    fn a_file_without_hl7_in_it_is_named_so() {
        assert_eq!(not_hl7(b""), None);
        assert_eq!(not_hl7(b" \r\n\r\n"), None, "blank");
        assert_eq!(not_hl7(b"junk line\r\nMSH|^~\\&|A\r"), None, "junk, then HL7");
        assert!(not_hl7(b"Chart,Name\r\n1,Lee\r\n").unwrap().starts_with("not HL7: there is no MSH"));
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("MSH|^~\\&|A\r".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert!(not_hl7(&utf16).unwrap().contains("UTF-16"));
        assert!(not_hl7(&utf16[2..]).unwrap().contains("UTF-16"), "without its byte order mark");
    }

    #[test]
    fn a_message_in_an_unknown_character_set_keeps_its_header_in_the_queue() {
        let raw =
            b"MSH|^~\\&|A|B|C|D|20261101090000||ADT^A08|M1|P|2.5.1||||||KOI8-R\rPID|1||E1^^^ATHENA^PI\r";
        let schema = Hl7Schema::parse(
            std::path::Path::new("s.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"ATHENA\"\n",
        )
        .unwrap();
        let s = MapSettings::new(&schema, Default::default(), chrono_tz::UTC);
        let item = super::super::split(raw).items[0];
        let o = outcome(&item, &s);
        assert!(o.result.as_ref().is_err_and(|f| f.reason.contains("KOI8-R")));
        assert_eq!((o.header.event.as_str(), o.header.control_id.as_deref()), ("ADT^A08", Some("M1")));
        assert!(o.header.time.is_some());
    }
}
