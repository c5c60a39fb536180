//! The HL7 mapping schema (`schemas/*.toml` with `format = "hl7"`): which
//! PID-3 repetition is the EHR's own patient ID and which is the practice
//! MRN, and what a sender's own SCH-25 codes mean. This differs between
//! EHRs and between practices, so it is data, never code.

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

/// Picks one PID-3 repetition: its assigning authority (PID-3.4.1) and,
/// when given, its identifier type code (PID-3.5), compared case-insensitively.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdRule {
    pub authority: String,
    #[serde(rename = "type")]
    pub id_type: Option<String>,
}

impl IdRule {
    pub fn matches(&self, authority: &str, id_type: &str) -> bool {
        self.authority_is(authority) && self.id_type.as_deref().is_none_or(|t| same(t, id_type))
    }

    /// Whether `authority` is the rule's assigning authority, whatever the type.
    pub fn authority_is(&self, authority: &str) -> bool {
        same(&self.authority, authority)
    }

    pub fn describe(&self) -> String {
        match &self.id_type {
            Some(t) => format!("assigning authority {} and type {t}", self.authority),
            None => format!("assigning authority {}", self.authority),
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
}

impl Hl7Schema {
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
        if raw.ids.ehr_id.authority.trim().is_empty() {
            return Err(format!("{}: ids.ehr_id.authority is empty", path.display()));
        }
        if raw.ids.practice_mrn.as_ref().is_some_and(|m| *m == raw.ids.ehr_id) {
            return Err(format!(
                "{}: ids.ehr_id and ids.practice_mrn pick the same PID-3 repetition",
                path.display()
            ));
        }
        if raw.appointment_status.keys().any(|code| code.trim().is_empty()) {
            return Err(format!("{}: appointment_status has an empty code", path.display()));
        }
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
