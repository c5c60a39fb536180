//! Reconciliation: which EHR patient is which practice patient, what
//! differs between them, and which external IDs break the rules.
//!
//! The stages run in order on plain records from the store:
//! 1. `ids`: link by the external IDs the job trusts, checking every ID
//!    rule on the way (duplicates, leading-zero clashes, IDs that point
//!    nowhere or at a different person, keys that contradict each other);
//! 2. [`matching`]: demographic (Fellegi–Sunter) matching of what is still
//!    unlinked, scores for the ID links, pairs for review and duplicates
//!    within each side;
//! 3. `diff`: field differences of every linked pair, compared on
//!    normalised values so that staff see real differences only.
//!
//! Nothing here reads files or writes reports.

mod diff;
mod ids;
pub mod matching;
pub mod nicknames;

use std::collections::HashMap;

use rayon::prelude::*;

use crate::job::{LinkKey, Reconcile};
use crate::model::{Field, PatientRecord, Side};
pub use matching::MatchSettings;

/// How a pair was linked.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub ehr: usize,
    pub practice: usize,
    /// The key that made the link; `None` when demographics made it.
    pub key: Option<LinkKey>,
    /// Other keys that point the same way.
    pub confirmed_by: Vec<LinkKey>,
    /// Share of compared fields that agree, 0 to 1.
    pub score: f64,
    /// The demographic match probability of the pair (with matching on).
    pub probability: Option<f64>,
    /// The comparison levels behind `probability`.
    pub evidence: String,
}

/// A pair across the sides for a person to review.
#[derive(Debug, Clone, PartialEq)]
pub struct PossibleMatch {
    pub ehr: usize,
    pub practice: usize,
    pub probability: f64,
    pub weight: f64,
    pub evidence: String,
    pub reason: &'static str,
}

/// Two records of one side that look like one person.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub side: Side,
    pub a: usize,
    pub b: usize,
    pub probability: f64,
    pub evidence: String,
}

/// What demographic matching did, for the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchStats {
    /// Pairs across the sides that blocking let through and were compared.
    pub candidates: usize,
    /// Pairs within each side compared for duplicates.
    pub duplicate_candidates: usize,
    /// Blocks skipped as too large.
    pub skipped_blocks: usize,
    /// Estimated share of matches among the candidate pairs.
    pub match_share: f64,
    pub em_iterations: usize,
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
    /// The ID a record carries changed over time.
    ChangedId,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::DuplicateId => "duplicate_id",
            ConflictKind::LeadingZeroClash => "leading_zero_clash",
            ConflictKind::UnknownId => "unknown_id",
            ConflictKind::DifferentPerson => "different_person",
            ConflictKind::KeyDisagreement => "key_disagreement",
            ConflictKind::ChangedId => "changed_id",
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
    /// The side whose record changed last, when the store knows both times.
    pub changed_last: Option<Side>,
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
    pub possible_matches: Vec<PossibleMatch>,
    pub duplicates: Vec<Duplicate>,
    /// Confident links whose EHR record lacks the practice MRN: (ehr, practice).
    pub id_updates: Vec<(usize, usize)>,
    /// `None` when the job turns matching off.
    pub matching: Option<MatchStats>,
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

/// A change of the ID a record carries, from the store's history.
#[derive(Debug, Clone, PartialEq)]
pub struct IdChange {
    pub side: Side,
    /// The record's own ID.
    pub own_id: String,
    pub key: LinkKey,
    pub old: Option<String>,
    pub new: Option<String>,
    pub time: Option<String>,
}

