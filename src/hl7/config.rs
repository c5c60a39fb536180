//! The HL7 mapping schema (`schemas/*.toml` with `format = "hl7"`): which
//! PID-3 repetition is the EHR's own patient ID and which is the practice
//! MRN. This differs between EHRs and between practices, so it is data,
//! never code.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::map::trim;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hl7SchemaFile {
    name: Option<String>,
    description: Option<String>,
    format: String,
    ids: IdsFile,
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
}

impl Hl7Schema {
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
        let name = raw.name.unwrap_or_else(|| {
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        });
        Ok(Hl7Schema {
            name,
            description: raw.description,
            path: path.to_path_buf(),
            ehr_id: raw.ids.ehr_id,
            practice_mrn: raw.ids.practice_mrn,
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
    }
}
