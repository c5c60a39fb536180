//! Mapping HL7 messages to the canonical model: ADT^A28/A31/A04/A08/A01 to a
//! [`Patient`], ADT^A40 and A34 to a merge, SIU^S12/S13/S14/S15/S17/S26 to an [`Appointment`].
//!
//! Every failure is a reason a person can act on ("no PID segment", "bad
//! date in PID-7", "unknown event ADT^A99"); the caller puts the message in
//! the ERROR queue with it. Reasons name fields, never patient values.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use compact_str::CompactString;

use super::config::{Hl7Schema, IdRule};
use super::{Component, Field, Hl7Error, IndexedSegment, Message, Segment, SubComponent, seg};
use crate::flatfile::{EARLIEST_YEAR, ethnicity, language, normalize_into, normalize_value, race};
use crate::model::{
    self, Appointment, AppointmentField, AppointmentStatus, AppointmentText, Field as PatientField, FieldSet,
    Patient, Sex,
};

/// Which provider ID a job keeps: the NPI or the EHR's own provider ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Npi,
    Ehr,
}

/// What mapping needs besides the message.
#[derive(Debug, Clone)]
pub struct MapSettings<'s> {
    pub schema: &'s Hl7Schema,
    pub provider: ProviderKind,
    /// Times without an offset are in this zone.
    pub time_zone: Tz,
    /// A message whose time is after this is ERROR: stored as the record's
    /// time, a wrong date (2062 typed for 2026) would make every later
    /// update of the record look older, and none would ever be applied.
    pub latest_time: DateTime<Utc>,
    /// Today in `time_zone`: a birth date after it is an error, as in flat
    /// files.
    pub today: NaiveDate,
}

/// How far ahead of this machine's clock a message's time may be: enough
/// for a sender's clock that runs fast or skips a daylight-saving change,
/// not enough for a wrong day, month or year to hold a record for long.
pub const MESSAGE_TIME_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(1);

impl<'s> MapSettings<'s> {
    /// Settings for mapping now: message times may be up to
    /// `MESSAGE_TIME_AHEAD` (a day) ahead of the clock.
    pub fn new(schema: &'s Hl7Schema, provider: ProviderKind, time_zone: Tz) -> Self {
        let now = crate::clock::now();
        let (latest_time, today) = (now + MESSAGE_TIME_AHEAD, now.with_timezone(&time_zone).date_naive());
        MapSettings { schema, provider, time_zone, latest_time, today }
    }
}

/// What one message says.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapped {
    /// Boxed, as the appointment: a patient is nearly 500 bytes, and
    /// outcomes are moved around and collected a chunk at a time.
    Patient(Box<Patient>),
    Appointment(Box<Appointment>),
    /// ADT^A40: `merged_ehr_id` (MRG-1) is merged into the patient in PID.
    Merge {
        surviving: Box<Patient>,
        merged_ehr_id: String,
    },
    /// An event the schema's `[events] ignore` names: queued as
    /// PROCESSED, with nothing to load.
    Ignored,
}

/// The kinds of record ferry maps events to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Patient,
    Merge,
    Appointment,
}

impl EventKind {
    pub fn describe(self) -> &'static str {
        match self {
            EventKind::Patient => "a patient update",
            EventKind::Merge => "a merge",
            EventKind::Appointment => "an appointment",
        }
    }
}

/// What ferry maps the event `code^trigger` to by itself, whatever the
/// schema says.
pub fn event_kind(code: &str, trigger: &str) -> Option<EventKind> {
    match (code, trigger) {
        ("ADT", "A28" | "A31" | "A04" | "A08" | "A01") => Some(EventKind::Patient),
        // A40 merges patient identifier lists; A34, its v2.3 forerunner
        // (withdrawn in v2.7), merges patient IDs: one merge of EHR IDs either way.
        ("ADT", "A40" | "A34") => Some(EventKind::Merge),
        ("SIU", "S12" | "S13" | "S14" | "S15" | "S17" | "S26") => Some(EventKind::Appointment),
        _ => None,
    }
}

/// The header facts of a message, read even when mapping fails, so the
/// queue can show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// "ADT^A28".
    pub event: CompactString,
    pub control_id: Option<CompactString>,
    /// The message's own time: EVN-6 (event occurred), else EVN-2 (recorded), else MSH-7.
    pub time: Option<DateTime<Utc>>,
}

/// The header, for showing: a time too far ahead is shown as it is.
pub fn header(msg: &Message, tz: Tz) -> MessageHeader {
    let (code, trigger) = msg.message_type();
    header_typed(msg, tz, DateTime::<Utc>::MAX_UTC, &code, &trigger).0
}

/// [`header`], with the reason the message's time cannot be used, if it
/// cannot: a message is ordered by its time, so one without a time it can
/// be ordered by is not applied (see `header_typed`).
pub fn header_checked(msg: &Message, s: &MapSettings) -> (MessageHeader, Option<String>) {
    let (code, trigger) = msg.message_type();
    header_typed(msg, s.time_zone, s.latest_time, &code, &trigger)
}

/// [`header_checked`] for a caller that has read the message type (MSH-9.1
/// and MSH-9.2, as [`Message::message_type`] gives them) already.
///
/// The time is the first of EVN-6, EVN-2 and MSH-7 that has a value. A
/// value that is not a time, or a local time that does not exist, is a
/// reason: skipping it for the next one would order the message by another
/// time than it says, and without a time a message older than the stored
/// data would overwrite it. No time at all is a reason too (MSH-7 is
/// required), and so is a time after `latest` (see
/// [`MapSettings::latest_time`]).
pub(super) fn header_typed(
    msg: &Message,
    tz: Tz,
    latest: DateTime<Utc>,
    code: &str,
    trigger: &str,
) -> (MessageHeader, Option<String>) {
    let time = message_time(msg, tz, latest);
    let event = match (code, trigger) {
        ("", "") => CompactString::default(),
        _ => model::compact(&join(&mut [0; JOINED], [code, "^", trigger])),
    };
    let control_id = msg.control_id();
    match time {
        Ok(time) => (MessageHeader { event, control_id, time: Some(time) }, None),
        Err(problem) => (MessageHeader { event, control_id, time: None }, Some(problem)),
    }
}

/// The message's time, as [`header_typed`] reads it.
fn message_time(msg: &Message, tz: Tz, latest: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let evn = msg.segment(seg::EVN);
    let fields = [(evn.map(|e| e.field(6)), "EVN-6"), (evn.map(|e| e.field(2)), "EVN-2")];
    for (field, at) in fields.into_iter().chain([(Some(msg.msh_field(7)), "MSH-7")]) {
        let Some(f) = field else { continue };
        if let Some(t) = value(f.component(1).text(), at)? {
            let time =
                parse_dtm(&t, tz).map_err(|e| format!("bad time in {at} (the message's time): {e}"))?;
            if time > latest {
                return Err(format!(
                    "{at} (the message's time) is more than {} hours ahead of this machine's clock: \
                     ordered by it, every later update of the record would look older and be passed \
                     over. Check the date the sender wrote, its clock and the job's time_zone",
                    MESSAGE_TIME_AHEAD.num_hours()
                ));
            }
            return Ok(time);
        }
    }
    Err("no message time: MSH-7 is empty, and so are EVN-2 and EVN-6".into())
}

/// A mapping's outcome with the message's time checked as well: a bad time
/// ([`header_checked`]'s reason) fails a message that loads something. It is
/// checked after the mapping, whose reason (an unknown event, no PID) says
/// more about a message that has both; a message of an event the schema
/// ignores loads nothing, so its time does not matter.
#[inline(always)]
pub fn with_time(mapped: Result<Mapped, String>, bad_time: Option<String>) -> Result<Mapped, String> {
    match bad_time {
        Some(reason) if !matches!(mapped, Ok(Mapped::Ignored) | Err(_)) => Err(reason),
        _ => mapped,
    }
}

/// Map one message.
pub fn map(msg: &Message, s: &MapSettings) -> Result<Mapped, String> {
    let (code, trigger) = msg.message_type();
    map_typed(msg, s, &code, &trigger)
}

/// [`map`] for a caller that has read the message type already.
pub(super) fn map_typed(msg: &Message, s: &MapSettings, code: &str, trigger: &str) -> Result<Mapped, String> {
    let kind = match event_kind(code, trigger) {
        Some(kind) => kind,
        None if code.is_empty() => return Err("MSH-9 (message type) is empty".into()),
        None if s.schema.reads_as_patient(code, trigger) => EventKind::Patient,
        None if s.schema.ignores(code, trigger) => return Ok(Mapped::Ignored),
        None => {
            return Err(format!(
                "unknown event {code}^{trigger}: ferry maps ADT^A28/A31/A04/A08/A01/A40/A34 and \
                 SIU^S12/S13/S14/S15/S17/S26; the schema's [events] may read other ADT events as patient \
                 updates, or ignore events this interface need not load"
            ));
        }
    };
    match kind {
        EventKind::Patient => patient(msg, s).map(Mapped::Patient),
        EventKind::Merge => {
            let surviving = patient(msg, s)?;
            let mut mrgs = msg.segments_named(seg::MRG);
            let mrg = mrgs.next().ok_or_else(|| format!("ADT^{trigger} without an MRG segment"))?;
            if mrgs.next().is_some() {
                return Err(format!(
                    "ADT^{trigger} with more than one PID/MRG pair: ferry maps one merge a message, so none \
                     of them is applied"
                ));
            }
            let merged = pick_id(mrg.field(1), &s.schema.ehr_id, "MRG-1")?
                .ok_or_else(|| format!("MRG-1 has no identifier with {}", s.schema.ehr_id.describe()))?;
            if Some(merged.as_ref()) == surviving.ehr_id.as_deref() {
                return Err("MRG-1 names the surviving patient's own EHR ID (PID-3): a patient is not \
                            merged into itself"
                    .into());
            }
            Ok(Mapped::Merge { surviving, merged_ehr_id: merged.into_owned() })
        }
        EventKind::Appointment => appointment(msg, s, trigger).map(|a| Mapped::Appointment(Box::new(a))),
    }
}

/// A value trimmed, `None` when empty or HL7's null `""`, borrowed from the
/// message where it needed no unescaping.
// Always inlined: it is called for every value read, and as a call its
// Result argument and return travel through memory.
#[inline(always)]
fn value<'a>(r: Result<Cow<'a, str>, Hl7Error>, at: &str) -> Result<Option<Cow<'a, str>>, String> {
    let t = match r {
        Ok(t) => t,
        Err(e) => return Err(undecodable(at, &e)),
    };
    let trimmed = trim(&t);
    if trimmed.is_empty() || trimmed == "\"\"" {
        return Ok(None);
    }
    if trimmed.len() == t.len() {
        return Ok(Some(t));
    }
    let start = trimmed.as_ptr() as usize - t.as_ptr() as usize;
    let range = start..start + trimmed.len();
    Ok(Some(match t {
        Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
        Cow::Owned(o) => Cow::Owned(o[range].to_string()),
    }))
}

/// The reason for a value that could not be decoded; kept out of line, as
/// its formatting would weigh on every value read.
#[cold]
#[inline(never)]
fn undecodable(at: &str, e: &Hl7Error) -> String {
    format!("{at}: {e}")
}

/// `str::trim`, without decoding the ends of the many values that start
/// and end with a printable ASCII character, which is never white space.
pub(super) fn trim(t: &str) -> &str {
    match t.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => t,
        [only] if only.is_ascii_graphic() => t,
        _ => t.trim(),
    }
}

/// [`value`] as an owned string, for the record.
#[inline]
fn text(r: Result<Cow<'_, str>, Hl7Error>, at: &str) -> Result<Option<CompactString>, String> {
    Ok(value(r, at)?.map(CompactString::from))
}

/// [`text`] written straight into a record's field. The value is copied
/// into the field's own bytes, not built beside it and moved in: a move
/// reads the new value back in wider words than it was written in, and the
/// processor stalls on such a read until the writes have landed.
#[inline]
fn put(slot: &mut Option<CompactString>, r: Result<Cow<'_, str>, Hl7Error>, at: &str) -> Result<(), String> {
    set(slot, value(r, at)?);
    Ok(())
}

/// A value read already, written into a field as [`put`] writes it.
#[inline]
fn set(slot: &mut Option<CompactString>, v: Option<Cow<'_, str>>) {
    if let Some(v) = v {
        model::fill(slot, &v);
    }
}

/// [`value`] for comparing: empty when absent.
#[inline]
fn code<'a>(r: Result<Cow<'a, str>, Hl7Error>, at: &str) -> Result<Cow<'a, str>, String> {
    Ok(value(r, at)?.unwrap_or_default())
}

/// Room for [`join`] to join on the stack: more than any real phone number
/// or message type takes.
const JOINED: usize = 32;