/// Reconcile the two sides' current records.
pub fn reconcile(
    ehr: &[PatientRecord],
    practice: &[PatientRecord],
    history: &[IdChange],
    cfg: &Reconcile,
) -> Outcome {
    // The matcher's view of every record: the ID checks use it to tell
    // different people apart, demographic matching for everything.
    let (fe, fp) = crate::timed("matching features", || {
        rayon::join(|| matching::features(ehr), || matching::features(practice))
    });
    // Blocking, comparing and u need only the features: they run beside
    // the ID links, which are mostly serial.
    let (mut out, prepared) = rayon::join(
        || crate::timed("link by ID", || ids::link_with(ehr, practice, (&fe, &fp), cfg)),
        || cfg.matching.as_ref().map(|s| Prepared::new(&fe, &fp, s)),
    );
    changed_ids(&mut out, ehr, practice, history);
    if let (Some(settings), Some(prepared)) = (&cfg.matching, prepared) {
        demographics(&mut out, (ehr, &fe), (practice, &fp), prepared, settings);
    }
    let (free_ehr, free_practice) = out.unlinked(ehr.len(), practice.len());
    let mut kinds: HashMap<(Side, usize), Vec<&'static str>> = HashMap::new();
    for c in &out.conflicts {
        for r in &c.records {
            let list = kinds.entry(*r).or_default();
            if !list.contains(&c.kind.as_str()) {
                list.push(c.kind.as_str());
            }
        }
    }
    let reason = |side, i, rec| unmatched(kinds.get(&(side, i)).map_or(&[][..], Vec::as_slice), side, i, rec);
    let unmatched_ehr = free_ehr.into_iter().map(|i| reason(Side::Ehr, i, &ehr[i])).collect();
    let unmatched_practice =
        free_practice.into_iter().map(|i| reason(Side::Practice, i, &practice[i])).collect();
    out.unmatched_ehr = unmatched_ehr;
    out.unmatched_practice = unmatched_practice;
    let (differences, cosmetic) = crate::timed("field differences", || {
        out.links.par_iter_mut().for_each(|link| {
            link.score =
                diff::agreement(&ehr[link.ehr].patient, &practice[link.practice].patient, &cfg.compare);
        });
        diff::differences(&out.links, ehr, practice, &cfg.compare)
    });
    out.differences = differences;
    out.cosmetic = cosmetic;
    out
}

/// Each change of a carried ID whose record is still on file is a conflict
/// to look at: the EHR may have re-pointed a patient at another chart.
fn changed_ids(out: &mut Outcome, ehr: &[PatientRecord], practice: &[PatientRecord], history: &[IdChange]) {
    fn index(records: &[PatientRecord]) -> crate::FastMap<&str, usize> {
        records.iter().enumerate().map(|(i, r)| (r.own_id(), i)).collect()
    }
    let (by_ehr, by_practice) = (index(ehr), index(practice));
    // The last ID each record carried under each key, to tell a first
    // assignment from an ID given again after one was taken away.
    let mut carried: crate::FastMap<(Side, &str, LinkKey), &str> = crate::FastMap::default();
    for h in history {
        let record = (h.side, h.own_id.as_str(), h.key);
        // A first assignment is not a change; an ID given after an earlier
        // one was taken away (M2, then none, then M3) is.
        let before = match (h.old.as_deref(), carried.get(&record)) {
            (Some(old), _) => Some(format!("{old:?}")),
            (None, Some(earlier)) => Some(format!("(none) (earlier {earlier:?})")),
            (None, None) => None,
        };
        if let Some(last) = h.new.as_deref().or(h.old.as_deref()) {
            carried.insert(record, last);
        }
        let Some(before) = before else { continue };
        let found = match h.side {
            Side::Ehr => by_ehr.get(h.own_id.as_str()),
            Side::Practice => by_practice.get(h.own_id.as_str()),
        };
        let Some(&i) = found else { continue };
        let shown = h.new.as_deref().map_or_else(|| "(none)".to_string(), |n| format!("{n:?}"));
        let when = h.time.as_deref().map(|t| format!(" at {t}")).unwrap_or_default();
        out.conflicts.push(Conflict {
            kind: ConflictKind::ChangedId,
            key: h.key,
            side: h.side,
            // The ID concerned: the new one, or the one taken away.
            id: h.new.as_deref().or(h.old.as_deref()).unwrap_or_default().to_string(),
            records: vec![(h.side, i)],
            detail: format!(
                "{} record {} changed its {} from {before} to {shown}{when}",
                h.side,
                h.own_id,
                h.key.as_str()
            ),
        });
    }
}

/// What demographic matching needs before the ID links are known: the
/// candidate pairs with their comparison levels, and u.
struct Prepared {
    cands: matching::Candidates,
    patterns: Vec<matching::Pattern>,
    u: matching::LevelShares,
}

