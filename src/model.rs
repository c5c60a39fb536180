//! The canonical records every input is turned into: [`Patient`] and its
//! [`ExternalId`]s. Parsers (flat files, later HL7) produce these; the store
//! keeps them; reconciliation compares them. Nothing here knows where a record
//! came from beyond the side and the source position.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Which system a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The EHR (athenahealth and its peers).
    Ehr,
    /// The practice's own system.
    Practice,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Ehr => "ehr",
            Side::Practice => "practice",
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "ehr" => Some(Side::Ehr),
            "practice" => Some(Side::Practice),
            _ => None,
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Ehr => Side::Practice,
            Side::Practice => Side::Ehr,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Administrative sex, as both systems exchange it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    M,
    F,
    O,
    U,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::M => "M",
            Sex::F => "F",
            Sex::O => "O",
            Sex::U => "U",
        }
    }

    pub fn parse(s: &str) -> Option<Sex> {
        match s {
            "M" => Some(Sex::M),
            "F" => Some(Sex::F),
            "O" => Some(Sex::O),
            "U" => Some(Sex::U),
            _ => None,
        }
    }
}

/// An identifier one system keeps for a record in another system (for
/// example the practice MRN held in an EHR custom field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalId {
    /// What the identifier is: [`ExternalId::PRACTICE_MRN`], [`ExternalId::EHR_ID`],
    /// or an assigning authority named by a schema.
    pub kind: String,
    pub value: String,
}

impl ExternalId {
    /// The practice system's medical record number.
    pub const PRACTICE_MRN: &'static str = "practice_mrn";
    /// The EHR's own patient ID.
    pub const EHR_ID: &'static str = "ehr_id";
}

/// One patient as one side knows them, after normalisation: names trimmed,
/// dates parsed, phones in E.164, state as a two-letter code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// The EHR's patient ID: the record's own key on the EHR side, a carried
    /// external ID on the practice side.
    pub ehr_id: Option<CompactString>,
    /// The practice MRN: the record's own key on the practice side, a carried
    /// external ID (custom field) on the EHR side.
    pub practice_mrn: Option<CompactString>,
    pub first_name: Option<CompactString>,
    pub middle_name: Option<CompactString>,
    pub last_name: Option<CompactString>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<Sex>,
    pub address1: Option<CompactString>,
    pub address2: Option<CompactString>,
    pub city: Option<CompactString>,
    pub state: Option<CompactString>,
    pub zip: Option<CompactString>,
    pub phone_home: Option<CompactString>,
    pub phone_mobile: Option<CompactString>,
    pub email: Option<CompactString>,
    /// ISO 639-2 code, e.g. "eng".
    pub language: Option<CompactString>,
    /// CDC race code, e.g. "2106-3".
    pub race: Option<CompactString>,
    /// CDC ethnicity code, e.g. "2186-5".
    pub ethnicity: Option<CompactString>,
    /// Primary care or attending provider (NPI or EHR provider ID, as the job says).
    pub provider_id: Option<CompactString>,
    pub insurance_provider: Option<CompactString>,
    pub member_id: Option<CompactString>,
    pub group_number: Option<CompactString>,
    /// The fields the source said nothing about, whose stored values an
    /// update keeps: those of an HL7 field left empty (HL7's `""` is said,
    /// and clears). A flat file's row says every field.
    #[serde(default, skip_serializing_if = "FieldSet::is_empty")]
    pub keep_stored: FieldSet<Field>,
    /// The fields whose value the source gave but ferry could not read (a
    /// ZIP of four digits, an unknown sex code), left empty: the loader
    /// warns about each. A flat file's parser reports these itself.
    #[serde(default, skip_serializing_if = "FieldSet::is_empty")]
    pub dropped: FieldSet<Field>,
    /// The fields whose value held control characters, loaded without them
    /// (see [`Patient::strip_controls`]): the loader warns about each.
    #[serde(default, skip_serializing_if = "FieldSet::is_empty")]
    pub cleaned: FieldSet<Field>,
}

