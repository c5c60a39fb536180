//! HL7 v2 as bytes: finding messages in a file, reading their fields and
//! writing them back. This module owns the wire format: each message's own
//! delimiters (MSH-1, MSH-2), segment terminators, escape sequences, the
//! MSH-18 character set, batch envelopes (FHS/BHS/BTS/FTS) and MLLP framing
//! left in saved files. It does not know what a field means (turning a PID
//! into a patient belongs to the mapping code), does not build ACKs, does
//! not speak MLLP over a network, and does not check messages against the
//! standard's message structures: a PID with 40 fields is a PID with 40
//! fields.
//!
//! Everything borrows from the caller's buffer, usually a memory-mapped
//! file: [`split`] and [`Splitter`] index where messages start and end,
//! [`Message::parse`] indexes where segments start and end, and bytes are
//! decoded and unescaped only when a value's `text()` is asked for.
//!
//! The borrowed types print lengths, not contents, with `{:?}`, so a stray
//! debug log line cannot carry patient data.

mod batch;
mod config;
mod encode;
mod error;
mod escape;
mod map;
mod parse;
mod read;

pub use batch::{Batch, BatchProblem, Header, Item, Splitter, split};
pub use config::{Hl7Schema, IdRule};
pub use encode::{ComponentTree, FieldTree, MessageTree, RepetitionTree, SegmentTree, encode};
pub use error::Hl7Error;
pub use map::{
    EventKind, MapSettings, Mapped, MessageHeader, ProviderKind, appointment_source_of, dropped_from,
    event_kind, header, header_checked, map, parse_dtm, source_of, with_time,
};
pub use parse::{
    Charset, Component, Delimiters, Field, IndexedField, IndexedSegment, Message, Segment, SubComponent,
};
pub use read::{CHUNK, Failure, MessageOutcome, not_hl7, read_file};

/// Segment IDs, so that names are written once and not scattered as
/// literals through parsing and mapping code.
pub mod seg {
    /// Message header; its first two fields are the message's delimiters.
    pub const MSH: &str = "MSH";
    /// Event type.
    pub const EVN: &str = "EVN";
    /// Patient identification.
    pub const PID: &str = "PID";
    /// Additional demographics.
    pub const PD1: &str = "PD1";
    /// Next of kin.
    pub const NK1: &str = "NK1";
    /// Patient visit.
    pub const PV1: &str = "PV1";
    /// Merge patient information.
    pub const MRG: &str = "MRG";
    /// Scheduling activity information.
    pub const SCH: &str = "SCH";
    /// Timing/quantity (v2.5 and later; SCH-11's place from v2.7).
    pub const TQ1: &str = "TQ1";
    /// Appointment service resource.
    pub const AIS: &str = "AIS";
    /// Appointment general resource.
    pub const AIG: &str = "AIG";
    /// Appointment location resource.
    pub const AIL: &str = "AIL";
    /// Appointment personnel resource.
    pub const AIP: &str = "AIP";
    /// File header; carries its own delimiters like MSH.
    pub const FHS: &str = "FHS";
    /// Batch header; carries its own delimiters like MSH.
    pub const BHS: &str = "BHS";
    /// Batch trailer; BTS-1 is the number of messages in the batch.
    pub const BTS: &str = "BTS";
    /// File trailer; FTS-1 is the number of batches in the file.
    pub const FTS: &str = "FTS";
}