impl Prepared {
    fn new(fe: &[matching::Features], fp: &[matching::Features], s: &MatchSettings) -> Prepared {
        // The model learns from every candidate pair, ID-linked ones
        // included: they are most of the true matches it can see.
        let cands = crate::timed("blocking", || matching::candidates(fe, fp, false, s.max_block));
        let patterns = crate::timed("comparing candidate pairs", || {
            cands
                .pairs
                .par_iter()
                .map(|&(i, j)| matching::compare(&fe[i as usize], &fp[j as usize]))
                .collect()
        });
        let u = crate::timed("u from random pairs", || matching::random_u(fe, fp, s.u_sample));
        Prepared { cands, patterns, u }
    }
}

/// Score the ID links, link what is left by demographics, list pairs for
/// review, duplicates within each side and the MRNs to write back.
fn demographics(
    out: &mut Outcome,
    (ehr, fe): (&[PatientRecord], &[matching::Features]),
    (practice, fp): (&[PatientRecord], &[matching::Features]),
    Prepared { cands, patterns, u }: Prepared,
    s: &MatchSettings,
) {
    let labelled: Vec<matching::Pattern> =
        out.links.par_iter().map(|l| matching::compare(&fe[l.ehr], &fp[l.practice])).collect();
    let model = crate::timed("fitting the model", || matching::fit_with_labels(u, &patterns, &labelled, s));
    tracing::debug!(?model, "Matching model fitted.");

    // ID links are scored with the prior of all candidate pairs: they were
    // found by ID, not drawn from the unlinked rest.
    for link in &mut out.links {
        let p = matching::compare(&fe[link.ehr], &fp[link.practice]);
        link.probability = Some(matching::probability(model.weight(&p)));
        link.evidence = matching::evidence(&p);
    }

    let (free_e, free_p) = out.unlinked(ehr.len(), practice.len());
    let (mut is_free_e, mut is_free_p) = (vec![false; ehr.len()], vec![false; practice.len()]);
    free_e.iter().for_each(|&i| is_free_e[i] = true);
    free_p.iter().for_each(|&i| is_free_p[i] = true);
    // Records in an ID conflict wait for a person: demographics must not
    // quietly settle what the IDs dispute.
    let (mut held_e, mut held_p) = (vec![false; ehr.len()], vec![false; practice.len()]);
    for &(side, i) in out.conflicts.iter().flat_map(|c| &c.records) {
        match side {
            Side::Ehr => held_e[i] = true,
            Side::Practice => held_p[i] = true,
        }
    }
    let free =
        |&(&(i, j), _): &(&(u32, u32), &matching::Pattern)| is_free_e[i as usize] && is_free_p[j as usize];
    let model =
        matching::with_prior_for(&model, cands.pairs.iter().zip(&patterns).filter(free).map(|(_, p)| p));
    let (held, scored): (Vec<matching::Scored>, Vec<matching::Scored>) = cands
        .pairs
        .iter()
        .zip(&patterns)
        .filter(free)
        .map(|(&(i, j), p)| matching::Scored::new(i, j, *p, &model))
        .filter(|x| x.probability >= s.review_at)
        .partition(|x| held_e[x.a] || held_p[x.b]);
    let same_e = |i: usize, j: usize| matching::same_registration(&fe[i], &fe[j]);
    let same_p = |i: usize, j: usize| matching::same_registration(&fp[i], &fp[j]);
    let kin = |x: &matching::Scored| matching::kin(&x.pattern, &fe[x.a], &fp[x.b]);
    let mut decided = crate::timed("deciding links", || {
        matching::decide(scored, (ehr.len(), practice.len()), s, &same_e, &same_p, &kin)
    });
    decided.review.extend(held.into_iter().map(|x| (x, matching::Hold::IdConflict)));
    decided.review.sort_by(|(x, _), (y, _)| y.weight.total_cmp(&x.weight).then((x.a, x.b).cmp(&(y.a, y.b))));
    for x in decided.links {
        out.links.push(Link {
            ehr: x.a,
            practice: x.b,
            key: None,
            confirmed_by: Vec::new(),
            score: 0.0,
            probability: Some(x.probability),
            evidence: matching::evidence(&x.pattern),
        });
    }
    out.links.sort_by_key(|l| (l.ehr, l.practice));
    out.possible_matches = decided
        .review
        .into_iter()
        .map(|(x, hold)| PossibleMatch {
            ehr: x.a,
            practice: x.b,
            probability: x.probability,
            weight: x.weight,
            evidence: matching::evidence(&x.pattern),
            reason: hold.as_str(),
        })
        .collect();

    let mut stats = MatchStats {
        candidates: cands.pairs.len(),
        skipped_blocks: cands.skipped_blocks,
        match_share: model.lambda,
        em_iterations: model.iterations,
        ..MatchStats::default()
    };
    for (side, features) in [(Side::Ehr, fe), (Side::Practice, fp)] {
        let (found, compared) = crate::timed("duplicates", || matching::duplicates(features, &model, s));
        stats.duplicate_candidates += compared;
        out.duplicates.extend(found.into_iter().map(|x| Duplicate {
            side,
            a: x.a,
            b: x.b,
            probability: x.probability,
            evidence: matching::evidence(&x.pattern),
        }));
    }
    // No MRN goes back to the EHR while either record may be a duplicate
    // (the chart it names may be merged away), nor to an EHR record whose
    // MRN the EHR changed or took away: that change waits for a person
    // (changed_id), and writing the chart back could undo a correction.
    let (mut hold_e, mut hold_p) = (vec![false; ehr.len()], vec![false; practice.len()]);
    let mrn_changes =
        out.conflicts.iter().filter(|c| c.kind == ConflictKind::ChangedId && c.key == LinkKey::PracticeMrn);
    let held = out.duplicates.iter().flat_map(|d| [(d.side, d.a), (d.side, d.b)]);
    for (side, i) in held.chain(mrn_changes.flat_map(|c| c.records.iter().copied())) {
        match side {
            Side::Ehr => hold_e[i] = true,
            Side::Practice => hold_p[i] = true,
        }
    }
    out.id_updates = out
        .links
        .iter()
        .filter(|l| l.probability.is_some_and(|p| p >= s.link_at))
        .filter(|l| ehr[l.ehr].patient.practice_mrn.is_none())
        .filter(|l| !hold_e[l.ehr] && !hold_p[l.practice])
        // An ID a spreadsheet would run as a formula is suspect, and the
        // import file must hold it exactly: the reports' apostrophe would
        // change it.
        .filter(|l| {
            let ids = [ehr[l.ehr].own_id(), practice[l.practice].own_id()];
            !ids.into_iter().any(crate::model::formula_like)
        })
        .map(|l| (l.ehr, l.practice))
        .collect();
    out.matching = Some(stats);
}