impl Patient {
    /// Takes control characters out of the text fields, and returns the
    /// fields that held any. No name, address or ID holds one, and in a
    /// report a NUL cuts a cell short in a spreadsheet: they come from
    /// escapes such as `\X00\`, stray bytes, or Windows-1252 text sent
    /// as another character set. A line break or tab becomes a space;
    /// other control characters (C0, DEL, C1) are dropped.
    pub fn strip_controls(&mut self) -> FieldSet<Field> {
        let mut changed = FieldSet::default();
        for f in Field::ALL {
            if let Some(slot) = f.text_slot(self)
                && strip_controls(slot)
            {
                changed.insert(f);
            }
        }
        changed
    }

    /// The record's own key on `side`.
    pub fn own_id(&self, side: Side) -> Option<&str> {
        match side {
            Side::Ehr => self.ehr_id.as_deref(),
            Side::Practice => self.practice_mrn.as_deref(),
        }
    }

    /// The other side's key that this record carries, if any.
    pub fn carried_id(&self, side: Side) -> Option<&str> {
        match side {
            Side::Ehr => self.practice_mrn.as_deref(),
            Side::Practice => self.ehr_id.as_deref(),
        }
    }

    /// "Last, First" for reports (never for logs).
    pub fn display_name(&self) -> String {
        let last = self.last_name.as_deref().unwrap_or("");
        let first = self.first_name.as_deref().unwrap_or("");
        match (last.is_empty(), first.is_empty()) {
            (false, false) => format!("{last}, {first}"),
            (false, true) => last.to_string(),
            _ => first.to_string(),
        }
    }
}

/// A patient with where it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientRecord {
    pub side: Side,
    pub patient: Patient,
    /// File the record was last loaded from (its ledger name).
    pub source_file: String,
    /// 1-based line where the record starts in that file.
    pub source_line: u64,
    /// When the record last changed, as far as the store knows: the HL7
    /// message's own time, else when its file was loaded.
    pub updated: Option<chrono::DateTime<chrono::Utc>>,
}

impl PatientRecord {
    pub fn own_id(&self) -> &str {
        self.patient.own_id(self.side).unwrap_or("")
    }

    pub fn carried_id(&self) -> Option<&str> {
        self.patient.carried_id(self.side)
    }
}

/// A canonical patient field: what a schema column maps to and what the
/// reconciliation compares. The snake_case names are the ones schema files
/// and reports use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    EhrId,
    PracticeMrn,
    FirstName,
    MiddleName,
    LastName,
    BirthDate,
    Sex,
    Address1,
    Address2,
    City,
    State,
    Zip,
    PhoneHome,
    PhoneMobile,
    Email,
    Language,
    Race,
    Ethnicity,
    ProviderId,
    InsuranceProvider,
    MemberId,
    GroupNumber,
}

/// How a field's raw text is read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// An identifier: trimmed, kept exactly (leading zeros matter).
    Id,
    /// Free text: trimmed, inner whitespace collapsed.
    Text,
    /// A calendar date read with the column's formats.
    Date,
    /// A sex code mapped to M/F/O/U.
    Sex,
    /// A phone number normalised to E.164.
    Phone,
    /// A US state or territory, as its two-letter code.
    UsState,
    /// A US ZIP or ZIP+4.
    UsZip,
    /// An email address.
    Email,
    /// A language, as its ISO 639-2 code.
    Language,
    /// A race, as its CDC Race & Ethnicity code.
    Race,
    /// An ethnicity, as its CDC Race & Ethnicity code.
    Ethnicity,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::Text => "text",
            FieldType::Date => "date",
            FieldType::Sex => "sex",
            FieldType::Phone => "phone",
            FieldType::UsState => "us_state",
            FieldType::UsZip => "us_zip",
            FieldType::Email => "email",
            FieldType::Language => "language",
            FieldType::Race => "race",
            FieldType::Ethnicity => "ethnicity",
        }
    }
}

