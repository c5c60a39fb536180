//! The HL7 mapping schema (`schemas/*.toml` with `format = "hl7"`): which
//! PID-3 repetition is the EHR's own patient ID and which is the practice
//! MRN, what a sender's own SCH-25 codes mean, and what to make of events
//! ferry does not map by itself. This differs between EHRs and between
//! practices, so it is data, never code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::map::trim;
use crate::model::AppointmentStatus;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hl7SchemaFile {
    name: Option<String>,
    description: Option<String>,
    format: String,
    ids: IdsFile,
    /// SCH-25 codes of this sender, each to one of ferry's statuses.
    #[serde(default)]
    appointment_status: BTreeMap<String, AppointmentStatus>,
    #[serde(default)]
    events: EventsFile,
}

/// `[events]`: what to make of events ferry does not map by itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsFile {
    /// More ADT events whose PID updates the patient, as `ADT^A05`.
    #[serde(default)]
    patient: Vec<String>,
    /// Events this sender sends that are not to be mapped, as `ADT^A03`,
    /// or a message type alone (`ORU`) for all of its events.
    #[serde(default)]
    ignore: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsFile {
    ehr_id: IdRule,
    practice_mrn: Option<IdRule>,
}

/// A code as a sender writes it against the schema's spelling. Senders
/// nearly always write the schema's own: compared as it is first, before
/// the byte-by-byte case folding.
fn same(rule: &str, value: &str) -> bool {
    let value = trim(value);
    rule == value || rule.eq_ignore_ascii_case(value)
}

/// Picks one PID-3 repetition: by its assigning authority (PID-3.4.1, or
/// PID-3.4.2), its identifier type code (PID-3.5), or both, compared
/// case-insensitively. A rule without an authority takes the type under
/// any authority or none, for senders that leave PID-3.4 empty.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdRule {
    pub authority: Option<String>,
    #[serde(rename = "type")]
    pub id_type: Option<String>,
}

impl IdRule {
    pub fn matches(&self, authority: &str, id_type: &str) -> bool {
        self.authority.as_deref().is_none_or(|a| same(a, authority))
            && self.id_type.as_deref().is_none_or(|t| same(t, id_type))
    }

    /// Whether `authority` is the rule's assigning authority, whatever the
    /// type; never for a rule without one.
    pub fn authority_is(&self, authority: &str) -> bool {
        self.authority.as_deref().is_some_and(|a| same(a, authority))
    }

    pub fn describe(&self) -> String {
        match (&self.authority, &self.id_type) {
            (Some(a), Some(t)) => format!("assigning authority {a} and type {t}"),
            (Some(a), None) => format!("assigning authority {a}"),
            (None, Some(t)) => format!("type {t} (under any assigning authority)"),
            (None, None) => "no assigning authority or type".into(),
        }
    }