/// Why a record has no partner; `kinds` are the conflicts it is in.
fn unmatched(kinds: &[&str], side: Side, index: usize, rec: &PatientRecord) -> Unmatched {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Patient;

    fn change(old: Option<&str>, new: Option<&str>, time: &str) -> IdChange {
        IdChange {
            side: Side::Ehr,
            own_id: "E1".into(),
            key: LinkKey::PracticeMrn,
            old: old.map(Into::into),
            new: new.map(Into::into),
            time: Some(time.into()),
        }
    }

    #[test]
    fn an_id_given_after_one_was_taken_away_is_a_change() {
        let patient =
            Patient { ehr_id: Some("E1".into()), practice_mrn: Some("M3".into()), ..Patient::default() };
        let ehr = [PatientRecord {
            side: Side::Ehr,
            patient,
            source_file: "f".into(),
            source_line: 2,
            updated: None,
        }];
        let history = [
            // A first assignment: not a change.
            change(None, Some("M2"), "t1"),
            change(Some("M2"), None, "t2"),
            change(None, Some("M3"), "t3"),
        ];
        let mut out = Outcome::default();
        changed_ids(&mut out, &ehr, &[], &history);
        let got: Vec<(&str, &str)> =
            out.conflicts.iter().map(|c| (c.id.as_str(), c.detail.as_str())).collect();
        assert_eq!(
            got,
            [
                ("M2", r#"ehr record E1 changed its practice_mrn from "M2" to (none) at t2"#),
                ("M3", r#"ehr record E1 changed its practice_mrn from (none) (earlier "M2") to "M3" at t3"#),
            ]
        );
        // Another record's history says nothing of E1's.
        let mut out = Outcome::default();
        let other = IdChange { own_id: "E9".into(), ..change(Some("M2"), None, "t2") };
        changed_ids(&mut out, &ehr, &[], &[other, change(None, Some("M3"), "t3")]);
        assert!(out.conflicts.is_empty(), "{:?}", out.conflicts);
    }
}