impl Field {
    pub const ALL: [Field; 22] = [
        Field::EhrId,
        Field::PracticeMrn,
        Field::FirstName,
        Field::MiddleName,
        Field::LastName,
        Field::BirthDate,
        Field::Sex,
        Field::Address1,
        Field::Address2,
        Field::City,
        Field::State,
        Field::Zip,
        Field::PhoneHome,
        Field::PhoneMobile,
        Field::Email,
        Field::Language,
        Field::Race,
        Field::Ethnicity,
        Field::ProviderId,
        Field::InsuranceProvider,
        Field::MemberId,
        Field::GroupNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::EhrId => "ehr_id",
            Field::PracticeMrn => "practice_mrn",
            Field::FirstName => "first_name",
            Field::MiddleName => "middle_name",
            Field::LastName => "last_name",
            Field::BirthDate => "birth_date",
            Field::Sex => "sex",
            Field::Address1 => "address1",
            Field::Address2 => "address2",
            Field::City => "city",
            Field::State => "state",
            Field::Zip => "zip",
            Field::PhoneHome => "phone_home",
            Field::PhoneMobile => "phone_mobile",
            Field::Email => "email",
            Field::Language => "language",
            Field::Race => "race",
            Field::Ethnicity => "ethnicity",
            Field::ProviderId => "provider_id",
            Field::InsuranceProvider => "insurance_provider",
            Field::MemberId => "member_id",
            Field::GroupNumber => "group_number",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The type a column mapped to this field is read as.
    pub fn field_type(self) -> FieldType {
        match self {
            Field::EhrId | Field::PracticeMrn | Field::MemberId | Field::GroupNumber | Field::ProviderId => {
                FieldType::Id
            }
            Field::Race => FieldType::Race,
            Field::Ethnicity => FieldType::Ethnicity,
            Field::BirthDate => FieldType::Date,
            Field::Sex => FieldType::Sex,
            Field::PhoneHome | Field::PhoneMobile => FieldType::Phone,
            Field::State => FieldType::UsState,
            Field::Zip => FieldType::UsZip,
            Field::Email => FieldType::Email,
            Field::Language => FieldType::Language,
            Field::FirstName
            | Field::MiddleName
            | Field::LastName
            | Field::Address1
            | Field::Address2
            | Field::City
            | Field::InsuranceProvider => FieldType::Text,
        }
    }

    /// The field's value as text (dates as YYYY-MM-DD).
    pub fn get(self, p: &Patient) -> Option<String> {
        self.value(p).map(Cow::into_owned)
    }

    /// [`Field::get`], borrowed from the record where it can be.
    pub fn value(self, p: &Patient) -> Option<Cow<'_, str>> {
        match self {
            Field::BirthDate => p.birth_date.map(|d| Cow::Owned(iso_date(d).into_string())),
            Field::Sex => p.sex.map(|s| Cow::Borrowed(s.as_str())),
            _ => self.text_slot_ref(p).and_then(|v| v.as_deref()).map(Cow::Borrowed),
        }
    }

    /// Set the field from already-normalised text. Dates must be YYYY-MM-DD
    /// and sex one of M/F/O/U; anything else leaves the field empty.
    pub fn set(self, p: &mut Patient, value: Option<CompactString>) {
        match self {
            Field::BirthDate => p.birth_date = value.and_then(|v| parse_iso_date(&v)),
            Field::Sex => p.sex = value.and_then(|v| Sex::parse(&v)),
            _ => {
                if let Some(slot) = self.text_slot(p) {
                    *slot = value;
                }
            }
        }
    }

    fn text_slot_ref(self, p: &Patient) -> Option<&Option<CompactString>> {
        Some(match self {
            Field::EhrId => &p.ehr_id,
            Field::PracticeMrn => &p.practice_mrn,
            Field::FirstName => &p.first_name,
            Field::MiddleName => &p.middle_name,
            Field::LastName => &p.last_name,
            Field::Address1 => &p.address1,
            Field::Address2 => &p.address2,
            Field::City => &p.city,
            Field::State => &p.state,
            Field::Zip => &p.zip,
            Field::PhoneHome => &p.phone_home,
            Field::PhoneMobile => &p.phone_mobile,
            Field::Email => &p.email,
            Field::Language => &p.language,
            Field::Race => &p.race,
            Field::Ethnicity => &p.ethnicity,
            Field::ProviderId => &p.provider_id,
            Field::InsuranceProvider => &p.insurance_provider,
            Field::MemberId => &p.member_id,
            Field::GroupNumber => &p.group_number,
            Field::BirthDate | Field::Sex => return None,
        })
    }