/// `parts` one after the other, in `buf` when they fit, as they always do
/// for the short values joined here: the result is only read, or copied
/// into an inline [`CompactString`], so it need not be allocated.
fn join<'b, const N: usize>(buf: &'b mut [u8; JOINED], parts: [&str; N]) -> Cow<'b, str> {
    let len = parts.iter().map(|p| p.len()).sum();
    if len > buf.len() {
        return Cow::Owned(parts.concat());
    }
    let mut at = 0;
    for p in parts {
        let to = &mut buf[at..at + p.len()];
        // SAFETY: `to` is `p.len()` bytes of `buf`, which `p` is not.
        unsafe { model::copy_short(p.as_bytes(), to.as_mut_ptr()) };
        at += p.len();
    }
    // SAFETY: strings one after the other are a string: each part is valid
    // UTF-8 and ends at a character boundary, so their bytes in a row are
    // valid UTF-8 too.
    Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(&buf[..len]) })
}

/// The first PID-3-style repetition (CX) that matches `rule`, or an error
/// if a later one that matches holds another ID.
fn pick_id<'a>(f: Field<'a>, rule: &IdRule, at: &str) -> Result<Option<Cow<'a, str>>, String> {
    let [id, _] = pick_ids(f, [Some(rule), None], at);
    id
}

/// [`pick_id`] for two rules (`None` for no rule) in one pass over the
/// repetitions, with what two calls would return: the ID of the first
/// repetition each rule matches, or the first error met while that rule
/// was still looked for, or an error if a later repetition the rule
/// matches holds another ID. Two IDs under one authority and type leave
/// unclear which patient (or which of two charts) a message is about.
/// Every repetition is read (but none after an error), to find those.
fn pick_ids<'a>(
    f: Field<'a>,
    rules: [Option<&IdRule>; 2],
    at: &str,
) -> [Result<Option<Cow<'a, str>>, String>; 2] {
    let mut found: [Option<Result<Option<Cow<'a, str>>, String>>; 2] =
        rules.map(|r| r.is_none().then_some(Ok(None)));
    for rep in f.repetitions() {
        let rep = rep.indexed();
        // The assigning authority (an HD): its namespace ID (HD.1), or its
        // universal ID (HD.2, an OID), which a sender that follows IHE may
        // send alone.
        let authority = rep.component(4);
        let namespace = authority.subcomponent(1);
        let kind = code(namespace.text(), at).and_then(|namespace_text| {
            // Shorter than the component: a subcomponent separator follows.
            let universal = match namespace.raw().len() < authority.raw().len() {
                true => code(authority.subcomponent(2).text(), at)?,
                false => Cow::Borrowed(""),
            };
            Ok((namespace_text, universal, code(rep.component(5).text(), at)?))
        });
        let (namespace, universal, id_type) = match kind {
            Ok(kind) => kind,
            Err(e) => {
                for slot in found.iter_mut().filter(|slot| slot.is_none()) {
                    *slot = Some(Err(e.clone()));
                }
                break;
            }
        };
        for (slot, rule) in found.iter_mut().zip(rules) {
            let Some(rule) = rule.filter(|r| {
                r.matches(&namespace, &id_type) || (!universal.is_empty() && r.matches(&universal, &id_type))
            }) else {
                continue;
            };
            match slot {
                // A repetition that names the authority but holds no ID
                // (empty, or HL7's null) leaves the rule looking on.
                None => match value(rep.component(1).text(), at) {
                    Ok(None) => {}
                    id => *slot = Some(id),
                },
                Some(Ok(Some(first))) => {
                    if let Ok(Some(other)) = value(rep.component(1).text(), at)
                        && other != *first
                    {
                        *slot = Some(Err(format!("{at} holds two different IDs with {}", rule.describe())));
                    }
                }
                Some(_) => {}
            }
        }
    }
    found.map(|slot| slot.unwrap_or(Ok(None)))
}

// Reads PID through `Segment::indexed` and per-field lookups, which pass
// only over the fields and components read. A single pass over every PID
// delimiter into a table of wanted slots was built and measured in its
// place: outcomes identical, but 371M instructions against 332.6M for
// this path in the same build (20,000 messages, callgrind, plain release
// build; that build chose between the two for each message, which alone
// took this path from 324.4M to 332.6M). The pass cost about 44
// instructions a delimiter, and reading values from the slots saved
// little: trimming, the null check, decoding, filling and the
// normalisers cost the same either way.
fn patient(msg: &Message, s: &MapSettings) -> Result<Box<Patient>, String> {
    let pid = only_pid(msg)?.indexed();
    let (ehr_id, practice_mrn) = pid_ids(pid, s)?;
    // Filled where it will stay, not moved there when done.
    let mut p = Box::<Patient>::default();
    set(&mut p.ehr_id, Some(ehr_id));
    set(&mut p.practice_mrn, practice_mrn);

    // What PID leaves empty, an update keeps (HL7: an empty field is no
    // change, `""` clears the value). Each field is looked at where it is
    // read: a second lookup of the eight fields cost some 330 instructions
    // a message.
    let mut keep = FieldSet::default();
    let mut unsaid = |field: &Field, fields: &[PatientField]| {
        if !field.is_said() {
            fields.iter().for_each(|&f| keep.insert(f));
        }
    };

    // PID-5 (XPN): the legal name (type L) if marked, else the first that
    // is not empty (a sender may leave the first repetition empty).
    let names = pid.field(5);
    unsaid(&names, &[PatientField::LastName, PatientField::FirstName, PatientField::MiddleName]);
    let name = names
        .repetitions()
        .map(|r| r.indexed())
        .find(|r| r.component(7).text().is_ok_and(|t| trim(&t) == "L"))
        .or_else(|| names.repetitions().find(Field::has_value).map(|r| r.indexed()))
        .unwrap_or_else(|| names.repetition(1).indexed());
    put(&mut p.last_name, name.component(1).subcomponent(1).text(), "PID-5.1")?;
    put(&mut p.first_name, name.component(2).text(), "PID-5.2")?;
    put(&mut p.middle_name, name.component(3).text(), "PID-5.3")?;

    let dob = pid.field(7);
    unsaid(&dob, &[PatientField::BirthDate]);
    if let Some(dob) = value(dob.component(1).text(), "PID-7")? {
        if is_partial_date(&dob) {
            // A birth year (and month) alone is a real HL7 value, not a bad
            // one: the patient loads without a birth date, with a warning.
            p.dropped.insert(PatientField::BirthDate);
        } else {
            p.birth_date = Some(birth_date(&dob, s.today).map_err(|e| format!("bad date in PID-7: {e}"))?);
        }
    }
    // PID-8: a code (IS, and CWE from v2.7 with the code in component 1),
    // else the name beside it (`^Female`).
    let sex_f = pid.field(8);
    unsaid(&sex_f, &[PatientField::Sex]);
    let sex_code = value(sex_f.component(1).text(), "PID-8")?;
    p.sex = sex_code.as_deref().and_then(sex);
    if p.sex.is_none() {
        let name = value(sex_f.component(2).text(), "PID-8.2")?;
        p.sex = name.as_deref().and_then(sex);
        if p.sex.is_none() && (sex_code.is_some() || name.is_some()) {
            p.dropped.insert(PatientField::Sex);
        }
    }
    // Race (PID-10), ethnicity (PID-22) and language (PID-15): coded (CE or
    // CWE), stored as CDC and ISO 639-2 codes.
    let (race_f, ethnicity_f, language_f) = (pid.field(10), pid.field(22), pid.field(15));
    unsaid(&race_f, &[PatientField::Race]);
    unsaid(&ethnicity_f, &[PatientField::Ethnicity]);
    unsaid(&language_f, &[PatientField::Language]);
    // Three calls, not a loop over the three: each then has its reader inlined.
    let read = [
        coded(race_f, race, &mut p.race, ["PID-10", "PID-10.2"])?,
        coded(ethnicity_f, ethnicity, &mut p.ethnicity, ["PID-22", "PID-22.2"])?,
        coded(language_f, language, &mut p.language, ["PID-15", "PID-15.2"])?,
    ];
    for (read, field) in
        read.into_iter().zip([PatientField::Race, PatientField::Ethnicity, PatientField::Language])
    {
        if !read {
            p.dropped.insert(field);
        }
    }

    // PID-11 (XAD): the patient's address, by its type (see `address_rank`).
    let addresses = pid.field(11);
    use PatientField::{Address1, Address2, City, State, Zip};
    unsaid(&addresses, &[Address1, Address2, City, State, Zip]);
    let mut addr = addresses.repetitions().find(Field::has_value).map(|r| r.indexed());
    if let Some(first) = &addr {
        let rank = address_rank(first.component(7).raw());
        // Not plainly the address (home, or the only one): rank them all.
        if rank.is_none()
            || !holds_address(|n| first.component(n))
            || (rank != Some(0) && !addresses.repetition(2).is_empty())
        {
            addr = home_address(addresses)?.map(|a| a.indexed());
        }
    }
    if let Some(addr) = addr {
        put(&mut p.address1, addr.component(1).subcomponent(1).text(), "PID-11.1")?;
        put(&mut p.address2, addr.component(2).text(), "PID-11.2")?;
        put(&mut p.city, addr.component(3).text(), "PID-11.3")?;
        // A bad optional value is dropped, as in flat files: a single bad
        // value never hides a patient from reconciliation.
        let dropped = &mut p.dropped;
        put_normalized(&mut p.state, addr.component(4).text(), PatientField::State, "PID-11.4", dropped)?;
        put_normalized(&mut p.zip, addr.component(5).text(), PatientField::Zip, "PID-11.5", dropped)?;
    }

    // PID-13 (XTN): home phone, mobile (type CP), email (use NET or type Internet).
    let phones = pid.field(13);
    unsaid(&phones, &[PatientField::PhoneHome, PatientField::PhoneMobile, PatientField::Email]);
    for rep in phones.repetitions() {
        let rep = rep.indexed();
        let usage = code(rep.component(2).text(), "PID-13.2")?;
        let kind = code(rep.component(3).text(), "PID-13.3")?;
        if usage.eq_ignore_ascii_case("NET")
            || kind.eq_ignore_ascii_case("Internet")
            || kind.eq_ignore_ascii_case("X.400")
        {
            if p.email.is_none() {
                let (slot, dropped) = (&mut p.email, &mut p.dropped);
                put_normalized(slot, rep.component(4).text(), PatientField::Email, "PID-13.4", dropped)?;
            }
            continue;
        }
        // Home: a telephone (PH, or no type) at a residence (PRN, ORN,
        // VHN, or no use). Mobile: a cell phone (CP) at any use. Fax,
        // beeper, modem and text telephones, and numbers at work, an
        // answering service or for emergencies, are neither.
        let (slot, field) = if kind.eq_ignore_ascii_case("CP") {
            (&mut p.phone_mobile, PatientField::PhoneMobile)
        } else if (kind.is_empty() || kind.eq_ignore_ascii_case("PH"))
            && ["", "PRN", "ORN", "VHN"].iter().any(|u| usage.eq_ignore_ascii_case(u))
        {
            (&mut p.phone_home, PatientField::PhoneHome)
        } else {
            continue;
        };
        if slot.is_some() {
            continue;
        }
        // The number is XTN.1 (older versions) or area code XTN.6 + local
        // XTN.7, after the country code XTN.5 when that is not North
        // America's (1).
        let mut joined = [0; JOINED];
        let number = match value(rep.component(7).text(), "PID-13.7")? {
            Some(local) => {
                let area = code(rep.component(6).text(), "PID-13.6")?;
                let country = code(rep.component(5).text(), "PID-13.5")?;
                match country.trim_start_matches('+') {
                    "" | "1" => join(&mut joined, [&area, &local]),
                    country => join(&mut joined, ["+", country, &area, &local]),
                }
            }
            None => code(rep.component(1).text(), "PID-13.1")?,
        };
        if !number.is_empty() {
            normalize_into(PatientField::PhoneHome, &number, slot);
            if slot.is_none() {
                p.dropped.insert(field);
            }
        }
    }

    // A bad number or email followed by a good one is not dropped.
    for (slot, field) in [
        (&p.phone_home, PatientField::PhoneHome),
        (&p.phone_mobile, PatientField::PhoneMobile),
        (&p.email, PatientField::Email),
    ] {
        if slot.is_some() {
            p.dropped.remove(field);
        }
    }

    // Primary care provider (PD1-4), else the attending doctor (PV1-7),
    // which is looked for only when PD1 gives none.
    let mut provider_said = false;
    for (id, field) in [(seg::PD1, 4), (seg::PV1, 7)] {
        let Some(segment) = msg.segment(id) else { continue };
        let field = segment.field(field);
        provider_said |= field.is_said();
        if let Some(provider) = provider_id(field, s)? {
            set(&mut p.provider_id, Some(provider));
            break;
        }
    }
    if !provider_said {
        keep.insert(PatientField::ProviderId);
    }
    // The insurance fields are not read from HL7.
    [PatientField::InsuranceProvider, PatientField::MemberId, PatientField::GroupNumber]
        .into_iter()
        .for_each(|f| keep.insert(f));
    p.keep_stored = keep;
    // A control character reaches a value only from a byte or an escape
    // sequence the splitter notes: only then are the values looked at again.
    if msg.may_hold_controls() {
        p.cleaned = p.strip_controls();
    }
    Ok(p)
}

/// PID-8 as a sex: HL7's own codes M, F, O and U as they are (what the
/// general rules make of them too: a test holds the two together), anything
/// else by the general rules, as flat files read it.
fn sex(v: &str) -> Option<Sex> {
    Sex::parse(v).or_else(|| normalize_value(PatientField::Sex, v).ok().as_deref().and_then(Sex::parse))
}

/// The EHR's patient ID and the practice MRN (when the schema names one)
/// from PID-3; no EHR ID is an error.
/// The message's one PID. A second one is an error, not passed over: its
/// patient would be dropped without a word (a group appointment, two
/// patients in one ADT, an ADT^A40 with more than one PID/MRG pair).
fn only_pid<'a>(msg: &Message<'a>) -> Result<Segment<'a>, String> {
    let mut pids = msg.segments_named(seg::PID);
    let pid = pids.next().ok_or("no PID segment")?;
    if pids.next().is_some() {
        return Err("more than one PID segment: ferry maps one patient a message (an ADT^A40 one PID/MRG \
                    pair), and would drop the others"
            .into());
    }
    Ok(pid)
}