    /// Whether one PID-3 repetition could answer both rules: each of the
    /// authority and the type is the same in both, or left open by one.
    fn overlaps(&self, other: &IdRule) -> bool {
        let meet = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => same(a, b),
            _ => true,
        };
        meet(&self.authority, &other.authority) && meet(&self.id_type, &other.id_type)
    }

    /// What is wrong with the rule `ids.{name}`, if anything.
    fn problem(&self, name: &str) -> Option<String> {
        let blank = |v: &Option<String>| v.as_deref().is_some_and(|v| v.trim().is_empty());
        if blank(&self.authority) {
            Some(format!("ids.{name}.authority is empty"))
        } else if blank(&self.id_type) {
            Some(format!("ids.{name}.type is empty"))
        } else if self.authority.is_none() && self.id_type.is_none() {
            Some(format!(
                "ids.{name} names neither an authority nor a type: which PID-3 repetition is it? Give \
                 authority (PID-3.4), type (PID-3.5) or both"
            ))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hl7Schema {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub ehr_id: IdRule,
    pub practice_mrn: Option<IdRule>,
    /// The sender's own SCH-25 codes (`[appointment_status]`), read before
    /// ferry's (see [`AppointmentStatus::parse`]).
    pub appointment_status: Vec<(String, AppointmentStatus)>,
    pub events: Events,
}

/// `[events]`, checked.
#[derive(Debug, Clone, Default)]
pub struct Events {
    /// ADT triggers (`A05`) read as patient updates besides those ferry
    /// maps by itself.
    pub patient: Vec<String>,
    /// Events not to be mapped, as (message type, trigger); no trigger for
    /// every event of the type that ferry does not map.
    pub ignore: Vec<(String, Option<String>)>,
}

/// ADT events whose PID is not simply a patient's current demographics:
/// merges, links, moves, deletions and changes of an ID. Read as a patient
/// update, such a message would write the wrong record, or bring back one
/// that was deleted, so `[events] patient` refuses them.
const NOT_PATIENT_UPDATES: [(&str, &str); 20] = [
    ("A18", "merges patient information"),
    ("A23", "deletes a patient record"),
    ("A24", "links patient information"),
    ("A29", "deletes person information"),
    ("A30", "merges person information"),
    ("A35", "merges account numbers"),
    ("A36", "merges patient ID and account number"),
    ("A37", "unlinks patient information"),
    ("A39", "merges persons"),
    ("A41", "merges accounts"),
    ("A42", "merges visits"),
    ("A43", "moves patient information"),
    ("A44", "moves account information"),
    ("A45", "moves visit information"),
    ("A46", "changes a patient ID"),
    ("A47", "changes a patient identifier list"),
    ("A48", "changes an alternate patient ID"),
    ("A49", "changes a patient account number"),
    ("A50", "changes a visit number"),
    ("A51", "changes an alternate visit ID"),
];

/// A message type or trigger event code as HL7 writes them: three capital
/// letters or digits.
fn is_event_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `[events]` read and checked: the patient triggers and the ignored
/// events, or what is wrong with an entry.
fn events(raw: EventsFile) -> Result<Events, String> {
    let mut patient = Vec::new();
    for entry in raw.patient {
        let trigger = match entry.trim().split_once('^') {
            Some(("ADT", t))
                if t.len() == 3 && t.starts_with('A') && t[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                t
            }
            _ => {
                return Err(format!(
                    "events.patient: {entry:?} is not an ADT event written as ADT^A05 (only ADT messages \
                     carry a patient update)"
                ));
            }
        };
        if let Some((_, what)) = NOT_PATIENT_UPDATES.iter().find(|(t, _)| *t == trigger) {
            return Err(format!(
                "events.patient: ADT^{trigger} {what}: read as a patient update it would write the wrong \
                 record; ferry does not read it"
            ));
        }
        if let Some(kind) = super::map::event_kind("ADT", trigger) {
            return Err(format!("events.patient: ADT^{trigger} is mapped already ({})", kind.describe()));
        }
        patient.push(trigger.to_string());
    }
    let mut ignored = Vec::new();
    for entry in raw.ignore {
        let (code, trigger) = match entry.trim().split_once('^') {
            Some((code, trigger)) => (code, Some(trigger)),
            None => (entry.trim(), None),
        };
        if !is_event_code(code) || trigger.is_some_and(|t| !is_event_code(t)) {
            return Err(format!(
                "events.ignore: {entry:?} is not an event (ADT^A03) or a message type (ORU), in capitals"
            ));
        }
        if let Some(trigger) = trigger {
            if let Some(kind) = super::map::event_kind(code, trigger) {
                return Err(format!(
                    "events.ignore: {code}^{trigger} is mapped ({}); ferry does not leave it unread",
                    kind.describe()
                ));
            }
            if code == "ADT" && patient.iter().any(|t| t == trigger) {
                return Err(format!("events.ignore: {code}^{trigger} is in events.patient too"));
            }
        }
        ignored.push((code.to_string(), trigger.map(String::from)));
    }
    Ok(Events { patient, ignore: ignored })
}

impl Hl7Schema {
    /// Whether `[events] patient` reads the event as a patient update.
    pub fn reads_as_patient(&self, code: &str, trigger: &str) -> bool {
        code == "ADT" && self.events.patient.iter().any(|t| t == trigger)
    }

    /// Whether `[events] ignore` names the event, or its message type
    /// alone. Only asked of events ferry would not map otherwise.
    pub fn ignores(&self, code: &str, trigger: &str) -> bool {
        self.events.ignore.iter().any(|(c, t)| c == code && t.as_deref().is_none_or(|t| t == trigger))
    }

    /// What the schema says, in one line, for `ferry check`: which PID-3
    /// repetitions are the IDs, and what is made of which events.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("EHR ID: {}", self.ehr_id.describe())];
        if let Some(mrn) = &self.practice_mrn {
            parts.push(format!("practice MRN: {}", mrn.describe()));
        }
        if !self.appointment_status.is_empty() {
            parts.push(format!("{} SCH-25 code(s) of the sender's own", self.appointment_status.len()));
        }
        if !self.events.patient.is_empty() {
            let events: Vec<String> = self.events.patient.iter().map(|t| format!("ADT^{t}")).collect();
            parts.push(format!("also read as patient updates: {}", events.join(", ")));
        }
        if !self.events.ignore.is_empty() {
            let events: Vec<String> = self
                .events
                .ignore
                .iter()
                .map(|(code, trigger)| trigger.as_ref().map_or(code.clone(), |t| format!("{code}^{t}")))
                .collect();
            parts.push(format!("ignored: {}", events.join(", ")));
        }
        parts.join("; ")
    }

    /// What an SCH-25 code means: the schema's `[appointment_status]`
    /// first, then the statuses ferry knows.
    pub fn status(&self, code: &str) -> Option<AppointmentStatus> {
        match self.appointment_status.iter().find(|(c, _)| same(c, code)) {
            Some((_, status)) => Some(*status),
            None => AppointmentStatus::parse(code),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Hl7Schema, String> {
        let raw: Hl7SchemaFile = toml::from_str(text).map_err(|e| {
            format!("{}: {}{}", path.display(), crate::job::toml_location(text, e.span()), e.message())
        })?;
        if raw.format != "hl7" {
            return Err(format!("{}: format {:?} is not \"hl7\"", path.display(), raw.format));
        }
        let rules = [("ehr_id", Some(&raw.ids.ehr_id)), ("practice_mrn", raw.ids.practice_mrn.as_ref())];
        if let Some(problem) = rules.iter().find_map(|(name, rule)| rule.and_then(|r| r.problem(name))) {
            return Err(format!("{}: {problem}", path.display()));
        }
        if raw.ids.practice_mrn.as_ref().is_some_and(|m| m.overlaps(&raw.ids.ehr_id)) {
            return Err(format!(
                "{}: ids.ehr_id and ids.practice_mrn can pick the same PID-3 repetition (one leaves open \
                 what the other names): give them different authorities or types",
                path.display()
            ));
        }
        if raw.appointment_status.keys().any(|code| code.trim().is_empty()) {
            return Err(format!("{}: appointment_status has an empty code", path.display()));
        }
        let events = events(raw.events).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = raw.name.unwrap_or_else(|| {
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        });
        Ok(Hl7Schema {
            name,
            description: raw.description,
            path: path.to_path_buf(),
            ehr_id: raw.ids.ehr_id,
            practice_mrn: raw.ids.practice_mrn,
            appointment_status: raw
                .appointment_status
                .into_iter()
                .map(|(code, status)| (code.trim().to_string(), status))
                .collect(),
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_schema_loads() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/ehr_hl7.toml");
        let s = Hl7Schema::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(s.ehr_id.matches("athena", "PI"));
        assert!(s.ehr_id.matches(" ATHENA", "pi "), "case and spacing aside");
        assert!(!s.ehr_id.matches("ATHENA", "MR") && !s.ehr_id.matches("ATHENAX", "PI"));
        assert!(s.practice_mrn.is_some());
    }

    #[test]
    fn unknown_key_and_same_rule_are_refused() {
        let p = Path::new("s.toml");
        let err = Hl7Schema::parse(p, "format = \"hl7\"\n[ids.ehr_id]\nauthorty = \"A\"\n").unwrap_err();
        assert!(err.contains("authorty"), "{err}");
        let err = Hl7Schema::parse(
            p,
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"A\"\n[ids.practice_mrn]\nauthority = \"A\"\n",
        )
        .unwrap_err();
        assert!(err.contains("same PID-3"), "{err}");
        let err = Hl7Schema::parse(
            p,
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"A\"\n[appointment_status]\nX = \"GONE\"\n",
        )
        .unwrap_err();
        assert!(err.contains("GONE") && err.contains("NOSHOW"), "{err}");
    }

    #[test]
    fn an_id_may_be_picked_by_its_type_alone() {
        let parse = |ids: &str| Hl7Schema::parse(Path::new("s.toml"), &format!("format = \"hl7\"\n{ids}\n"));
        let s = parse("[ids.ehr_id]\ntype = \"PI\"\n[ids.practice_mrn]\ntype = \"MR\"").unwrap();
        assert!(s.ehr_id.matches("", "PI") && s.ehr_id.matches("ANY", "pi") && !s.ehr_id.matches("", "MR"));
        assert!(!s.ehr_id.authority_is("") && !s.ehr_id.authority_is("ATHENA"), "no authority to be");
        assert_eq!(s.ehr_id.describe(), "type PI (under any assigning authority)");
        assert!(parse("[ids.ehr_id]\nauthority = \"A\"\ntype = \"PI\"\n[ids.practice_mrn]\nauthority = \"A\"\ntype = \"MR\"").is_ok());

        for (ids, want) in [
            ("[ids.ehr_id]\n", "ids.ehr_id names neither an authority nor a type"),
            ("[ids.ehr_id]\nauthority = \" \"", "ids.ehr_id.authority is empty"),
            ("[ids.ehr_id]\ntype = \"\"", "ids.ehr_id.type is empty"),
            (
                "[ids.ehr_id]\ntype = \"PI\"\n[ids.practice_mrn]\nauthority = \"\"",
                "ids.practice_mrn.authority is empty",
            ),
            // One rule leaves open what the other names: a repetition could be either.
            (
                "[ids.ehr_id]\ntype = \"MR\"\n[ids.practice_mrn]\nauthority = \"P\"\ntype = \"mr\"",
                "can pick the same",
            ),
            (
                "[ids.ehr_id]\nauthority = \"A\"\n[ids.practice_mrn]\nauthority = \"A\"\ntype = \"MR\"",
                "can pick the same",
            ),
        ] {
            let err = parse(ids).unwrap_err();
            assert!(err.starts_with("s.toml: ") && err.contains(want), "{ids}: {err}");
        }
    }

    #[test]
    fn events_are_checked_when_the_schema_is_read() {
        let parse = |events: &str| {
            Hl7Schema::parse(
                Path::new("s.toml"),
                &format!("format = \"hl7\"\n[ids.ehr_id]\nauthority = \"A\"\n[events]\n{events}\n"),
            )
        };
        let s = parse("patient = [\"ADT^A05\", \" ADT^A02 \"]\nignore = [\"ADT^A03\", \"ORU\", \"MDM^T02\"]")
            .unwrap();
        assert_eq!(s.events.patient, ["A05", "A02"]);
        assert!(s.reads_as_patient("ADT", "A02") && !s.reads_as_patient("ADT", "A03"));
        assert!(!s.reads_as_patient("SIU", "A05"), "only ADT");
        assert!(s.ignores("ADT", "A03") && s.ignores("ORU", "R01") && s.ignores("MDM", "T02"));
        assert!(!s.ignores("ADT", "A02") && !s.ignores("MDM", "T01") && !s.ignores("SIU", "S16"));

        for (events, want) in [
            ("patient = [\"A05\"]", "\"A05\" is not an ADT event written as ADT^A05"),
            ("patient = [\"SIU^S12\"]", "is not an ADT event"),
            ("patient = [\"ADT^A5\"]", "is not an ADT event"),
            ("patient = [\"ADT^A47\"]", "ADT^A47 changes a patient identifier list"),
            ("patient = [\"ADT^A18\"]", "ADT^A18 merges patient information"),
            ("patient = [\"ADT^A29\"]", "ADT^A29 deletes person information"),
            ("patient = [\"ADT^A08\"]", "ADT^A08 is mapped already (a patient update)"),
            ("patient = [\"ADT^A40\"]", "ADT^A40 is mapped already (a merge)"),
            ("ignore = [\"ADT^A08\"]", "ADT^A08 is mapped (a patient update)"),
            ("ignore = [\"SIU^S12\"]", "SIU^S12 is mapped (an appointment)"),
            ("ignore = [\"oru\"]", "\"oru\" is not an event"),
            ("ignore = [\"ADT^\"]", "\"ADT^\" is not an event"),
            ("patient = [\"ADT^A05\"]\nignore = [\"ADT^A05\"]", "ADT^A05 is in events.patient too"),
            ("discard = [\"ORU\"]", "discard"),
        ] {
            let err = parse(events).unwrap_err();
            assert!(err.starts_with("s.toml: ") && err.contains(want), "{events}: {err}");
        }
    }

    #[test]
    fn a_senders_own_status_codes_come_before_ferrys() {
        let s = Hl7Schema::parse(
            Path::new("s.toml"),
            "format = \"hl7\"\n[ids.ehr_id]\nauthority = \"A\"\n\
             [appointment_status]\n\"CHECKED OUT\" = \"COMPLETED\"\nPENDING = \"BOOKED\"\n",
        )
        .unwrap();
        assert_eq!(s.status("checked out "), Some(AppointmentStatus::Completed));
        assert_eq!(s.status("Pending"), Some(AppointmentStatus::Booked), "the schema's meaning wins");
        assert_eq!(s.status("Waitlist"), Some(AppointmentStatus::Pending), "table 0278, as ferry reads it");
        assert_eq!(s.status("Noshow"), Some(AppointmentStatus::NoShow));
        assert_eq!(s.status("Blocked"), None);
    }
}