    fn text_slot(self, p: &mut Patient) -> Option<&mut Option<CompactString>> {
        Some(match self {
            Field::EhrId => &mut p.ehr_id,
            Field::PracticeMrn => &mut p.practice_mrn,
            Field::FirstName => &mut p.first_name,
            Field::MiddleName => &mut p.middle_name,
            Field::LastName => &mut p.last_name,
            Field::Address1 => &mut p.address1,
            Field::Address2 => &mut p.address2,
            Field::City => &mut p.city,
            Field::State => &mut p.state,
            Field::Zip => &mut p.zip,
            Field::PhoneHome => &mut p.phone_home,
            Field::PhoneMobile => &mut p.phone_mobile,
            Field::Email => &mut p.email,
            Field::Language => &mut p.language,
            Field::Race => &mut p.race,
            Field::Ethnicity => &mut p.ethnicity,
            Field::ProviderId => &mut p.provider_id,
            Field::InsuranceProvider => &mut p.insurance_provider,
            Field::MemberId => &mut p.member_id,
            Field::GroupNumber => &mut p.group_number,
            Field::BirthDate | Field::Sex => return None,
        })
    }
}

impl Member for Field {
    const ALL: &'static [Field] = &Field::ALL;

    fn index(self) -> usize {
        self as usize
    }
}

/// A record's field, as a [`FieldSet`] holds it.
pub trait Member: Copy + 'static {
    /// Every field, in [`Member::index`] order (at most 32).
    const ALL: &'static [Self];
    fn index(self) -> usize;
}

/// [`Patient::strip_controls`] for one value; whether it changed.
fn strip_controls(slot: &mut Option<CompactString>) -> bool {
    let Some(v) = slot else { return false };
    // A C1 control is 0xC2 0x80..=0x9F in UTF-8. One pass without early
    // exit, over bytes nearly always plain, is the cheap check.
    let suspect = v.bytes().fold(false, |any, b| any | (b < 0x20) | (b == 0x7F) | (b == 0xC2));
    if !suspect {
        return false;
    }
    let mut out = CompactString::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\t' | '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}') {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    let out = out.trim();
    if out == v.as_str() {
        return false;
    }
    *slot = (!out.is_empty()).then(|| CompactString::from(out));
    true
}

/// A set of a record's fields, as bits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FieldSet<F>(u32, std::marker::PhantomData<F>);

impl<F: Member> FieldSet<F> {
    pub fn insert(&mut self, f: F) {
        self.0 |= 1 << f.index();
    }

    pub fn remove(&mut self, f: F) {
        self.0 &= !(1 << f.index());
    }

    pub fn contains(self, f: F) -> bool {
        self.0 & (1 << f.index()) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The set as bits, bit [`Member::index`] for each field in it.
    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn iter(self) -> impl Iterator<Item = F> {
        F::ALL.iter().copied().filter(move |&f| self.contains(f))
    }
}

impl<F> Default for FieldSet<F> {
    fn default() -> Self {
        FieldSet(0, std::marker::PhantomData)
    }
}

impl<F: Member> FromIterator<F> for FieldSet<F> {
    fn from_iter<I: IntoIterator<Item = F>>(fields: I) -> Self {
        let mut set = FieldSet::default();
        fields.into_iter().for_each(|f| set.insert(f));
        set
    }
}

impl<F: Member + fmt::Debug> fmt::Debug for FieldSet<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<F: Member + Serialize> Serialize for FieldSet<F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, F: Member + Deserialize<'de>> Deserialize<'de> for FieldSet<F> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<F>::deserialize(d)?.into_iter().collect())
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a problem with an input record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The record was not loaded.
    Rejected,
    /// The record was loaded with the one bad field left empty.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Rejected => "rejected",
            Severity::Warning => "warning",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "rejected" => Some(Severity::Rejected),
            "warning" => Some(Severity::Warning),
            _ => None,
        }
    }
}

/// An input record, or one field of it, that could not be read as it stood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// 1-based line where the record starts (or message number, for HL7).
    pub line: u64,
    pub severity: Severity,
    /// The record's own ID when it could be read.
    pub record_id: Option<String>,
    /// The column (as the file names it) the problem is in, if one.
    pub column: Option<String>,
    /// The canonical field that column maps to.
    pub field: Option<Field>,
    /// Why, in words staff can act on.
    pub reason: String,
}