fn pid_ids<'a>(
    pid: IndexedSegment<'a>,
    s: &MapSettings,
) -> Result<(Cow<'a, str>, Option<Cow<'a, str>>), String> {
    let rules = [Some(&s.schema.ehr_id), s.schema.practice_mrn.as_ref()];
    let [ehr_id, practice_mrn] = pick_ids(pid.field(3), rules, "PID-3");
    let ehr_id = ehr_id
        .map_err(|e| format!("{e} (the EHR's patient ID): which patient the message is about is unclear"))?
        .ok_or_else(|| {
            format!("PID-3 has no identifier with {} (the EHR's patient ID)", s.schema.ehr_id.describe())
        })?;
    let practice_mrn = practice_mrn.map_err(|e| {
        format!("{e} (the practice MRN): one patient with two charts? Ask the practice which is right")
    })?;
    Ok((ehr_id, practice_mrn))
}

/// A value read as [`put`] reads it, normalised as flat files normalise
/// `field` and written into `slot`; a bad value leaves the slot empty.
fn put_normalized(
    slot: &mut Option<CompactString>,
    r: Result<Cow<str>, Hl7Error>,
    field: PatientField,
    at: &str,
    dropped: &mut FieldSet<PatientField>,
) -> Result<(), String> {
    if let Some(v) = value(r, at)? {
        normalize_into(field, &v, slot);
        if slot.is_none() {
            dropped.insert(field);
        }
    }
    Ok(())
}

/// Where in an SIU message an appointment's text value is read from, for
/// the warnings that name it.
pub fn appointment_source_of(text: AppointmentText) -> &'static str {
    match text {
        AppointmentText::Id => "SCH-2/SCH-1",
        AppointmentText::PatientEhrId | AppointmentText::PatientMrn => "PID-3",
        AppointmentText::ProviderId => "AIP-3",
        AppointmentText::DepartmentId => "AIL-3/PV1-3",
        AppointmentText::AppointmentType => "SCH-8/SCH-7",
    }
}

/// Where in a message a patient field comes from, for the warnings that
/// name it.
pub fn source_of(field: PatientField) -> &'static str {
    use PatientField as F;
    match field {
        F::EhrId | F::PracticeMrn => "PID-3",
        F::LastName => "PID-5.1",
        F::FirstName => "PID-5.2",
        F::MiddleName => "PID-5.3",
        F::BirthDate => "PID-7",
        F::Sex => "PID-8",
        F::Race => "PID-10",
        F::Address1 => "PID-11.1",
        F::Address2 => "PID-11.2",
        F::City => "PID-11.3",
        F::State => "PID-11.4",
        F::Zip => "PID-11.5",
        F::PhoneHome => "PID-13 (home)",
        F::PhoneMobile => "PID-13 (mobile)",
        F::Email => "PID-13.4",
        F::Language => "PID-15",
        F::Ethnicity => "PID-22",
        F::ProviderId => "PD1-4/PV1-7",
        F::InsuranceProvider | F::MemberId | F::GroupNumber => "IN1",
    }
}

/// Where in a message a patient field whose value can be dropped comes
/// from, and what kind of value it must be: for the warning that says so.
pub fn dropped_from(field: PatientField) -> (&'static str, &'static str) {
    let kind = match field {
        PatientField::BirthDate => "full birth date (YYYYMMDD)",
        PatientField::Sex => "sex code",
        PatientField::State => "US state",
        PatientField::Zip => "US ZIP code",
        PatientField::PhoneHome | PatientField::PhoneMobile => "phone number",
        PatientField::Email => "email address",
        PatientField::Language => "ISO 639 language code or name",
        PatientField::Race => "CDC race code or category",
        PatientField::Ethnicity => "CDC ethnicity code or category",
        _ => "value",
    };
    (source_of(field), kind)
}

/// The repetition of PID-11 that is the patient's address: of those that
/// hold one (more than a type), the first of the best rank by its type
/// (XAD.7, HL7 table 0190); none when every one is of a type never taken.
fn home_address(addresses: Field) -> Result<Option<Field>, String> {
    // Fields, not indexed ones, held: an index is large to move about, and
    // only the one taken is read further. Most messages never come here.
    let mut best: Option<(u8, Field)> = None;
    for rep in addresses.repetitions().filter(Field::has_value) {
        let Some(rank) = address_rank(rep.component(7).raw()) else { continue };
        if best.is_some_and(|(b, _)| rank >= b) || !holds_address(|n| rep.component(n)) {
            continue;
        }
        best = Some((rank, rep));
        if rank == 0 {
            break;
        }
    }
    Ok(best.map(|(_, rep)| rep))
}

/// Whether an XAD, by its components, holds an address: a type alone
/// (XAD.7) is none.
fn holds_address<'a>(component: impl Fn(usize) -> Component<'a>) -> bool {
    (1..=6).any(|n| !component(n).raw().trim_ascii().is_empty())
}

/// How much an address of XAD.7 type `kind` is wanted as the patient's
/// (lower first): home (H); legal (L) or permanent (P); current (C); no
/// type; mailing (M); any other (business, office, billing, vacation ...).
/// A bad address (BA), and the birth and origin ones (BDL, BR, N, F), are
/// never the patient's. Read from the raw bytes: table 0190's codes are
/// letters, which no escape or character set changes.
fn address_rank(kind: &[u8]) -> Option<u8> {
    // What nearly every sender writes, as it is.
    if kind == b"H" {
        return Some(0);
    }
    let kind = kind.trim_ascii();
    let is = |codes: &[&str]| codes.iter().any(|c| kind.eq_ignore_ascii_case(c.as_bytes()));
    if is(&["H"]) {
        Some(0)
    } else if is(&["L", "P"]) {
        Some(1)
    } else if is(&["C"]) {
        Some(2)
    } else if kind.is_empty() {
        Some(3)
    } else if is(&["M"]) {
        Some(4)
    } else if is(&["BA", "BDL", "BR", "N", "F"]) {
        None
    } else {
        Some(5)
    }
}

/// A coded value (CE or CWE) as `read` reads it into `slot`: its code
/// (component 1), else the text beside it (component 2), which is how a
/// sender's own code (HL7's tables 0005, 0189 and 0296 are the sender's)
/// is read. An answer that none was given (`read` gives it empty) leaves the
/// slot empty. False when the field holds a value neither reads as.
#[inline]
fn coded(
    f: Field,
    read: impl Fn(&str) -> Result<CompactString, String>,
    slot: &mut Option<CompactString>,
    at: [&str; 2],
) -> Result<bool, String> {
    let given = value(f.component(1).text(), at[0])?;
    let mut read_as = |v: Option<&str>| match v.map(&read) {
        Some(Ok(v)) => {
            *slot = Some(v).filter(|v| !v.is_empty());
            true
        }
        _ => false,
    };
    if read_as(given.as_deref()) {
        return Ok(true);
    }
    let name = value(f.component(2).text(), at[1])?;
    Ok(read_as(name.as_deref()) || (given.is_none() && name.is_none()))
}

/// An XCN repetition that is an NPI (XCN.9 or XCN.13 says "NPI") or not.
fn provider_id<'a>(f: Field<'a>, s: &MapSettings) -> Result<Option<Cow<'a, str>>, String> {
    for rep in f.repetitions() {
        let rep = rep.indexed();
        let authority = code(rep.component(9).subcomponent(1).text(), "XCN.9")?;
        let wanted = match s.provider {
            ProviderKind::Npi => {
                authority.eq_ignore_ascii_case("NPI")
                    || code(rep.component(13).text(), "XCN.13")?.eq_ignore_ascii_case("NPI")
            }
            // Under the EHR's own authority: not any ID that is not an NPI
            // (a DEA number, a state licence, another system's ID).
            // Its namespace ID, or its universal ID as for PID-3.
            ProviderKind::Ehr => {
                s.schema.ehr_id.authority_is(&authority)
                    || s.schema.ehr_id.authority_is(&code(rep.component(9).subcomponent(2).text(), "XCN.9")?)
            }
        };
        if wanted && let Some(id) = value(rep.component(1).text(), "XCN.1")? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn appointment(msg: &Message, s: &MapSettings, trigger: &str) -> Result<Appointment, String> {
    let sch = msg.segment(seg::SCH).ok_or("no SCH segment")?.indexed();
    // SCH-2 is the filler's (the EHR's) appointment ID; SCH-1 the placer's.
    let id = text(sch.field(2).component(1).text(), "SCH-2")?
        .or(text(sch.field(1).component(1).text(), "SCH-1")?)
        .ok_or("no appointment ID in SCH-2 or SCH-1")?;
    let status_text = text(sch.field(25).component(1).text(), "SCH-25")?;
    // What the message leaves empty, an update keeps (as for patients).
    let mut keep = FieldSet::default();
    // The status the event is itself, where it is one: a cancellation
    // (S15), a deletion (S17, stored as CANCELLED) or a no-show (S26).
    let event = match trigger {
        "S15" => Some((AppointmentStatus::Cancelled, "a cancellation")),
        "S17" => Some((AppointmentStatus::Cancelled, "a deletion")),
        "S26" => Some((AppointmentStatus::NoShow, "a no-show")),
        _ => None,
    };
    let status = match (status_text.as_deref().map(|t| (t, s.schema.status(t))), event) {
        (Some((_, Some(st))), Some((is, _))) if st == is => is,
        (None, Some((is, _))) => is,
        (Some((_, Some(st))), Some((_, what))) => {
            return Err(format!(
                "SIU^{trigger} ({what}) with SCH-25 (filler status) {}: the event and the status disagree",
                st.as_str()
            ));
        }
        (Some((_, Some(st))), None) => st,
        (Some((t, None)), _) if t.eq_ignore_ascii_case("BLOCKED") => {
            return Err(
                "SCH-25 (filler status) is Blocked: a blocked time slot, not a patient's appointment".into(),
            );
        }
        (Some((_, None)), _) => {
            return Err(format!(
                "SCH-25 (filler status) is not one ferry knows (BOOKED, ARRIVED, COMPLETED, UPDATE, CANCELLED, \
                 NOSHOW, PENDING or a code of HL7 table 0278); map the sender's code in the schema's \
                 [appointment_status] ({})",
                s.schema.path.display()
            ));
        }
        (None, None) if trigger == "S12" => AppointmentStatus::Booked,
        // An update (S13, a reschedule, or S14) that leaves the status empty
        // does not change it; an appointment first seen this way is an UPDATE.
        (None, None) => {
            keep.insert(AppointmentField::Status);
            AppointmentStatus::Update
        }
    };
    let mut said = |f: AppointmentField, is_said: bool| {
        if !is_said {
            keep.insert(f);
        }
    };
    let timing = timing(msg, &sch, s.time_zone)?;
    said(AppointmentField::Start, timing.start_said);
    said(AppointmentField::DurationMinutes, timing.minutes_said);
    let (ehr_id, mrn) = pid_ids(only_pid(msg)?.indexed(), s)?;
    let (patient_ehr_id, patient_mrn) = (Some(ehr_id.into()), mrn.map(CompactString::from));
    // The first AIP that names a provider by the job's kind of ID: a
    // message may list a nurse or a room under a local ID first.
    let (mut provider_said, mut provider) = (false, None);
    for aip in msg.segments_named(seg::AIP) {
        let field = aip.field(3);
        provider_said |= field.is_said();
        if let Some(id) = provider_id(field, s)? {
            provider = Some(CompactString::from(id));
            break;
        }
    }
    said(AppointmentField::ProviderId, provider_said);
    let provider_id = provider;
    let department = match (msg.segment(seg::AIL), msg.segment(seg::PV1)) {
        (Some(ail), _) => Some((ail.field(3), "AIL-3")),
        (None, Some(pv1)) => Some((pv1.field(3), "PV1-3")),
        (None, None) => None,
    };
    said(AppointmentField::DepartmentId, department.is_some_and(|(f, _)| f.is_said()));
    let department_id = match department {
        Some((f, at)) => text(f.component(1).text(), at)?,
        None => None,
    };
    said(AppointmentField::AppointmentType, sch.field(8).is_said() || sch.field(7).is_said());
    let appointment_type =
        text(sch.field(8).component(1).text(), "SCH-8")?.or(text(sch.field(7).component(1).text(), "SCH-7")?);
    let mut a = Appointment {
        id,
        patient_ehr_id,
        patient_mrn,
        provider_id,
        department_id,
        appointment_type,
        start: timing.start,
        duration_minutes: timing.minutes,
        status,
        keep_stored: keep,
        cleaned: FieldSet::default(),
    };
    // As for patients: only a message the splitter saw a byte or escape
    // in that may be a control character is looked at again.
    if msg.may_hold_controls() {
        a.cleaned = a.strip_controls();
        if a.id.is_empty() {
            return Err("the appointment ID (SCH-2 or SCH-1) holds only control characters".into());
        }
    }
    Ok(a)
}

/// When a SIU message says its appointment starts and how many minutes
/// it lasts, and whether it says each: an update that says neither keeps
/// what is stored.
struct Timing {
    start: Option<DateTime<Utc>>,
    minutes: Option<u32>,
    start_said: bool,
    minutes_said: bool,
}

/// A place a start may be read from, with the end that goes with it where
/// the place has one; each named for its reasons.
struct StartAt<'a> {
    start: (Component<'a>, &'static str),
    end: Option<(Component<'a>, &'static str)>,
}

