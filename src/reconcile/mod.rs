//! Reconciliation: which EHR patient is which practice patient, what
//! differs between them, and which external IDs break the rules.
//!
//! The stages run in order on plain records from the store:
//! 1. [`ids`]: link by the external IDs the job trusts, checking every ID
//!    rule on the way (duplicates, leading-zero clashes, IDs that point
//!    nowhere or at a different person, keys that contradict each other);
//! 2. demographic (probabilistic) matching of what is still unlinked: the
//!    seam is [`Outcome::unlinked`], which later stages take as their input;
//! 3. [`diff`]: field differences of every linked pair, compared on
//!    normalised values so that staff see real differences only.
//!
//! Nothing here reads files or writes reports.

mod diff;
mod ids;
pub mod nicknames;

use crate::job::{LinkKey, Reconcile};
use crate::model::{Field, PatientRecord, Side};

/// How a pair was linked.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub ehr: usize,
    pub practice: usize,
    /// The key that made the link.
    pub key: LinkKey,
    /// Other keys that point the same way.
    pub confirmed_by: Vec<LinkKey>,
    /// Share of compared fields that agree, 0 to 1.
    pub score: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    /// One ID value carried by two records of one side.
    DuplicateId,
    /// Two IDs equal only once leading zeros are stripped.
    LeadingZeroClash,
    /// An ID that points at no record on the other side.
    UnknownId,
    /// An ID that links two records whose name and birth date say they are different people.
    DifferentPerson,
    /// Two trusted keys that point at different partners.
    KeyDisagreement,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::DuplicateId => "duplicate_id",
            ConflictKind::LeadingZeroClash => "leading_zero_clash",
            ConflictKind::UnknownId => "unknown_id",
            ConflictKind::DifferentPerson => "different_person",
            ConflictKind::KeyDisagreement => "key_disagreement",
        }
    }
}

/// A broken ID rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub kind: ConflictKind,
    pub key: LinkKey,
    /// The side the ID value was found on.
    pub side: Side,
    pub id: String,
    /// The records involved: (side, index into that side's records).
    pub records: Vec<(Side, usize)>,
    pub detail: String,
}

/// One field that differs on a linked pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub ehr: usize,
    pub practice: usize,
    pub field: Field,
    pub ehr_value: Option<String>,
    pub practice_value: Option<String>,
}

/// A record with no partner, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmatched {
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub links: Vec<Link>,
    pub conflicts: Vec<Conflict>,
    pub differences: Vec<Difference>,
    /// Fields that differed only in formatting (case, spacing, phone or ZIP
    /// format, street-suffix abbreviation): counted, not listed.
    pub cosmetic: u64,
    pub unmatched_ehr: Vec<Unmatched>,
    pub unmatched_practice: Vec<Unmatched>,
}

impl Outcome {
    /// Indices of EHR and practice records that no stage has linked.
    pub fn unlinked(&self, ehr: usize, practice: usize) -> (Vec<usize>, Vec<usize>) {
        let mut e = vec![true; ehr];
        let mut p = vec![true; practice];
        for l in &self.links {
            e[l.ehr] = false;
            p[l.practice] = false;
        }
        let pick =
            |v: Vec<bool>| v.into_iter().enumerate().filter(|(_, free)| *free).map(|(i, _)| i).collect();
        (pick(e), pick(p))
    }

    pub fn conflicts_of(&self, kind: ConflictKind) -> usize {
        self.conflicts.iter().filter(|c| c.kind == kind).count()
    }
}

/// Reconcile the two sides' current records.
pub fn reconcile(ehr: &[PatientRecord], practice: &[PatientRecord], cfg: &Reconcile) -> Outcome {
    let mut out = ids::link(ehr, practice, cfg);
    // Demographic matching of out.unlinked(..) plugs in here.
    let (free_ehr, free_practice) = out.unlinked(ehr.len(), practice.len());
    out.unmatched_ehr = free_ehr.into_iter().map(|i| unmatched(&out, Side::Ehr, i, &ehr[i])).collect();
    out.unmatched_practice =
        free_practice.into_iter().map(|i| unmatched(&out, Side::Practice, i, &practice[i])).collect();
    for link in &mut out.links {
        link.score = diff::agreement(&ehr[link.ehr].patient, &practice[link.practice].patient, &cfg.compare);
    }
    let (differences, cosmetic) = diff::differences(&out.links, ehr, practice, &cfg.compare);
    out.differences = differences;
    out.cosmetic = cosmetic;
    out
}

fn unmatched(out: &Outcome, side: Side, index: usize, rec: &PatientRecord) -> Unmatched {
    let mut kinds: Vec<&str> = out
        .conflicts
        .iter()
        .filter(|c| c.records.contains(&(side, index)))
        .map(|c| c.kind.as_str())
        .collect();
    kinds.dedup();
    let reason = if !kinds.is_empty() {
        format!("ID conflict: {} (see external_id_conflicts.csv)", kinds.join(", "))
    } else if let Some(id) = rec.carried_id() {
        format!("carries {} {id:?}, which links to no record", side.other_key_name())
    } else {
        let other = match side {
            Side::Ehr => "practice",
            Side::Practice => "EHR",
        };
        format!("no {} on this record and no {other} record carries its ID", side.other_key_name())
    };
    Unmatched { index, reason }
}

impl Side {
    /// The name of the ID of the other side that records of this side carry.
    fn other_key_name(self) -> &'static str {
        match self {
            Side::Ehr => "practice MRN",
            Side::Practice => "EHR patient ID",
        }
    }
}