/// Where an appointment stands, as SCH-25 carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AppointmentStatus {
    Booked,
    Arrived,
    Completed,
    Update,
    Cancelled,
    /// The patient did not come (HL7 table 0278 `Noshow`).
    NoShow,
    /// Asked for or on a waiting list, not yet booked (`Pending`, `Waitlist`).
    Pending,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "BOOKED",
            AppointmentStatus::Arrived => "ARRIVED",
            AppointmentStatus::Completed => "COMPLETED",
            AppointmentStatus::Update => "UPDATE",
            AppointmentStatus::Cancelled => "CANCELLED",
            AppointmentStatus::NoShow => "NOSHOW",
            AppointmentStatus::Pending => "PENDING",
        }
    }

    /// SCH-25 text, case-insensitively: ferry's own statuses, "CANCELED",
    /// and the codes of HL7 table 0278 (filler status) that mean one of
    /// them. `Blocked` is not here: a blocked slot is no patient's appointment.
    pub fn parse(s: &str) -> Option<AppointmentStatus> {
        match s.trim().to_ascii_uppercase().as_str() {
            "BOOKED" | "OVERBOOK" => Some(AppointmentStatus::Booked),
            "ARRIVED" | "STARTED" => Some(AppointmentStatus::Arrived),
            "COMPLETED" | "COMPLETE" => Some(AppointmentStatus::Completed),
            "UPDATE" => Some(AppointmentStatus::Update),
            "CANCELLED" | "CANCELED" | "DELETED" | "DC" => Some(AppointmentStatus::Cancelled),
            "NOSHOW" | "NO SHOW" | "NO-SHOW" => Some(AppointmentStatus::NoShow),
            "PENDING" | "WAITLIST" => Some(AppointmentStatus::Pending),
            _ => None,
        }
    }
}

/// One appointment as the EHR sends it. A reschedule arrives as a cancel of
/// the old ID plus a booking with a new ID: both are kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    /// The EHR's appointment ID.
    pub id: CompactString,
    pub patient_ehr_id: Option<CompactString>,
    pub patient_mrn: Option<CompactString>,
    pub provider_id: Option<CompactString>,
    pub department_id: Option<CompactString>,
    pub appointment_type: Option<CompactString>,
    /// Start, converted to UTC from the job's time zone.
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    pub duration_minutes: Option<u32>,
    pub status: AppointmentStatus,
    /// The fields the message said nothing about, whose stored values an
    /// update keeps (see [`Patient::keep_stored`]).
    #[serde(default, skip_serializing_if = "FieldSet::is_empty")]
    pub keep_stored: FieldSet<AppointmentField>,
    /// The text values that held control characters, loaded without them
    /// (see [`Appointment::strip_controls`]): the loader warns about each.
    #[serde(default, skip_serializing_if = "FieldSet::is_empty")]
    pub cleaned: FieldSet<AppointmentText>,
}

impl Appointment {
    /// [`Patient::strip_controls`] for the appointment's text values: the
    /// ones that changed. An empty appointment ID stays empty here; the
    /// mapper refuses it.
    pub fn strip_controls(&mut self) -> FieldSet<AppointmentText> {
        let mut changed = FieldSet::default();
        let mut id = Some(std::mem::take(&mut self.id));
        if strip_controls(&mut id) {
            changed.insert(AppointmentText::Id);
        }
        self.id = id.unwrap_or_default();
        for (slot, f) in [
            (&mut self.patient_ehr_id, AppointmentText::PatientEhrId),
            (&mut self.patient_mrn, AppointmentText::PatientMrn),
            (&mut self.provider_id, AppointmentText::ProviderId),
            (&mut self.department_id, AppointmentText::DepartmentId),
            (&mut self.appointment_type, AppointmentText::AppointmentType),
        ] {
            if strip_controls(slot) {
                changed.insert(f);
            }
        }
        changed
    }
}

/// An appointment's text value, as [`Appointment::cleaned`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentText {
    Id,
    PatientEhrId,
    PatientMrn,
    ProviderId,
    DepartmentId,
    AppointmentType,
}

impl Member for AppointmentText {
    const ALL: &'static [AppointmentText] = &[
        AppointmentText::Id,
        AppointmentText::PatientEhrId,
        AppointmentText::PatientMrn,
        AppointmentText::ProviderId,
        AppointmentText::DepartmentId,
        AppointmentText::AppointmentType,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// An appointment field an HL7 message may leave out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentField {
    ProviderId,
    DepartmentId,
    AppointmentType,
    Start,
    DurationMinutes,
    Status,
}