/// A place a duration may be read from: the amount and its units.
struct LengthAt<'a> {
    amount: (Component<'a>, &'static str),
    units: (SubComponent<'a>, &'static str),
}

/// The appointment's start and duration, from wherever the sender's HL7
/// version puts them, each from the first place that has one:
///
/// - start: SCH-11.4 (the TQ start, up to v2.6), TQ1-7 (v2.5 on; SCH-11 is
///   withdrawn in v2.7), else the first resource's: AIS-4, AIG-8, AIL-6,
///   AIP-6;
/// - duration: SCH-9 in SCH-10's units, TQ1-6 (a quantity and its units),
///   the first resource's (AIS-7 in AIS-8's units, AIG-11/12, AIL-9/10,
///   AIP-9/10), else the end less the start where the start came with one
///   (SCH-11.5, TQ1-8).
///
/// Units left empty are minutes, as senders mean them.
fn timing(msg: &Message, sch: &IndexedSegment, tz: Tz) -> Result<Timing, String> {
    let sch11 = sch.field(11);
    let (sch9, sch10) = (sch.field(9), sch.field(10));
    let mut starts = vec![StartAt {
        start: (sch11.component(4), "SCH-11.4"),
        end: Some((sch11.component(5), "SCH-11.5")),
    }];
    let mut lengths = vec![LengthAt {
        amount: (sch9.component(1), "SCH-9"),
        units: (sch10.component(1).subcomponent(1), "SCH-10"),
    }];
    let mut start_said = sch11.is_said();
    let mut minutes_said = sch9.is_said() || !sch11.component(5).is_empty();
    if let Some(tq1) = msg.segment(seg::TQ1) {
        let (service, start, end) = (tq1.field(6), tq1.field(7), tq1.field(8));
        starts.push(StartAt { start: (start.component(1), "TQ1-7"), end: Some((end.component(1), "TQ1-8")) });
        lengths.push(LengthAt {
            amount: (service.component(1), "TQ1-6.1"),
            units: (service.component(2).subcomponent(1), "TQ1-6.2"),
        });
        start_said |= start.is_said();
        minutes_said |= service.is_said() || end.is_said();
    }
    for (id, start_n, start_at, amount_at, units_at) in [
        (seg::AIS, 4, "AIS-4", "AIS-7", "AIS-8"),
        (seg::AIG, 8, "AIG-8", "AIG-11", "AIG-12"),
        (seg::AIL, 6, "AIL-6", "AIL-9", "AIL-10"),
        (seg::AIP, 6, "AIP-6", "AIP-9", "AIP-10"),
    ] {
        let Some(resource) = msg.segment(id) else { continue };
        // The duration follows the start, after its offset and units.
        let (start, amount, units) =
            (resource.field(start_n), resource.field(start_n + 3), resource.field(start_n + 4));
        starts.push(StartAt { start: (start.component(1), start_at), end: None });
        lengths.push(LengthAt {
            amount: (amount.component(1), amount_at),
            units: (units.component(1).subcomponent(1), units_at),
        });
        start_said |= start.is_said();
        minutes_said |= amount.is_said();
    }

    let mut timing = Timing { start: None, minutes: None, start_said, minutes_said };
    let mut end = None;
    for StartAt { start: (start, at), end: end_at } in starts {
        let Some(t) = text(start.text(), at)? else { continue };
        timing.start = Some(parse_dtm(&t, tz).map_err(|e| format!("bad start time in {at}: {e}"))?);
        if let Some((c, at)) = end_at
            && let Some(t) = text(c.text(), at)?
        {
            end = Some((parse_dtm(&t, tz).map_err(|e| format!("bad end time in {at}: {e}"))?, at));
        }
        break;
    }
    for LengthAt { amount: (amount, at), units: (units, units_at) } in lengths {
        let Some(n) = text(amount.text(), at)? else { continue };
        let n: u32 = n.parse().map_err(|_| format!("{at} (duration) is not a whole number"))?;
        let unit = text(units.text(), units_at)?.unwrap_or_else(|| "MIN".into());
        let minutes = match unit.to_ascii_uppercase().as_str() {
            "MIN" | "M" | "MINUTE" | "MINUTES" => Some(n),
            "H" | "HR" | "HOUR" | "HOURS" => n.checked_mul(60),
            "S" | "SEC" | "SECOND" | "SECONDS" => Some(n.div_ceil(60)),
            _ => return Err(format!("{units_at} (duration units) is not MIN, H or S")),
        };
        timing.minutes = Some(minutes.ok_or_else(|| format!("{at} (duration) is too large"))?);
        return Ok(timing);
    }
    if let (Some(start), Some((end, at))) = (timing.start, end) {
        let seconds = u64::try_from((end - start).num_seconds())
            .map_err(|_| format!("{at} (the end) is before the start"))?;
        timing.minutes = Some(
            u32::try_from(seconds.div_ceil(60))
                .map_err(|_| format!("{at} (the end) is too far after the start"))?,
        );
    }
    Ok(timing)
}

/// A DTM of a year (YYYY) or a month (YYYYMM) only.
fn is_partial_date(t: &str) -> bool {
    let b = t.as_bytes();
    b.iter().all(u8::is_ascii_digit)
        && match b.len() {
            4 => true,
            6 => (1..=12).contains(&number(&b[4..])),
            _ => false,
        }
}

/// A birth date from a DTM: at least YYYYMMDD; any time part is ignored.
/// The whole value must be a DTM: "198001021" or "19800102XYZ" is not a
/// birth date with something after it, but a value to be fixed.
pub fn parse_date(t: &str) -> Result<NaiveDate, String> {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits < 8 {
        return Err(format!("expected YYYYMMDD, got {digits} digit(s)"));
    }
    read_dtm(t).map(|(local, _)| local.date())
}

/// A birth date (PID-7, YYYYMMDD at least) on or before `today` and not
/// before 1850, as flat files' dates are checked.
fn birth_date(t: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let d = parse_date(t)?;
    // The reason names no value: it is shown by `ferry queue` and logged by
    // a retry, and a birth date in the future is often the real one mistyped.
    if d.year() < EARLIEST_YEAR {
        return Err(format!("before {EARLIEST_YEAR}"));
    }
    if d > today {
        return Err("in the future".into());
    }
    Ok(d)
}

/// The number written by ASCII digits (the caller has checked they are).
fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
}

/// YYYYMMDD, eight ASCII digits, as a date if there is one.
fn ymd(d: &[u8]) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(number(&d[..4]) as i32, number(&d[4..6]), number(&d[6..8]))
}

/// An HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]) as UTC. Without an
/// offset the time is in `tz`. A local time that does not exist there (the
/// spring-forward gap) is an error, and so is one that exists twice (the
/// hour repeated when daylight saving ends): taking either would be a
/// guess, an hour off for an appointment, and for a message's time an
/// order that may be wrong.
pub fn parse_dtm(t: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    match read_dtm(t)? {
        (local, Some(fixed)) => fixed
            .from_local_datetime(&local)
            .single()
            .map(|d| d.with_timezone(&Utc))
            .ok_or_else(|| "invalid time".into()),
        (local, None) => match tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(d) => Ok(d.with_timezone(&Utc)),
            // The time itself is left out: reasons name fields, not values.
            chrono::LocalResult::Ambiguous(..) => Err(format!(
                "that local time occurs twice in {tz} (the hour repeated when daylight saving ends); \
                 the sender must give its offset (+HHMM or -HHMM)"
            )),
            chrono::LocalResult::None => {
                Err(format!("that local time does not exist in {tz} (the daylight-saving gap)"))
            }
        },
    }
}

/// The leading digits of a fraction of a second (HL7 writes up to four)
/// as nanoseconds; digits past the ninth are below what a time holds.
fn fraction_nanos(fraction: &[u8]) -> u32 {
    let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).take(9);
    let (value, count) = digits.fold((0, 0), |(v, n), &d| (v * 10 + u32::from(d - b'0'), n + 1));
    value * 10u32.pow(9 - count)
}