impl Member for AppointmentField {
    const ALL: &'static [AppointmentField] = &[
        AppointmentField::ProviderId,
        AppointmentField::DepartmentId,
        AppointmentField::AppointmentType,
        AppointmentField::Start,
        AppointmentField::DurationMinutes,
        AppointmentField::Status,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// `s` as it may be printed for a person (stderr, `ferry queue`): each
/// control character, and each bidirectional override that would show the
/// text in another order, escaped (`\n`, `\u{1b}`). A value the
/// counterparty chose (a file name, MSH-10) can then neither start a line
/// of its own in a log nor send a terminal escape sequences.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(hidden) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match hidden(c) {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    out.into()
}

/// Whether a spreadsheet would run `cell` as a formula: it starts with
/// = + - @ (or a tab or CR), perhaps after spaces or line breaks, which
/// some spreadsheets skip, or in their full-width forms, which some read as
/// the ASCII ones. E.164 phones and negative numbers are data, not
/// formulas. The report CSVs defuse such cells; an ID that is one is not
/// written back to the EHR.
pub fn formula_like(cell: &str) -> bool {
    let mut chars = cell.trim_start_matches([' ', '\n', '\u{a0}', '\u{3000}']).chars();
    match chars.next() {
        Some('=' | '@' | '\t' | '\r' | '＝' | '＠' | '＋' | '－') => true,
        Some('+' | '-') => !chars.all(|c| c.is_ascii_digit() || c == '.'),
        _ => false,
    }
}

/// A date as YYYY-MM-DD, as the store keeps it (years 0 to 9999).
pub fn iso_date(d: NaiveDate) -> CompactString {
    use chrono::Datelike;
    let mut b = *b"0000-00-00";
    let mut put = |mut n: u32, end: usize, width: usize| {
        for i in (end - width..end).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(d.year().clamp(0, 9999) as u32, 4, 4);
    put(d.month(), 7, 2);
    put(d.day(), 10, 2);
    b.iter().map(|&c| c as char).collect()
}

/// YYYY-MM-DD, exactly, as a date.
pub fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)
}

/// Puts `v` in `slot`, a record's field, and returns it, copied as
/// [`compact`] copies it, but in place: a string built beside the field
/// and moved in would be read back in wider words than it was written in,
/// and the processor stalls on such a read until the writes have landed.
#[inline(always)]
pub(crate) fn fill<'s>(slot: &'s mut Option<CompactString>, v: &str) -> &'s mut CompactString {
    let out = slot.insert(CompactString::default());
    copy_into(out, v);
    out
}

/// `v` as a `CompactString`. A value that fits in place (up to 23 bytes,
/// as nearly all do) is copied with two moves of a fixed size that overlap
/// as its length needs: `CompactString::from` and `push_str` copy with a
/// call to `memcpy`, whose set-up for an unknown length weighs on values
/// this short. Copying this way took 2.3% fewer instructions from the HL7
/// parse-and-map in the plain release build, 0.8% in the profile-guided one
/// (callgrind, 20,000 messages).
#[inline(always)]
pub(crate) fn compact(v: &str) -> CompactString {
    let mut out = CompactString::default();
    copy_into(&mut out, v);
    out
}

/// Copies `v` into `out`, which is empty: see [`compact`].
#[inline(always)]
fn copy_into(out: &mut CompactString, v: &str) {
    debug_assert!(out.is_empty());
    let (src, n) = (v.as_bytes(), v.len());
    // SAFETY: only the first `n` bytes are written, below.
    let spare = unsafe { out.spare_capacity_mut() };
    // The last byte of an inline string's room is its tag, which may be
    // written only as part of a string that fills the room: such a string
    // takes `push_str`.
    if n >= spare.len() {
        out.push_str(v);
        return;
    }
    // SAFETY: `n` is below the room in `spare`, so the copy leaves the tag
    // alone; it writes bytes `0..n` from `src`, valid UTF-8.
    unsafe {
        copy_short(src, spare.as_mut_ptr().cast());
        out.set_len(n);
    }
}

/// Copies `src` to `dst` as a short value is best copied: up to 32 bytes
/// with two moves of a fixed size that overlap as its length needs, not a
/// call to `memcpy`, whose set-up for an unknown length costs more than
/// the copy.
///
/// # Safety
/// `dst` must be valid for writing `src.len()` bytes, and not overlap `src`.
#[inline(always)]
pub(crate) unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    use std::ptr::copy_nonoverlapping as copy;
    let (s, n) = (src.as_ptr(), src.len());
    // SAFETY: each copy, of at most `n` bytes at an offset that leaves room
    // for them, stays inside `src` and the `n` bytes at `dst`, and together
    // they write all of those.
    unsafe {
        match n {
            33.. => copy(s, dst, n),
            16.. => {
                copy(s, dst, 16);
                copy(s.add(n - 16), dst.add(n - 16), 16);
            }
            8.. => {
                copy(s, dst, 8);
                copy(s.add(n - 8), dst.add(n - 8), 8);
            }
            4.. => {
                copy(s, dst, 4);
                copy(s.add(n - 4), dst.add(n - 4), 4);
            }
            1.. => {
                *dst = *s;
                *dst.add(n / 2) = *s.add(n / 2);
                *dst.add(n - 1) = *s.add(n - 1);
            }
            0 => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_short_writes_exactly_its_bytes() {
        let src: Vec<u8> = (1..=40).collect();
        for n in 0..=src.len() {
            let mut dst = [0xEEu8; 48];
            // SAFETY: `dst` has room for 40 bytes and is not `src`.
            unsafe { copy_short(&src[..n], dst.as_mut_ptr()) };
            assert_eq!(&dst[..n], &src[..n], "{n} bytes");
            assert!(dst[n..].iter().all(|&b| b == 0xEE), "nothing past {n} bytes is written");
        }
    }

    #[test]
    fn fill_writes_what_push_str_writes() {
        // Every length around the copy sizes and the 24 bytes held in place,
        // in ASCII and with characters of two to four bytes.
        let text: String = "aé€𝄞bcdefghijklmnopqrstuvwxyz0123456789".chars().cycle().take(60).collect();
        for start in text.char_indices().map(|(i, _)| i).take(6) {
            for (end, _) in text[start..].char_indices().chain([(text.len() - start, ' ')]) {
                let v = &text[start..start + end];
                let mut slot = Some(CompactString::from("old value"));
                assert_eq!(fill(&mut slot, v), v);
                assert_eq!(slot.as_deref(), Some(v));
                assert_eq!(slot.unwrap().len(), v.len());
                assert_eq!(compact(v), v);
            }
        }
    }

    #[test]
    fn control_characters_leave_text_fields() {
        let mut p = Patient {
            ehr_id: Some("E1\u{0}".into()),
            last_name: Some("O\u{0}Brien".into()),
            first_name: Some("Mac\r\nLean \u{1C}".into()),
            middle_name: Some("\u{7F}\u{92}".into()),
            city: Some("Zoë\u{A0}°".into()),
            address1: Some("1 Main St".into()),
            ..Patient::default()
        };
        let changed = p.strip_controls();
        assert_eq!(p.ehr_id.as_deref(), Some("E1"));
        assert_eq!(p.last_name.as_deref(), Some("OBrien"));
        assert_eq!(p.first_name.as_deref(), Some("Mac Lean"), "a line break is a space");
        assert_eq!(p.middle_name, None, "nothing left");
        assert_eq!(p.city.as_deref(), Some("Zoë\u{A0}°"), "0xC2 starts more than C1 controls");
        let want = [Field::EhrId, Field::FirstName, Field::MiddleName, Field::LastName];
        assert_eq!(changed.iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn iso_dates_round_trip_as_chrono_writes_them() {
        for (y, m, d) in [(1980, 1, 2), (2026, 12, 31), (1, 1, 1), (9999, 12, 31), (2024, 2, 29)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(iso_date(date), date.format("%Y-%m-%d").to_string());
            assert_eq!(parse_iso_date(&iso_date(date)), Some(date));
        }
        for bad in ["1980-1-02", "1980/01/02", "19800102", "1980-02-30", "198a-01-02", "", "1980-01-02 "] {
            assert_eq!(parse_iso_date(bad), None, "{bad:?}");
        }
    }
}