/// The local time a DTM writes and its offset, if it has one.
fn read_dtm(t: &str) -> Result<(NaiveDateTime, Option<FixedOffset>), String> {
    // Read as bytes: every character that matters is ASCII, and the many
    // well-formed times are then read without decoding a character.
    let t = trim(t).as_bytes();
    // The digits, then a fraction of a second after a '.' (its leading
    // digits are read; whatever follows them is ignored), then the offset
    // from its sign on.
    let digits = t.iter().take_while(|b| b.is_ascii_digit()).count();
    let (main, rest) = t.split_at(digits);
    let (offset_at, nanos) = match rest.first() {
        None | Some(b'+' | b'-') => (digits, 0),
        Some(b'.') => (
            rest.iter().position(|&b| b == b'+' || b == b'-').map_or(t.len(), |i| digits + i),
            fraction_nanos(&rest[1..]),
        ),
        Some(_) => return Err("expected YYYYMMDD[HH[MM[SS]]]".into()),
    };
    if !matches!(main.len(), 8 | 10 | 12 | 14) {
        return Err("expected YYYYMMDD[HH[MM[SS]]]".into());
    }
    let date = ymd(main).ok_or("not a calendar date")?;
    let num = |r: std::ops::Range<usize>| main.get(r).map_or(0, number);
    // A fraction counts only after the seconds it divides.
    let nanos = if main.len() == 14 { nanos } else { 0 };
    let time = NaiveTime::from_hms_nano_opt(num(8..10), num(10..12), num(12..14), nanos)
        .ok_or("not a valid time of day")?;
    let local = NaiveDateTime::new(date, time);
    let Some(o) = t.get(offset_at..).filter(|o| !o.is_empty()) else { return Ok((local, None)) };
    let sign = if o[0] == b'-' { -1 } else { 1 };
    let digits = &o[1..];
    if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) {
        return Err("time zone offset must be +HHMM or -HHMM".into());
    }
    let (hours, minutes) = (number(&digits[..2]), number(&digits[2..]));
    if minutes >= 60 {
        return Err("time zone offset minutes must be below 60".into());
    }
    let secs = sign * (hours * 3600 + minutes * 60) as i32;
    let fixed = FixedOffset::east_opt(secs).ok_or("time zone offset out of range")?;
    Ok((local, Some(fixed)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn schema() -> Hl7Schema {
        Hl7Schema::parse(
            Path::new("s.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"ATHENA\"\ntype = \"PI\"\n\
             [ids.practice_mrn]\nauthority = \"PRACTICE\"\ntype = \"MR\"\n",
        )
        .unwrap()
    }

    fn settings(s: &Hl7Schema) -> MapSettings<'_> {
        MapSettings::new(s, ProviderKind::Npi, chrono_tz::America::New_York)
    }

    /// The patient `text` (an ADT message) maps to.
    fn patient_of(text: &str, settings: &MapSettings) -> Box<Patient> {
        match map(&Message::parse(text.as_bytes()).unwrap(), settings) {
            Ok(Mapped::Patient(p)) => p,
            other => panic!("not a patient: {other:?}"),
        }
    }

    /// The appointment `text` (an SIU message) maps to.
    fn appointment_of(text: &str, settings: &MapSettings) -> Box<Appointment> {
        match map(&Message::parse(text.as_bytes()).unwrap(), settings) {
            Ok(Mapped::Appointment(a)) => a,
            other => panic!("not an appointment: {other:?}"),
        }
    }

    const A28: &str = "MSH|^~\\&|ATHENA|CLINIC|FERRY|PRACTICE|20261120083000||ADT^A28^ADT_A05|MSG0001|P|2.5.1\r\
EVN|A28|20261120082959\r\
PID|1||E10001^^^ATHENA^PI~0042^^^PRACTICE^MR||O\\S\\Brien^Mary^Ann^^^^L||19800102|F||2106-3^White^CDCREC|12 Main St^Apt 4^Boston^MA^02134||^PRN^PH^^^617^5550100~^ORN^CP^^^617^5550101~^NET^Internet^mary@example.com||eng^English^ISO6392|||||||2186-5^Not Hispanic^CDCREC\r\
PD1|||Clinic|1234567890^Smith^John^^^^^^NPI~P42^Smith^John^^^^^^ATHENA\r";

    /// A sender that leaves PID-3.4 empty names its IDs by type alone; a
    /// second ID of the type is still an error, whatever its authority.
    #[test]
    fn ids_without_an_assigning_authority_are_read_by_type() {
        let by_type = Hl7Schema::parse(
            Path::new("s.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\ntype = \"PI\"\n[ids.practice_mrn]\ntype = \"MR\"\n",
        )
        .unwrap();
        let pid3 = |ids: &str| A28.replacen("E10001^^^ATHENA^PI~0042^^^PRACTICE^MR", ids, 1);
        let p = patient_of(&pid3("E10001^^^^PI~0042^^^^MR"), &settings(&by_type));
        assert_eq!((p.ehr_id.as_deref(), p.practice_mrn.as_deref()), (Some("E10001"), Some("0042")));
        let p = patient_of(A28, &settings(&by_type));
        assert_eq!(
            (p.ehr_id.as_deref(), p.practice_mrn.as_deref()),
            (Some("E10001"), Some("0042")),
            "any authority"
        );
        let err =
            map(&Message::parse(pid3("E10001^^^^PI~E7^^^OTHER^PI").as_bytes()).unwrap(), &settings(&by_type))
                .unwrap_err();
        assert!(err.starts_with("PID-3 holds two different IDs with type PI"), "{err}");
        // The shipped rule, by authority, does not take an ID without one.
        let err =
            map(&Message::parse(pid3("E10001^^^^PI").as_bytes()).unwrap(), &settings(&schema())).unwrap_err();
        assert!(err.starts_with("PID-3 has no identifier with assigning authority ATHENA"), "{err}");
    }

    /// HL7 v2.7's truncation character (the fifth of MSH-2) at the end of a
    /// value says the sender cut it short: such a value is not loaded as
    /// if it were whole. Escaped (`\P\`), or without one in MSH-2, `#` is
    /// a character like any other.
    #[test]
    fn a_value_the_sender_cut_short_is_an_error() {
        let s = schema();
        let v27 = A28.replacen("MSH|^~\\&|", "MSH|^~\\&#|", 1);
        let mapped = |text: &str| map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s));
        assert_eq!(patient_of(&v27, &settings(&s)).city.as_deref(), Some("Boston"), "no value cut");
        for (cut, at) in [("Bost#^MA", "PID-11.3"), ("E10#^^^ATHENA^PI", "PID-3"), ("Mary^Ann#^", "PID-5.3")]
        {
            let whole = match at {
                "PID-11.3" => "Boston^MA",
                "PID-3" => "E10001^^^ATHENA^PI",
                _ => "Mary^Ann^",
            };
            let err = mapped(&v27.replacen(whole, cut, 1)).unwrap_err();
            assert!(err.starts_with(at) && err.contains("cut the value short"), "{at}: {err}");
        }
        let p = patient_of(&v27.replacen("Boston^MA", "Bost\\P\\^MA", 1), &settings(&s));
        assert_eq!(p.city.as_deref(), Some("Bost#"), "escaped");
        let p = patient_of(&v27.replacen("Boston^MA", "Bo#ston^MA", 1), &settings(&s));
        assert_eq!(p.city.as_deref(), Some("Bo#ston"), "not at the end");
        let p = patient_of(&A28.replacen("Boston^MA", "Boston#^MA", 1), &settings(&s));
        assert_eq!(p.city.as_deref(), Some("Boston#"), "MSH-2 has no truncation character");
    }

    /// What would leave unclear which patient, or which chart, a message is
    /// about is an error: a second PID, or a second ID under the authority
    /// and type of the EHR's ID or of the practice MRN. The same ID twice,
    /// or IDs of other kinds, are not.
    #[test]
    fn two_patients_or_two_ids_of_one_kind_are_errors() {
        let s = schema();
        let mapped = |text: &str| map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s));
        let two = format!("{A28}PID|2||E10002^^^ATHENA^PI||Lee^Bo\r");
        assert!(mapped(&two).unwrap_err().starts_with("more than one PID segment"));
        let ehr = A28.replace("E10001^^^ATHENA^PI~", "E10001^^^ATHENA^PI~E10009^^^ATHENA^PI~");
        let err = mapped(&ehr).unwrap_err();
        assert!(err.starts_with("PID-3 holds two different IDs with assigning authority ATHENA"), "{err}");
        assert!(err.contains("(the EHR's patient ID)") && !err.contains("E1000"), "{err}");
        let mrn = A28.replace("0042^^^PRACTICE^MR", "0042^^^PRACTICE^MR~0043^^^PRACTICE^MR");
        let err = mapped(&mrn).unwrap_err();
        assert!(
            err.contains("(the practice MRN): one patient with two charts?") && !err.contains("0043"),
            "{err}"
        );
        let same = A28.replace("0042^^^PRACTICE^MR", "0042^^^PRACTICE^MR~0042^^^PRACTICE^MR~123^^^SSA^SS");
        let Mapped::Patient(p) = mapped(&same).unwrap() else { panic!("not a patient") };
        assert_eq!(p.practice_mrn.as_deref(), Some("0042"));
        let siu = "MSH|^~\\&|ATHENA|C|F|P|20261120090000||SIU^S12|M1|P|2.5.1\r\
SCH||A1|||||Visit|FU|30|MIN|^^^20261201093000||||||||||||||BOOKED\r\
PID|1||E1^^^ATHENA^PI\rPID|2||E2^^^ATHENA^PI\r";
        assert!(mapped(siu).unwrap_err().starts_with("more than one PID segment"), "a group appointment");
    }

    /// An assigning authority is matched by its namespace ID (HD.1) or by
    /// its universal ID (HD.2, an OID), as senders that follow IHE send it.
    #[test]
    fn an_assigning_authority_may_be_named_by_its_oid() {
        let s = Hl7Schema::parse(
            Path::new("oid.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"2.16.840.1.113883.3.564\"\ntype = \"PI\"\n\
             [ids.practice_mrn]\nauthority = \"PRACTICE\"\ntype = \"MR\"\n",
        )
        .unwrap();
        let ids = |pid3: &str| {
            let text = A28.replace("E10001^^^ATHENA^PI~0042^^^PRACTICE^MR", pid3);
            match map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s)) {
                Ok(Mapped::Patient(p)) => {
                    Ok((p.ehr_id.unwrap().to_string(), p.practice_mrn.map(|m| m.to_string())))
                }
                Ok(_) => panic!("not a patient"),
                Err(e) => Err(e),
            }
        };
        let both = Ok(("E7".to_string(), Some("0042".to_string())));
        assert_eq!(ids("E7^^^&2.16.840.1.113883.3.564&ISO^PI~0042^^^PRACTICE&1.2.3&ISO^MR"), both);
        assert_eq!(ids("E7^^^ATHENA&2.16.840.1.113883.3.564&ISO^PI~0042^^^PRACTICE^MR"), both);
        // The OID with another type, or in another component, is not the rule's.
        let err = ids("E7^^^&2.16.840.1.113883.3.564&ISO^MR~0042^^^PRACTICE^MR").unwrap_err();
        assert!(err.starts_with("PID-3 has no identifier with assigning authority 2.16.840"), "{err}");
        let err = ids("E7^^^X^PI^&2.16.840.1.113883.3.564&ISO").unwrap_err();
        assert!(err.starts_with("PID-3 has no identifier"), "{err}");
        // Two IDs under the one authority, named once each way, are two.
        let err = ids("E7^^^&2.16.840.1.113883.3.564&ISO^PI~E8^^^2.16.840.1.113883.3.564^PI").unwrap_err();
        assert!(err.starts_with("PID-3 holds two different IDs"), "{err}");
    }

    /// PID-15 is stored as ISO 639-2, whatever form the sender codes it in;
    /// a sender's own code (table 0296 is the sender's) is read by the
    /// language's name beside it.
    #[test]
    fn pid15_is_read_as_an_iso_639_2_code() {
        let s = schema();
        let language = |pid15: &str| {
            let text = A28.replace("eng^English^ISO6392", pid15);
            let p = patient_of(&text, &settings(&s));
            let dropped = p.dropped.contains(PatientField::Language);
            let kept = p.keep_stored.contains(PatientField::Language);
            (p.language.map(|l| l.to_string()), dropped, kept)
        };
        let eng = (Some("eng".to_string()), false, false);
        for pid15 in
            ["eng^English^ISO6392", "ENG", "en^English^ISO6391", "en-US", "^English", "1^English^HL70296"]
        {
            assert_eq!(language(pid15), eng, "{pid15}");
        }
        assert_eq!(language("fre^French^ISO6392B").0.as_deref(), Some("fra"));
        assert_eq!(language("2^Spanish^HL70296").0.as_deref(), Some("spa"));
        // Neither the code nor the name is a language: dropped, with a warning.
        assert_eq!(language("99^Martian^L"), (None, true, false));
        assert_eq!(dropped_from(PatientField::Language), ("PID-15", "ISO 639 language code or name"));
        // HL7's null clears it; an empty field keeps the stored one.
        assert_eq!(language("\"\""), (None, false, false));
        assert_eq!(language(""), (None, false, true));
    }

    /// PID-10 and PID-22 are stored as CDC codes, from the code or, for a
    /// sender's own code, from the category's name beside it.
    #[test]
    fn race_and_ethnicity_are_read_as_cdc_codes() {
        let s = schema();
        let read = |pid10: &str, pid22: &str| {
            let text = A28.replace("2106-3^White^CDCREC", pid10).replace("2186-5^Not Hispanic^CDCREC", pid22);
            let p = patient_of(&text, &settings(&s));
            let dropped = [PatientField::Race, PatientField::Ethnicity].map(|f| p.dropped.contains(f));
            (p.race.map(|r| r.to_string()), p.ethnicity.map(|e| e.to_string()), dropped)
        };
        let codes =
            |race: &str, ethnicity: &str| (Some(race.to_string()), Some(ethnicity.to_string()), [false; 2]);
        assert_eq!(read("2106-3^White^CDCREC", "2186-5^Not Hispanic^CDCREC"), codes("2106-3", "2186-5"));
        assert_eq!(read("W^White^HL70005", "H^Hispanic or Latino^HL70189"), codes("2106-3", "2135-2"));
        assert_eq!(read("^Black or African American", "N"), codes("2054-5", "2186-5"));
        // An answer that none was given is no value, and no warning.
        assert_eq!(read("UNK^Unknown^NULLFL", "U^Unknown^HL70189"), (None, None, [false; 2]));
        // Neither the code nor the name: dropped, with a warning.
        assert_eq!(read("X^Martian^L", "2186-5"), (None, Some("2186-5".to_string()), [true, false]));
        // A code with a wrong check digit, or of the other kind, is read by its name.
        assert_eq!(read("2106-4^White^CDCREC", "2106-3^Not Hispanic"), codes("2106-3", "2186-5"));
        assert_eq!(read("2135-2", "2106-3"), (None, None, [true, true]));
    }

    /// Of several addresses the home one is the patient's, whatever its
    /// place; a bad address never is.
    #[test]
    fn the_home_address_is_taken_before_others() {
        let s = schema();
        let address = |pid11: &str| {
            let text = A28.replace("12 Main St^Apt 4^Boston^MA^02134", pid11);
            let p = patient_of(&text, &settings(&s));
            let kept = p.keep_stored.contains(PatientField::Address1);
            (p.address1.map(|a| a.to_string()), p.zip.map(|z| z.to_string()), kept)
        };
        let at = |street: &str, zip: &str| (Some(street.to_string()), Some(zip.to_string()), false);
        assert_eq!(address("12 Main St^Apt 4^Boston^MA^02134"), at("12 Main St", "02134"), "one, untyped");
        assert_eq!(
            address("PO Box 9^^Boston^MA^02101^USA^M~12 Main St^^Boston^MA^02134^USA^H"),
            at("12 Main St", "02134"),
            "home after mailing"
        );
        assert_eq!(
            address("1 Work Rd^^Boston^MA^02110^USA^B~PO Box 9^^Boston^MA^02101^USA^M"),
            at("PO Box 9", "02101"),
            "mailing before business"
        );
        assert_eq!(
            address("^^^^^^^H~1 Old Rd^^Boston^MA^02111^USA^BA~2 New Rd^^Boston^MA^02112^USA"),
            at("2 New Rd", "02112"),
            "an empty home and a bad address are passed over"
        );
        // Only a bad address: none is the patient's, and the stored one is cleared.
        assert_eq!(address("1 Old Rd^^Boston^MA^02111^USA^BA"), (None, None, false));
    }

    #[test]
    fn adt_a28_maps_a_patient() {
        let s = schema();
        let msg = Message::parse(A28.as_bytes()).unwrap();
        let Mapped::Patient(p) = map(&msg, &settings(&s)).unwrap() else { panic!("not a patient") };
        assert_eq!(p.ehr_id.as_deref(), Some("E10001"));
        assert_eq!(p.practice_mrn.as_deref(), Some("0042"), "leading zeros kept");
        assert_eq!(p.last_name.as_deref(), Some("O^Brien"), "\\S\\ unescaped");
        assert_eq!((p.first_name.as_deref(), p.middle_name.as_deref()), (Some("Mary"), Some("Ann")));
        assert_eq!(p.birth_date, NaiveDate::from_ymd_opt(1980, 1, 2));
        assert_eq!(p.sex, Some(Sex::F));
        assert_eq!(p.race.as_deref(), Some("2106-3"));
        assert_eq!(p.ethnicity.as_deref(), Some("2186-5"));
        assert_eq!(p.language.as_deref(), Some("eng"));
        assert_eq!((p.address1.as_deref(), p.address2.as_deref()), (Some("12 Main St"), Some("Apt 4")));
        assert_eq!(
            (p.city.as_deref(), p.state.as_deref(), p.zip.as_deref()),
            (Some("Boston"), Some("MA"), Some("02134"))
        );
        assert_eq!(p.phone_home.as_deref(), Some("+16175550100"));
        assert_eq!(p.phone_mobile.as_deref(), Some("+16175550101"));
        assert_eq!(p.email.as_deref(), Some("mary@example.com"));
        assert_eq!(p.provider_id.as_deref(), Some("1234567890"));
        let ehr = MapSettings { provider: ProviderKind::Ehr, ..settings(&s) };
        let Mapped::Patient(p) = map(&msg, &ehr).unwrap() else { panic!() };
        assert_eq!(p.provider_id.as_deref(), Some("P42"));
        // The EHR's provider ID is the one under the EHR's authority, not
        // the first ID that is not an NPI.
        let dea = A28.replace("PD1|||Clinic|", "PD1|||Clinic|AR1234563^Smith^John^^^^^^DEA~");
        let Mapped::Patient(p) = map(&Message::parse(dea.as_bytes()).unwrap(), &ehr).unwrap() else {
            panic!()
        };
        assert_eq!(p.provider_id.as_deref(), Some("P42"));
        // XCN.9 named by its universal ID, as PID-3.4 may be.
        let oid = Hl7Schema::parse(
            Path::new("oid.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"1.2.3\"\ntype = \"PI\"\n",
        )
        .unwrap();
        let by_oid = A28
            .replace("E10001^^^ATHENA^PI", "E10001^^^&1.2.3&ISO^PI")
            .replace("^^^^^^ATHENA\r", "^^^^^^&1.2.3&ISO\r");
        let ehr_oid = MapSettings { provider: ProviderKind::Ehr, ..settings(&oid) };
        let Mapped::Patient(p) = map(&Message::parse(by_oid.as_bytes()).unwrap(), &ehr_oid).unwrap() else {
            panic!()
        };
        assert_eq!(p.provider_id.as_deref(), Some("P42"));
        let h = header(&msg, chrono_tz::America::New_York);
        assert_eq!(h.event, "ADT^A28");
        assert_eq!(h.control_id.as_deref(), Some("MSG0001"));
        assert_eq!(h.time.unwrap().to_rfc3339(), "2026-11-20T13:29:59+00:00", "EVN-2 in New York time");
    }

    #[test]
    fn errors_name_the_problem() {
        let s = schema();
        let cases = [
            (A28.replace("19800102", "19801302"), "bad date in PID-7"),
            (
                A28.replace("^^^ATHENA^PI", "^^^OTHER^PI"),
                "PID-3 has no identifier with assigning authority ATHENA",
            ),
            (A28.replace("ADT^A28", "ADT^A99"), "unknown event ADT^A99"),
            (
                A28.split('\r').filter(|s| !s.starts_with("PID")).collect::<Vec<_>>().join("\r"),
                "no PID segment",
            ),
        ];
        for (text, want) in cases {
            let msg = Message::parse(text.as_bytes()).unwrap();
            let err = map(&msg, &settings(&s)).unwrap_err();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn a_birth_year_or_month_alone_is_dropped_not_an_error() {
        let s = schema();
        for partial in ["1980", "198001"] {
            let text = A28.replace("19800102", partial);
            let Mapped::Patient(p) = map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s)).unwrap()
            else {
                panic!("a patient")
            };
            assert_eq!(p.birth_date, None);
            assert!(p.dropped.contains(PatientField::BirthDate), "{partial}");
        }
        for bad in ["198013", "19801", "19"] {
            let text = A28.replace("19800102", bad);
            let err = map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s)).unwrap_err();
            assert!(err.contains("bad date in PID-7"), "{bad}: {err}");
        }
    }

    /// PID-8 from v2.7 is a CWE: its code is component 1, and the name
    /// beside it is read when the code is not.
    #[test]
    fn pid_8_is_read_as_a_code_or_by_its_name() {
        let s = schema();
        for (given, want, dropped) in [
            ("F^Female^HL70001", Some(Sex::F), false),
            ("M", Some(Sex::M), false),
            ("^Male", Some(Sex::M), false),
            ("99^Female^L", Some(Sex::F), false),
            ("Z^Zebra", None, true),
            ("\"\"", None, false),
        ] {
            let p = patient_of(&A28.replace("|19800102|F|", &format!("|19800102|{given}|")), &settings(&s));
            assert_eq!((p.sex, p.dropped.contains(PatientField::Sex)), (want, dropped), "{given}");
        }
    }

    /// Birth dates are checked as flat files' are: none in the future (in
    /// the job's time zone) or before 1850.
    #[test]
    fn a_birth_date_in_the_future_or_before_1850_is_an_error() {
        let s = schema();
        let today = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let settings = MapSettings { today, ..settings(&s) };
        for (dob, err) in [("20261121", "in the future"), ("18491231", "before 1850")] {
            let text = A28.replace("19800102", dob);
            let got = map(&Message::parse(text.as_bytes()).unwrap(), &settings).unwrap_err();
            assert_eq!(got, format!("bad date in PID-7: {err}"));
        }
        for dob in ["20261120", "18500101", "202611200930-0500"] {
            let p = patient_of(&A28.replace("19800102", dob), &settings);
            assert_eq!(
                p.birth_date.map(|d| d.to_string()),
                Some(format!("{}-{}-{}", &dob[..4], &dob[4..6], &dob[6..8]))
            );
        }
    }

    #[test]
    fn siu_maps_an_appointment_in_utc() {
        let s = schema();
        let text = "MSH|^~\\&|ATHENA|CLINIC|FERRY|PRACTICE|20261120090000||SIU^S12|MSG0002|P|2.5.1\r\
SCH|P1|A5001|||||Follow-up|FU^Follow up|30|MIN|^^^20261201093000||||||||||||||BOOKED\r\
PID|1||E10001^^^ATHENA^PI~0042^^^PRACTICE^MR||Lee^Ann||19800102|F\r\
AIL|1||DEP7^^^Main Clinic\r\
AIP|1||1234567890^Smith^John^^^^^^NPI\r";
        let msg = Message::parse(text.as_bytes()).unwrap();
        let Mapped::Appointment(a) = map(&msg, &settings(&s)).unwrap() else { panic!("not an appointment") };
        assert_eq!(a.id, "A5001");
        assert_eq!(a.status, AppointmentStatus::Booked);
        assert_eq!(a.start.unwrap().to_rfc3339(), "2026-12-01T14:30:00+00:00");
        assert_eq!(a.duration_minutes, Some(30));
        assert_eq!(a.patient_ehr_id.as_deref(), Some("E10001"));
        assert_eq!(a.patient_mrn.as_deref(), Some("0042"));
        assert_eq!(a.provider_id.as_deref(), Some("1234567890"));
        assert_eq!(a.department_id.as_deref(), Some("DEP7"));
        assert_eq!(a.appointment_type.as_deref(), Some("FU"));
        let cancelled = text.replace("SIU^S12", "SIU^S15").replace("BOOKED", "CANCELLED");
        let a = appointment_of(&cancelled, &settings(&s));
        assert_eq!(a.status, AppointmentStatus::Cancelled);

        // The provider is the first AIP's with an ID of the job's kind.
        let nurse_first = text.replace(
            "AIP|1||1234567890^Smith^John^^^^^^NPI",
            "AIP|1||N7^Nurse^Ann^^^^^^LOCAL\rAIP|2||1234567890^Smith^John^^^^^^NPI\rAIP|3||1999999992^Doe^^^^^^^NPI",
        );
        let a = appointment_of(&nurse_first, &settings(&s));
        assert_eq!(a.provider_id.as_deref(), Some("1234567890"));
        assert!(!a.keep_stored.contains(AppointmentField::ProviderId));
        let only_nurse = text.replace("1234567890^Smith^John^^^^^^NPI", "N7^Nurse^Ann^^^^^^LOCAL");
        let a = appointment_of(&only_nurse, &settings(&s));
        assert_eq!(a.provider_id, None);

        // SCH-11 empty: the start is the first resource's that has one.
        let later = text.replace("^^^20261201093000", "").replace(
            "AIP|1||1234567890^Smith^John^^^^^^NPI",
            "AIP|1||1234567890^Smith^John^^^^^^NPI|||20261201100000",
        );
        let a = appointment_of(&later, &settings(&s));
        assert_eq!(a.start.unwrap().to_rfc3339(), "2026-12-01T15:00:00+00:00", "AIL has none; AIP-6 has");
        let huge = text.replace("|30|MIN|", "|71582789|H|");
        let err = map(&Message::parse(huge.as_bytes()).unwrap(), &settings(&s)).unwrap_err();
        assert!(err.contains("SCH-9 (duration) is too large"), "{err}");
    }

    /// The other SIU events peers of the EHR send: S13 (a reschedule of the
    /// same appointment) as an update, S17 (a deletion) as a cancellation,
    /// S26 (the patient did not show) as NOSHOW; a status that disagrees
    /// with the event is a reason.
    #[test]
    fn siu_s13_s17_and_s26_are_read() {
        let s = schema();
        let siu = |event: &str, status: &str| {
            format!(
                "MSH|^~\\&|EPIC|CLINIC|FERRY|PRACTICE|20261120090000||SIU^{event}|M1|P|2.5.1\r\
SCH|P1|A5001|||||Follow-up|FU|30|MIN|^^^20261201093000||||||||||||||{status}\r\
PID|1||E10001^^^ATHENA^PI||Lee^Ann\r"
            )
        };
        let status = |event: &str, status: &str| match map(
            &Message::parse(siu(event, status).as_bytes()).unwrap(),
            &settings(&s),
        ) {
            Ok(Mapped::Appointment(a)) => Ok((a.status, a.keep_stored.contains(AppointmentField::Status))),
            Ok(_) => panic!("not an appointment"),
            Err(e) => Err(e),
        };
        use AppointmentStatus::{Arrived, Booked, Cancelled, NoShow, Update};
        assert_eq!(status("S13", ""), Ok((Update, true)), "a reschedule keeps the stored status");
        assert_eq!(status("S13", "BOOKED"), Ok((Booked, false)));
        assert_eq!(status("S14", "ARRIVED"), Ok((Arrived, false)));
        for (event, is) in [("S15", Cancelled), ("S17", Cancelled), ("S26", NoShow)] {
            assert_eq!(status(event, ""), Ok((is, false)), "{event}");
            assert_eq!(status(event, is.as_str()), Ok((is, false)), "{event}");
        }
        assert_eq!(status("S17", "Deleted"), Ok((Cancelled, false)), "table 0278's Deleted");
        assert_eq!(status("S26", "Noshow"), Ok((NoShow, false)));
        let err = status("S26", "BOOKED").unwrap_err();
        assert!(err.starts_with("SIU^S26 (a no-show) with SCH-25 (filler status) BOOKED"), "{err}");
        let err = status("S17", "ARRIVED").unwrap_err();
        assert!(err.starts_with("SIU^S17 (a deletion) with SCH-25 (filler status) ARRIVED"), "{err}");
        let err = status("S16", "").unwrap_err();
        assert!(err.starts_with("unknown event SIU^S16") && err.contains("S26"), "{err}");
    }

    /// Each HL7 version's place for the start and the duration: SCH-11 up
    /// to v2.6, TQ1 from v2.5 (SCH-11 is withdrawn in v2.7), and the
    /// resources' own; the first place with a value gives it.
    #[test]
    fn siu_timing_is_read_from_tq1_and_the_resources() {
        let s = schema();
        let siu = |sch_timing: &str, rest: &str| {
            format!(
                "MSH|^~\\&|ATHENA|CLINIC|FERRY|PRACTICE|20261120090000||SIU^S12|M1|P|2.7\r\
SCH|P1|A5001|||||Follow-up|FU^Follow up|{sch_timing}||||||||||||||BOOKED\r\
{rest}PID|1||E10001^^^ATHENA^PI||Lee^Ann\r"
            )
        };
        let timing = |text: &str| match map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s)) {
            Ok(Mapped::Appointment(a)) => Ok((
                a.start.map(|t| t.to_rfc3339()),
                a.duration_minutes,
                a.keep_stored.contains(AppointmentField::Start),
                a.keep_stored.contains(AppointmentField::DurationMinutes),
            )),
            Ok(_) => panic!("not an appointment"),
            Err(e) => Err(e),
        };
        let at = |start: &str| Some(format!("2026-12-01T{start}:00+00:00"));
        let cases = [
            // v2.7: TQ1-7 and TQ1-8, no SCH-9 to SCH-11.
            ("||", "TQ1|1||||||20261201093000|20261201101500\r", (at("14:30"), Some(45))),
            // TQ1-6 (a quantity in UCUM minutes) over the end.
            ("||", "TQ1|1|||||20^min&minutes&UCUM|20261201093000|20261201101500\r", (at("14:30"), Some(20))),
            // SCH-11 up to v2.6, start and end, before TQ1.
            ("||^^^20261201080000^20261201083000", "TQ1|1||||||20261201093000\r", (at("13:00"), Some(30))),
            // SCH-9 over the end in SCH-11.5.
            ("40|MIN|^^^20261201080000^20261201083000", "", (at("13:00"), Some(40))),
            // The service resource's start and duration, in hours.
            ("||", "AIS|1||US^Ultrasound|20261201110000|||2|H\r", (at("16:00"), Some(120))),
            // A general resource's, units left empty: minutes.
            ("||", "AIG|1||ROOM4|||||20261201110000|||15\r", (at("16:00"), Some(15))),
            // The personnel resource's, after an AIL with neither.
            (
                "||",
                "AIL|1||DEP7\rAIP|1||1234567890^Smith|||20261201113000|||900|S\r",
                (at("16:30"), Some(15)),
            ),
        ];
        for (sch_timing, rest, (start, minutes)) in cases {
            let text = siu(sch_timing, rest);
            assert_eq!(timing(&text), Ok((start, minutes, false, false)), "{sch_timing} {rest}");
        }

        // A message with no timing at all keeps what is stored.
        assert_eq!(timing(&siu("||", "")), Ok((None, None, true, true)));
        // A start alone says nothing of the duration.
        assert_eq!(timing(&siu("||", "TQ1|1||||||20261201093000\r")), Ok((at("14:30"), None, false, true)));
        // HL7's null in TQ1-8 clears the duration.
        assert_eq!(
            timing(&siu("||", "TQ1|1||||||20261201093000|\"\"\r")),
            Ok((at("14:30"), None, false, false))
        );

        for (sch_timing, rest, want) in [
            ("||", "TQ1|1||||||20261201093000|20261201090000\r", "TQ1-8 (the end) is before the start"),
            ("||", "TQ1|1||||||2026120109300X\r", "bad start time in TQ1-7"),
            ("||", "TQ1|1||||||20261201093000|2026X\r", "bad end time in TQ1-8"),
            ("||", "TQ1|1|||||20^wk|20261201093000\r", "TQ1-6.2 (duration units) is not MIN, H or S"),
            ("||", "AIS|1||US|20261201110000|||1.5|H\r", "AIS-7 (duration) is not a whole number"),
        ] {
            let err = timing(&siu(sch_timing, rest)).unwrap_err();
            assert!(err.contains(want), "{rest}: {err} should contain {want}");
        }
    }

    #[test]
    fn the_schema_reads_more_adt_events_or_ignores_them() {
        let text = |event: &str| {
            format!(
                "MSH|^~\\&|ATHENA|C|F|P|20261120090000||{event}|M3|P|2.5.1\rPID|1||E1^^^ATHENA^PI||Lee^Ann\r"
            )
        };
        let map_as =
            |s: &Hl7Schema, event: &str| map(&Message::parse(text(event).as_bytes()).unwrap(), &settings(s));
        let plain = schema();
        for event in ["ADT^A05", "ADT^A03", "ORU^R01"] {
            let err = map_as(&plain, event).unwrap_err();
            assert!(err.starts_with(&format!("unknown event {event}:")) && err.contains("[events]"), "{err}");
        }
        let s = Hl7Schema::parse(
            Path::new("s.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"ATHENA\"\n\
             [events]\npatient = [\"ADT^A05\", \"ADT^A13\"]\nignore = [\"ADT^A03\", \"ORU\"]\n",
        )
        .unwrap();
        for event in ["ADT^A05", "ADT^A13"] {
            let Ok(Mapped::Patient(p)) = map_as(&s, event) else { panic!("{event} is a patient update") };
            assert_eq!((p.ehr_id.as_deref(), p.last_name.as_deref()), (Some("E1"), Some("Lee")));
        }
        for event in ["ADT^A03", "ORU^R01", "ORU^R30"] {
            assert_eq!(map_as(&s, event), Ok(Mapped::Ignored), "{event}");
        }
        // Neither list touches an event it does not name.
        assert!(map_as(&s, "ADT^A02").unwrap_err().starts_with("unknown event ADT^A02"));
        assert!(map_as(&s, "SIU^S16").unwrap_err().starts_with("unknown event SIU^S16"));
        assert!(matches!(map_as(&s, "ADT^A08"), Ok(Mapped::Patient(_))));
        // An ignored event is not mapped at all: a message ferry could not
        // read as a patient is still ignored.
        let no_pid = text("ORU^R01").replace("PID|1||E1^^^ATHENA^PI||Lee^Ann\r", "OBX|1|ST\r");
        assert_eq!(map(&Message::parse(no_pid.as_bytes()).unwrap(), &settings(&s)), Ok(Mapped::Ignored));

        // A message type alone ignores its events that ferry does not map.
        let all_adt = Hl7Schema::parse(
            Path::new("s.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"ATHENA\"\n[events]\nignore = [\"ADT\"]\n",
        )
        .unwrap();
        assert_eq!(map_as(&all_adt, "ADT^A02"), Ok(Mapped::Ignored));
        assert!(matches!(map_as(&all_adt, "ADT^A31"), Ok(Mapped::Patient(_))));
        assert!(matches!(map_as(&all_adt, "ADT^A40"), Err(e) if e.contains("MRG")), "still a merge");
    }

    #[test]
    fn a40_is_a_merge() {
        let s = schema();
        let text = "MSH|^~\\&|ATHENA|C|F|P|20261120090000||ADT^A40|M3|P|2.5.1\r\
PID|1||E1^^^ATHENA^PI||Lee^Ann||19800102\r\
MRG|E2^^^ATHENA^PI\r";
        let m = map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s)).unwrap();
        let Mapped::Merge { surviving, merged_ehr_id } = m else { panic!() };
        assert_eq!((surviving.ehr_id.as_deref(), merged_ehr_id.as_str()), (Some("E1"), "E2"));
        // A34, A40's v2.3 forerunner, is the same merge.
        let a34 = text.replace("ADT^A40", "ADT^A34");
        let m = map(&Message::parse(a34.as_bytes()).unwrap(), &settings(&s)).unwrap();
        let Mapped::Merge { surviving, merged_ehr_id } = m else { panic!("A34 is a merge") };
        assert_eq!((surviving.ehr_id.as_deref(), merged_ehr_id.as_str()), (Some("E1"), "E2"));
        let err =
            map(&Message::parse(a34.replace("MRG|E2^^^ATHENA^PI\r", "").as_bytes()).unwrap(), &settings(&s))
                .unwrap_err();
        assert_eq!(err, "ADT^A34 without an MRG segment");

        // Merged into itself (an MRN-only merge under one EHR ID) would
        // delete the patient it keeps; two pairs would apply only one.
        let itself = text.replace("MRG|E2", "MRG|E1");
        let err = map(&Message::parse(itself.as_bytes()).unwrap(), &settings(&s)).unwrap_err();
        assert!(err.contains("not merged into itself"), "{err}");
        let two = format!("{text}PID|1||E5^^^ATHENA^PI||Lee^Bo\rMRG|E6^^^ATHENA^PI\r");
        let err = map(&Message::parse(two.as_bytes()).unwrap(), &settings(&s)).unwrap_err();
        assert!(err.contains("more than one PID segment"), "{err}");
        for extra in ["PID|1||E5^^^ATHENA^PI||Lee^Bo\r", "MRG|E6^^^ATHENA^PI\r"] {
            let one_more = format!("{text}{extra}");
            let err = map(&Message::parse(one_more.as_bytes()).unwrap(), &settings(&s)).unwrap_err();
            assert!(err.contains("one PID/MRG pair"), "{err}");
        }
    }

    /// The message's time orders it: a bad one, or none, is a reason, named
    /// by its field, and never skipped for the next field.
    #[test]
    fn a_message_time_that_cannot_order_it_is_a_reason() {
        let ny = chrono_tz::America::New_York;
        let s = schema();
        let reason = |text: &str| header_checked(&Message::parse(text.as_bytes()).unwrap(), &settings(&s)).1;
        assert_eq!(reason(A28), None);
        let bad_evn = A28.replace("EVN|A28|20261120082959", "EVN|A28|20261120082959||||2026-11-20");
        assert!(reason(&bad_evn).unwrap().starts_with("bad time in EVN-6"), "{bad_evn}");
        let bad_msh = A28.replace("EVN|A28|20261120082959\r", "").replace("20261120083000", "2026112008300");
        assert!(reason(&bad_msh).unwrap().starts_with("bad time in MSH-7"));
        let gap = A28.replace("EVN|A28|20261120082959", "EVN|A28|20260308023000");
        assert!(reason(&gap).unwrap().contains("daylight-saving gap"));
        let twice = A28.replace("EVN|A28|20261120082959", "EVN|A28|20261101013000");
        assert!(reason(&twice).unwrap().contains("occurs twice in America/New_York"), "{twice}");
        let offset = A28.replace("EVN|A28|20261120082959", "EVN|A28|20261101013000-0500");
        assert_eq!(reason(&offset), None, "with its offset the repeated hour is no guess");
        // A day ahead of the clock: a wrong year would hold the record.
        let ahead = |days| {
            let t = (crate::clock::now() + chrono::TimeDelta::days(days)).format("%Y%m%d%H%M%S%z");
            reason(&A28.replace("EVN|A28|20261120082959", &format!("EVN|A28|{t}")))
        };
        assert_eq!(ahead(0), None);
        let far = ahead(2).unwrap();
        assert!(far.starts_with("EVN-2 (the message's time) is more than 24 hours ahead"), "{far}");
        assert!(
            header(&Message::parse(A28.replace("20261120082959", "20621120082959").as_bytes()).unwrap(), ny)
                .time
                .is_some(),
            "shown as it is"
        );
        let none = A28.replace("EVN|A28|20261120082959\r", "").replace("20261120083000", "\"\"");
        assert!(reason(&none).unwrap().starts_with("no message time"), "{none}");
        let padded = A28.replace("ADT^A28^ADT_A05", "ADT ^A28 ");
        assert_eq!(header(&Message::parse(padded.as_bytes()).unwrap(), ny).event, "ADT^A28");
    }

    /// Repetitions a sender left empty, IDs named but not given, and XTN
    /// uses and types that are neither a home phone nor a mobile.
    #[test]
    fn empty_repetitions_and_other_phones_are_passed_over() {
        let s = schema();
        let text = A28
            .replace("E10001^^^ATHENA^PI~", "\"\"^^^ATHENA^PI~E10001^^^ATHENA^PI~")
            .replace("O\\S\\Brien^Mary^Ann^^^^L", "~O'Brien^Mary")
            .replace("12 Main St^Apt 4", "^^^^~12 Main St^Apt 4")
            .replace(
                "^PRN^PH^^^617^5550100",
                "^PRN^FX^^^617^5550199~^WPN^PH^^^617^5550198~^PRN^PH^^44^20^79460000",
            )
            .replace("1234567890^Smith^John^^^^^^NPI", "^Smith^John^^^^^^NPI~1234567890^Smith^John^^^^^^NPI");
        let Mapped::Patient(p) = map(&Message::parse(text.as_bytes()).unwrap(), &settings(&s)).unwrap()
        else {
            panic!("not a patient")
        };
        assert_eq!(p.ehr_id.as_deref(), Some("E10001"), "a null ID is passed over");
        assert_eq!((p.last_name.as_deref(), p.first_name.as_deref()), (Some("O'Brien"), Some("Mary")));
        assert_eq!((p.address1.as_deref(), p.city.as_deref()), (Some("12 Main St"), Some("Boston")));
        assert_eq!(p.phone_home.as_deref(), Some("+442079460000"), "not the fax, not work, with its country");
        assert_eq!(p.phone_mobile.as_deref(), Some("+16175550101"));
        assert_eq!(
            p.provider_id.as_deref(),
            Some("1234567890"),
            "an NPI repetition without an ID is passed over"
        );
    }

    #[test]
    fn sex_codes_read_directly_as_by_the_general_rules() {
        for code in ["M", "F", "O", "U"] {
            let general = normalize_value(PatientField::Sex, code).ok().as_deref().and_then(Sex::parse);
            assert_eq!(sex(code), general, "{code}");
            assert!(general.is_some());
        }
        assert_eq!(sex("female"), Some(Sex::F));
        assert_eq!(sex("N"), Some(Sex::U));
        assert_eq!(sex("1"), None);
    }

    /// One scan for two rules: what `pick_id` gives for each on its own.
    /// One rule at a time, each over every repetition up to the first one
    /// whose authority or type cannot be read.
    fn pick_one_by_one<'a>(
        f: Field<'a>,
        rules: [Option<&IdRule>; 2],
    ) -> [Result<Option<Cow<'a, str>>, String>; 2] {
        rules.map(|r| {
            let Some(r) = r else { return Ok(None) };
            let mut first: Option<Cow<'a, str>> = None;
            for rep in f.repetitions() {
                let c = rep.indexed();
                let hd = |n| code(c.component(4).subcomponent(n).text(), "PID-3");
                let kind = hd(1).and_then(|a| Ok((a, hd(2)?, code(c.component(5).text(), "PID-3")?)));
                let (namespace, universal, id_type) = match kind {
                    Ok(kind) => kind,
                    Err(e) if first.is_none() => return Err(e),
                    Err(_) => break,
                };
                if !r.matches(&namespace, &id_type)
                    && (universal.is_empty() || !r.matches(&universal, &id_type))
                {
                    continue;
                }
                match (value(c.component(1).text(), "PID-3"), &first) {
                    (Ok(None), _) => {}
                    (Err(e), None) => return Err(e),
                    (Ok(Some(id)), None) => first = Some(id),
                    (Ok(Some(id)), Some(f)) if id != *f => {
                        return Err(format!("PID-3 holds two different IDs with {}", r.describe()));
                    }
                    _ => {}
                }
            }
            Ok(first)
        })
    }

    proptest::proptest! {
        #[test]
        fn two_ids_in_one_pass_match_two_passes(
            reps in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["", "E1", "0042", "a\\T\\b", "bad\\X1\\"]),
                    proptest::sample::select(vec!["", "ATHENA", "athena ", "PRACTICE", "X\\XZZ\\", "ATHENA&1.2", "&ATHENA&ISO", "X&PRACTICE", "&\\XZZ\\"]),
                    proptest::sample::select(vec!["", "PI", "MR", "mr", "\\X4\\"]),
                ),
                0..5,
            ),
            second in proptest::bool::ANY,
        ) {
            let pid3: Vec<String> = reps.iter().map(|(id, auth, kind)| format!("{id}^^^{auth}^{kind}")).collect();
            let text = format!("MSH|^~\\&\rPID|1||{}\r", pid3.join("~"));
            let msg = Message::parse(text.as_bytes()).unwrap();
            let pid = msg.segment(seg::PID).unwrap();
            let s = schema();
            let rules = [Some(&s.ehr_id), second.then_some(s.practice_mrn.as_ref().unwrap())];
            proptest::prop_assert_eq!(pick_ids(pid.field(3), rules, "PID-3"), pick_one_by_one(pid.field(3), rules));
            let swapped = [rules[1], rules[0]];
            proptest::prop_assert_eq!(pick_ids(pid.field(3), swapped, "PID-3"), pick_one_by_one(pid.field(3), swapped));
        }
    }

    #[test]
    fn join_fills_the_buffer_or_allocates() {
        assert!(matches!(join(&mut [0; JOINED], ["617", "5550100"]), Cow::Borrowed("6175550100")));
        assert_eq!(join(&mut [0; JOINED], ["é", "^", "ü"]), "é^ü");
        let long = "x".repeat(JOINED);
        let mut buf = [0; JOINED];
        let joined = join(&mut buf, [&long, "é"]);
        assert!(matches!(&joined, Cow::Owned(j) if *j == format!("{long}é")));
    }

    /// `read_dtm` as `parse_dtm` read text before it read bytes in one pass.
    fn read_dtm_as_before(t: &str) -> Result<(NaiveDateTime, Option<FixedOffset>), String> {
        let t = trim(t);
        let (body, offset) = match t.bytes().position(|b| b == b'+' || b == b'-') {
            Some(i) => (&t[..i], Some(&t[i..])),
            None => (t, None),
        };
        let (main, fraction) = body.split_once('.').unwrap_or((body, ""));
        if !main.bytes().all(|b| b.is_ascii_digit()) || !matches!(main.len(), 8 | 10 | 12 | 14) {
            return Err("expected YYYYMMDD[HH[MM[SS]]]".into());
        }
        let main = main.as_bytes();
        let date = ymd(main).ok_or("not a calendar date")?;
        let num = |r: std::ops::Range<usize>| main.get(r).map_or(0, number);
        let lead: String = fraction.chars().take_while(char::is_ascii_digit).take(9).collect();
        let nanos = if main.len() == 14 && !lead.is_empty() {
            format!("{lead:0<9}").parse::<u32>().unwrap()
        } else {
            0
        };
        let time = NaiveTime::from_hms_nano_opt(num(8..10), num(10..12), num(12..14), nanos)
            .ok_or("not a valid time of day")?;
        let Some(o) = offset else { return Ok((NaiveDateTime::new(date, time), None)) };
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let digits = &o[1..];
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("time zone offset must be +HHMM or -HHMM".into());
        }
        if digits[2..] >= *"60" {
            return Err("time zone offset minutes must be below 60".into());
        }
        let secs = sign
            * (digits[..2].parse::<i32>().unwrap_or(0) * 3600 + digits[2..].parse::<i32>().unwrap_or(0) * 60);
        let fixed = FixedOffset::east_opt(secs).ok_or("time zone offset out of range")?;
        Ok((NaiveDateTime::new(date, time), Some(fixed)))
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #[test]
        fn dtm_reads_as_before(
            t in proptest::collection::vec(proptest::sample::select(b"0123456789.+- x".to_vec()), 0..24)
                .prop_map(|b| String::from_utf8(b).unwrap()),
            digits in 0..15usize,
        ) {
            // Mostly digits first, as real times are.
            let t = format!("{}{t}", &"20260314123456789"[..digits]);
            proptest::prop_assert_eq!(read_dtm(&t), read_dtm_as_before(&t), "{:?}", t);
        }
    }

    /// A field's worth of text for the mapping property test: delimiters,
    /// escapes, dates, codes and spaces in any order.
    fn hl7_value() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(vec![
                "^",
                "~",
                "&",
                "\\",
                "\\X0D\\",
                "\\T\\",
                "\"\"",
                " ",
                "2026",
                "12",
                "01",
                "093000",
                "-0500",
                "H",
                "BA",
                "M",
                "en",
                "eng",
                "White",
                "2106-3",
                "MIN",
                "H",
                "30",
                "ATHENA",
                "PI",
                "MR",
                "NPI",
                "&1.2.3&ISO",
                "CANCELLED",
                "NOSHOW",
                "é",
                "\u{7}",
                "#",
                "\\P\\",
            ]),
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    /// Mostly a value of `good`, which lets mapping go on to later fields;
    /// else any value.
    fn mostly(good: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::prop_oneof![
            3 => proptest::sample::select(good).prop_map(str::to_string),
            1 => hl7_value(),
        ]
    }

    proptest::proptest! {
        /// Whatever the values, mapping gives a record or a reason: never a
        /// panic, and the same answer twice.
        #[test]
        fn mapping_any_values_never_panics(
            v in proptest::collection::vec(hl7_value(), 20),
            date in mostly(&["", "19800102", "\"\"", "1980"]),
            status in mostly(&["", "BOOKED", "Noshow", "Deleted", "CANCELLED", "ARRIVED"]),
            times in proptest::collection::vec(mostly(&["", "20261201093000", "202612011000-0500", "\"\""]), 5),
            amounts in proptest::collection::vec(mostly(&["", "30", "2", "\"\""]), 3),
            event in proptest::sample::select(
                vec!["A28", "A08", "A40", "A34", "A05", "A03", "A02", "S12", "S13", "S14", "S15", "S17", "S26"]
            ),
            // MSH-2 with v2.7's truncation character; the IDs picked by type
            // alone; other ADT events read or ignored by `[events]`.
            truncation in proptest::bool::ANY,
            by_type in proptest::bool::ANY,
            events in proptest::bool::ANY,
        ) {
            let msh2 = if truncation { "^~\\&#" } else { "^~\\&" };
            let text = if event.starts_with('A') {
                format!(
                    "MSH|{msh2}|A|B|C|D|{}||ADT^{event}|1|P|2.5.1\rEVN|{event}|{}\r\
    PID|1||E1^^^ATHENA^PI~{}||{}||{date}|{}||{}|{}||{}||{}|||||||{}\rPD1|||x|{}\rPV1|1|O|x||||{}\r\
    MRG|E2^^^ATHENA^PI~{}\r",
                    v[0], v[1], v[2], v[3], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13]
                )
            } else {
                format!(
                    "MSH|{msh2}|A|B|C|D|20261120090000||SIU^{event}|1|P|2.7\r\
    SCH|{}|A1|||||x|{}|{}|{}|^^^{}^{}||||||||||||||{status}\rTQ1|1|||||{}^{}|{}|{}\r\
    PID|1||E1^^^ATHENA^PI~{}\rAIS|1||x|{}|||{}|{}\rAIG|1||x|||||{}\rAIL|1||{}|||{}\r\
    AIP|1||{}|||{}|||{}|{}\r",
                    v[0], v[1], amounts[0], v[3], times[0], times[3], amounts[1], v[5], times[1], times[4], v[7],
                    times[2], amounts[2], v[9], v[10], v[11], v[12], v[13], v[14], v[15], v[16]
                )
            };
            let ids = match by_type {
                true => "[ids.ehr_id]\ntype = \"PI\"\n[ids.practice_mrn]\ntype = \"MR\"\n",
                false => "[ids.ehr_id]\nauthority = \"ATHENA\"\ntype = \"PI\"\n[ids.practice_mrn]\nauthority = \"PRACTICE\"\n",
            };
            let events = match events {
                true => "[events]\npatient = [\"ADT^A05\"]\nignore = [\"ADT^A03\"]\n",
                false => "",
            };
            let s = Hl7Schema::parse(Path::new("s.toml"), &format!("format = \"hl7\"\n{ids}{events}")).unwrap();
            let msg = Message::parse(text.as_bytes()).unwrap();
            let first = map(&msg, &settings(&s));
            let again = map(&msg, &settings(&s));
            proptest::prop_assert_eq!(format!("{first:?}"), format!("{again:?}"));
            if let Ok(Mapped::Patient(p)) = &first {
                proptest::prop_assert_eq!(p.ehr_id.as_deref(), Some("E1"));
            }
        }
    }

    #[test]
    fn dtm_forms() {
        let ny = chrono_tz::America::New_York;
        assert_eq!(parse_dtm("20260301", ny).unwrap().to_rfc3339(), "2026-03-01T05:00:00+00:00");
        assert_eq!(parse_dtm("202603011230-0800", ny).unwrap().to_rfc3339(), "2026-03-01T20:30:00+00:00");
        assert_eq!(
            parse_dtm("20260301123015.1234", ny).unwrap().to_rfc3339(),
            "2026-03-01T17:30:15.123400+00:00"
        );
        assert_eq!(
            parse_dtm("20260301123015.5-0500", ny).unwrap().to_rfc3339(),
            "2026-03-01T17:30:15.500+00:00"
        );
        // The fraction's digits are read; a tail that is no digit is ignored.
        assert_eq!(
            parse_dtm("20260301123015.25x", ny).unwrap().to_rfc3339(),
            "2026-03-01T17:30:15.250+00:00"
        );
        assert!(parse_dtm("20260308023000", ny).unwrap_err().contains("daylight-saving gap"));
        assert!(parse_dtm("2026", ny).is_err());
        assert!(parse_date("19800230").is_err());
        for bad in ["198001021", "19800102XYZ", "1980"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert!(parse_dtm("202603011230+0099", ny).unwrap_err().contains("minutes must be below 60"));
        let gap = parse_dtm("20260308023000", ny).unwrap_err();
        assert!(!gap.contains("02:30") && !gap.contains("2026"), "the time stays out of the reason: {gap}");
        assert_eq!(parse_date("198001021230").unwrap(), NaiveDate::from_ymd_opt(1980, 1, 2).unwrap());
    }
}
