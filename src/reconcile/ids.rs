//! Linking by external ID, with every ID rule checked on the way.
//!
//! For each trusted key in the job's order, the side that carries the key
//! (the EHR for the practice MRN, the practice for the EHR patient ID) is
//! looked up against the other side's own IDs. A link is made only when the
//! ID is unambiguous on both sides, no other key contradicts it, and the two
//! records do not describe different people; anything else is a conflict
//! and the records stay unlinked for a person to look at.

use std::borrow::Cow;

use super::matching::{self, Features};
use super::{Conflict, ConflictKind, Link, Outcome};
use crate::job::{LeadingZeros, LinkKey, Reconcile};
use crate::model::{PatientRecord, Side};
use crate::{FastMap, FastSet};

/// "000123" -> "123"; an all-zero ID keeps one zero.
fn strip_zeros(id: &str) -> &str {
    let s = id.trim_start_matches('0');
    if s.is_empty() && !id.is_empty() { "0" } else { s }
}

fn norm(id: &str, policy: LeadingZeros) -> Cow<'_, str> {
    match policy {
        LeadingZeros::Exact => Cow::Borrowed(id.trim()),
        LeadingZeros::Ignore => Cow::Borrowed(strip_zeros(id.trim())),
    }
}

/// Name and birth date say these are two different people: the birth date
/// disagrees and so does a name, or both names disagree. "Disagree" is the
/// matcher's lowest level: a nickname, a typo, day and month swapped or one
/// wrong digit in the date are the same person written differently.
fn different_person(a: &Features, b: &Features) -> bool {
    let p = matching::compare(a, b);
    matching::different_person(&p) || matching::kin(&p, a, b)
}

struct Linker<'a> {
    ehr: &'a [PatientRecord],
    practice: &'a [PatientRecord],
    /// The matcher's view of each record, for the different-person check.
    features: (&'a [Features], &'a [Features]),
    policy: LeadingZeros,
    ehr_link: Vec<Option<usize>>,
    practice_link: Vec<Option<usize>>,
    /// Where each linked EHR record's link is in `out.links`.
    link_index: Vec<Option<usize>>,
    /// Records an earlier key found in a contradiction or pointing at a
    /// different person: no later key may link them until a person decides.
    held: FastSet<(Side, usize)>,
    /// (EHR, practice) pairs held as different people.
    held_pairs: FastSet<(usize, usize)>,
    out: Outcome,
}

/// [`link_with`], computing the records' features first.
#[cfg(test)]
pub(super) fn link(ehr: &[PatientRecord], practice: &[PatientRecord], cfg: &Reconcile) -> Outcome {
    let (fe, fp) = (matching::features(ehr), matching::features(practice));
    link_with(ehr, practice, (&fe, &fp), cfg)
}

/// Link records by the job's trusted keys, in order; `features` are the
/// records' features (EHR, practice) in the same order as the records.
pub(super) fn link_with(
    ehr: &[PatientRecord],
    practice: &[PatientRecord],
    features: (&[Features], &[Features]),
    cfg: &Reconcile,
) -> Outcome {
    let mut l = Linker {
        ehr,
        practice,
        features,
        policy: cfg.leading_zeros,
        ehr_link: vec![None; ehr.len()],
        practice_link: vec![None; practice.len()],
        link_index: vec![None; ehr.len()],
        held: FastSet::default(),
        held_pairs: FastSet::default(),
        out: Outcome::default(),
    };
    for &key in &cfg.keys {
        l.link_by(key);
    }
    l.out.links.sort_by_key(|x| (x.ehr, x.practice));
    l.out
}

impl<'a> Linker<'a> {
    fn records(&self, side: Side) -> &'a [PatientRecord] {
        match side {
            Side::Ehr => self.ehr,
            Side::Practice => self.practice,
        }
    }

    fn conflict(
        &mut self,
        kind: ConflictKind,
        key: LinkKey,
        side: Side,
        id: &str,
        records: Vec<(Side, usize)>,
        detail: String,
    ) {
        self.out.conflicts.push(Conflict { kind, key, side, id: id.to_string(), records, detail });
    }

    fn link_by(&mut self, key: LinkKey) {
        let carrier_side = key.carrier();
        let owner_side = carrier_side.other();
        let carriers = self.records(carrier_side);
        let owners = self.records(owner_side);
        let policy = self.policy;

        // The three indexes are independent: built side by side.
        let index = |ids: &mut dyn Iterator<Item = (usize, Cow<'a, str>)>| {
            let mut map: FastMap<Cow<'a, str>, Vec<usize>> =
                FastMap::with_capacity_and_hasher(owners.len().max(carriers.len()), Default::default());
            for (i, id) in ids {
                map.entry(id).or_default().push(i);
            }
            map
        };
        let ((owners_by_norm, owners_by_stripped), carriers_by_norm) = rayon::join(
            || {
                rayon::join(
                    || index(&mut owners.iter().enumerate().map(|(i, r)| (i, norm(r.own_id(), policy)))),
                    || {
                        index(
                            &mut owners
                                .iter()
                                .enumerate()
                                .map(|(i, r)| (i, Cow::Borrowed(strip_zeros(r.own_id())))),
                        )
                    },
                )
            },
            || {
                index(
                    &mut carriers
                        .iter()
                        .enumerate()
                        .filter_map(|(i, r)| r.carried_id().map(|id| (i, norm(id, policy)))),
                )
            },
        );

        // Owners whose own IDs collide once zeros are stripped: two records
        // a clerk could confuse, whatever the policy.
        let mut clashes: Vec<(&str, &Vec<usize>)> =
            owners_by_stripped.iter().filter(|(_, v)| v.len() > 1).map(|(k, v)| (k.as_ref(), v)).collect();
        clashes.sort();
        for (stripped, group) in clashes {
            let ids: Vec<&str> = group.iter().map(|&i| owners[i].own_id()).collect();
            self.conflict(
                ConflictKind::LeadingZeroClash,
                key,
                owner_side,
                stripped,
                group.iter().map(|&i| (owner_side, i)).collect(),
                format!("{owner_side} IDs {} are equal once leading zeros are stripped", ids.join(" and ")),
            );
        }

        let mut dups: Vec<(&Cow<str>, &Vec<usize>)> =
            carriers_by_norm.iter().filter(|(_, v)| v.len() > 1).collect();
        dups.sort();
        for (id, group) in dups {
            let own: Vec<&str> = group.iter().map(|&i| carriers[i].own_id()).collect();
            // The record whose ID they carry is in it too: which of them is
            // its partner is what a person must settle.
            let owned = owners_by_norm.get(id).into_iter().flatten().map(|&o| (owner_side, o));
            self.conflict(
                ConflictKind::DuplicateId,
                key,
                carrier_side,
                id,
                group.iter().map(|&i| (carrier_side, i)).chain(owned).collect(),
                format!(
                    "{} {carrier_side} records carry {} {id:?}: {}",
                    group.len(),
                    key.as_str(),
                    own.join(", ")
                ),
            );
        }

        for (c, rec) in carriers.iter().enumerate() {
            let Some(raw) = rec.carried_id() else { continue };
            let id = norm(raw, policy);
            if carriers_by_norm[&id].len() > 1 {
                continue;
            }
            match owners_by_norm.get(&id).map(Vec::as_slice) {
                Some([o]) => {
                    let (e, p) = match carrier_side {
                        Side::Ehr => (c, *o),
                        Side::Practice => (*o, c),
                    };
                    self.try_link(key, raw, e, p);
                }
                Some(_) => {} // several owners: the clash above covers it
                None => {
                    let near = owners_by_stripped.get(strip_zeros(raw)).cloned().unwrap_or_default();
                    if near.is_empty() {
                        self.conflict(
                            ConflictKind::UnknownId,
                            key,
                            carrier_side,
                            raw,
                            vec![(carrier_side, c)],
                            format!(
                                "{carrier_side} record {} carries {} {raw:?}, which no {owner_side} record has",
                                rec.own_id(),
                                key.as_str()
                            ),
                        );
                    } else {
                        let near_ids: Vec<&str> = near.iter().map(|&i| owners[i].own_id()).collect();
                        let mut records = vec![(carrier_side, c)];
                        records.extend(near.iter().map(|&i| (owner_side, i)));
                        self.conflict(
                            ConflictKind::LeadingZeroClash,
                            key,
                            carrier_side,
                            raw,
                            records,
                            format!(
                                "{carrier_side} record {} carries {} {raw:?}; {owner_side} has {} (equal only once \
                                 leading zeros are stripped; the job compares IDs exactly)",
                                rec.own_id(),
                                key.as_str(),
                                near_ids.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Link EHR record `e` and practice record `p`, found through `key`
    /// carrying `id`, unless something says otherwise.
    fn try_link(&mut self, key: LinkKey, id: &str, e: usize, p: usize) {
        let (er, pr): (&'a PatientRecord, &'a PatientRecord) = (&self.ehr[e], &self.practice[p]);
        let carrier_side = key.carrier();
        let records = vec![(Side::Ehr, e), (Side::Practice, p)];
        match (self.ehr_link[e], self.practice_link[p]) {
            (Some(x), _) if x == p => {
                if let Some(i) = self.link_index[e] {
                    self.out.links[i].confirmed_by.push(key);
                }
                return;
            }
            (None, None) => {}
            (linked_e, linked_p) => {
                let detail = format!(
                    "{} {id:?} pairs EHR {} with practice {}, but an earlier key linked {}",
                    key.as_str(),
                    er.own_id(),
                    pr.own_id(),
                    match (linked_e, linked_p) {
                        (Some(x), _) =>
                            format!("EHR {} to practice {}", er.own_id(), self.practice[x].own_id()),
                        (_, Some(x)) => format!("practice {} to EHR {}", pr.own_id(), self.ehr[x].own_id()),
                        _ => unreachable!(),
                    }
                );
                self.conflict(ConflictKind::KeyDisagreement, key, carrier_side, id, records, detail);
                return;
            }
        }
        // A pair an earlier key already held as different people: the same
        // question, not a second conflict.
        if self.held_pairs.contains(&(e, p)) {
            return;
        }
        if let Some(&(side, i)) = records.iter().find(|r| self.held.contains(r)) {
            let held_id = self.records(side)[i].own_id();
            let detail = format!(
                "{} {id:?} pairs EHR {} with practice {}, but {side} {held_id} is already in an ID conflict",
                key.as_str(),
                er.own_id(),
                pr.own_id()
            );
            self.conflict(ConflictKind::KeyDisagreement, key, carrier_side, id, records, detail);
            return;
        }
        // The other key, where both records have it, must agree.
        let policy = self.policy;
        let ehr_says = er.patient.practice_mrn.as_deref().map(|m| norm(m, policy));
        let practice_says = pr.patient.ehr_id.as_deref().map(|m| norm(m, policy));
        let disagree = match key {
            LinkKey::PracticeMrn => practice_says.filter(|x| *x != norm(er.own_id(), policy)).map(|x| {
                format!("practice {} carries EHR patient ID {x:?}, not {}", pr.own_id(), er.own_id())
            }),
            LinkKey::EhrId => ehr_says
                .filter(|x| *x != norm(pr.own_id(), policy))
                .map(|x| format!("EHR {} carries practice MRN {x:?}, not {}", er.own_id(), pr.own_id())),
        };
        if let Some(why) = disagree {
            let detail = format!(
                "{} {id:?} pairs EHR {} with practice {}, but {why}",
                key.as_str(),
                er.own_id(),
                pr.own_id()
            );
            self.held.extend(records.iter().copied());
            self.conflict(ConflictKind::KeyDisagreement, key, carrier_side, id, records, detail);
            return;
        }
        if different_person(&self.features.0[e], &self.features.1[p]) {
            let detail = format!(
                "{} {id:?} pairs EHR {} with practice {}, but their names and birth dates disagree, or say \
                 a relative (first names that differ, as twins' do; birth years a generation apart, as a \
                 parent's and child's of one name)",
                key.as_str(),
                er.own_id(),
                pr.own_id()
            );
            self.held.extend(records.iter().copied());
            self.held_pairs.insert((e, p));
            self.conflict(ConflictKind::DifferentPerson, key, carrier_side, id, records, detail);
            return;
        }
        self.ehr_link[e] = Some(p);
        self.practice_link[p] = Some(e);
        self.link_index[e] = Some(self.out.links.len());
        self.out.links.push(Link {
            ehr: e,
            practice: p,
            key: Some(key),
            confirmed_by: Vec::new(),
            score: 0.0,
            probability: None,
            evidence: String::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Patient;
    use chrono::NaiveDate;

    fn rec(
        side: Side,
        own: &str,
        carried: Option<&str>,
        first: &str,
        last: &str,
        dob: &str,
    ) -> PatientRecord {
        let mut p = Patient {
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            birth_date: NaiveDate::parse_from_str(dob, "%Y-%m-%d").ok(),
            ..Patient::default()
        };
        match side {
            Side::Ehr => {
                p.ehr_id = Some(own.into());
                p.practice_mrn = carried.map(Into::into);
            }
            Side::Practice => {
                p.practice_mrn = Some(own.into());
                p.ehr_id = carried.map(Into::into);
            }
        }
        PatientRecord { side, patient: p, source_file: "f".into(), source_line: 2, updated: None }
    }

    fn cfg(policy: LeadingZeros) -> Reconcile {
        Reconcile { leading_zeros: policy, ..Reconcile::default() }
    }

    fn kinds(out: &Outcome) -> Vec<(ConflictKind, Side, String)> {
        out.conflicts.iter().map(|c| (c.kind, c.side, c.id.clone())).collect()
    }

    #[test]
    fn links_by_either_key_one_to_one() {
        let ehr = [
            rec(Side::Ehr, "E1", Some("100"), "Ann", "Lee", "1970-01-01"),
            rec(Side::Ehr, "E2", None, "Bo", "Ng", "1980-02-02"),
        ];
        let pr = [
            rec(Side::Practice, "100", Some("E1"), "Ann", "Lee", "1970-01-01"),
            rec(Side::Practice, "200", Some("E2"), "Bo", "Ng", "1980-02-02"),
        ];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert_eq!(out.links.len(), 2);
        assert_eq!(
            (out.links[0].ehr, out.links[0].practice, out.links[0].key),
            (0, 0, Some(LinkKey::PracticeMrn))
        );
        assert_eq!(out.links[0].confirmed_by, vec![LinkKey::EhrId]);
        assert_eq!((out.links[1].ehr, out.links[1].practice, out.links[1].key), (1, 1, Some(LinkKey::EhrId)));
        assert!(out.conflicts.is_empty());
    }

    #[test]
    fn duplicate_carried_id_is_a_conflict_and_not_linked_by_it() {
        let ehr = [
            rec(Side::Ehr, "E1", Some("100"), "Ann", "Lee", "1970-01-01"),
            rec(Side::Ehr, "E2", Some("100"), "Bo", "Ng", "1980-02-02"),
        ];
        let pr = [rec(Side::Practice, "100", None, "Ann", "Lee", "1970-01-01")];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert!(out.links.is_empty());
        assert_eq!(kinds(&out), vec![(ConflictKind::DuplicateId, Side::Ehr, "100".into())]);
    }

    #[test]
    fn leading_zeros_exact_policy_reports_and_does_not_link() {
        let ehr = [rec(Side::Ehr, "E1", Some("000123"), "Ann", "Lee", "1970-01-01")];
        let pr = [rec(Side::Practice, "123", None, "Ann", "Lee", "1970-01-01")];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert!(out.links.is_empty());
        assert_eq!(kinds(&out), vec![(ConflictKind::LeadingZeroClash, Side::Ehr, "000123".into())]);
    }

    #[test]
    fn leading_zeros_ignore_policy_links() {
        let ehr = [rec(Side::Ehr, "E1", Some("000123"), "Ann", "Lee", "1970-01-01")];
        let pr = [rec(Side::Practice, "123", None, "Ann", "Lee", "1970-01-01")];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Ignore));
        assert_eq!(out.links.len(), 1);
        assert!(out.conflicts.is_empty());
    }

    #[test]
    fn owners_equal_after_stripping_are_a_clash_under_either_policy() {
        let ehr = [rec(Side::Ehr, "E1", Some("0123"), "Ann", "Lee", "1970-01-01")];
        let pr = [
            rec(Side::Practice, "0123", None, "Ann", "Lee", "1970-01-01"),
            rec(Side::Practice, "123", None, "Cy", "Po", "1990-01-01"),
        ];
        let exact = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert_eq!(exact.links.len(), 1, "the exact ID is unique");
        assert_eq!(kinds(&exact), vec![(ConflictKind::LeadingZeroClash, Side::Practice, "123".into())]);
        let ignore = link(&ehr, &pr, &cfg(LeadingZeros::Ignore));
        assert!(ignore.links.is_empty(), "ambiguous once zeros are ignored");
        assert_eq!(kinds(&ignore), vec![(ConflictKind::LeadingZeroClash, Side::Practice, "123".into())]);
    }

    #[test]
    fn id_to_a_different_person_is_a_conflict_not_a_link() {
        let ehr = [rec(Side::Ehr, "E1", Some("100"), "Ann", "Lee", "1970-01-01")];
        let pr = [rec(Side::Practice, "100", None, "Carl", "Lee", "1941-05-05")];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert!(out.links.is_empty());
        assert_eq!(kinds(&out), vec![(ConflictKind::DifferentPerson, Side::Ehr, "100".into())]);
    }

    /// An ID typed into a relative's chart: a twin (first names differ) or
    /// a parent or child of one name (birth dates years apart). Conflicts
    /// for a person, never links (whose MRN would go back to the EHR).
    #[test]
    fn id_to_a_relative_is_a_conflict_not_a_link() {
        for (first, dob) in [("Noah", "2018-02-02"), ("Liam", "1979-08-20")] {
            let ehr = [rec(Side::Ehr, "E5", None, "Liam", "Osei", "2018-02-02")];
            let pr = [rec(Side::Practice, "770004", Some("E5"), first, "Osei", dob)];
            let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
            assert!(out.links.is_empty(), "{first} {dob}");
            assert_eq!(kinds(&out), vec![(ConflictKind::DifferentPerson, Side::Practice, "E5".into())]);
        }
        // Both keys point at the twins' pair: one conflict, not a second
        // that says the keys disagree.
        let ehr = [rec(Side::Ehr, "E1", Some("M1"), "Emma", "Patel", "2015-05-05")];
        let pr = [rec(Side::Practice, "M1", Some("E1"), "Grace", "Patel", "2015-05-05")];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert_eq!(kinds(&out), vec![(ConflictKind::DifferentPerson, Side::Ehr, "M1".into())]);
    }

    /// Two EHR records carrying one chart number: the chart is in the
    /// conflict too, as which of them is its partner is the question.
    #[test]
    fn a_chart_carried_twice_is_in_its_conflict() {
        let ehr = [
            rec(Side::Ehr, "E1", Some("100"), "Ann", "Lee", "1970-01-01"),
            rec(Side::Ehr, "E2", Some("100"), "Ann", "Lee", "1970-01-01"),
        ];
        let pr = [rec(Side::Practice, "100", None, "Ann", "Lee", "1970-01-01")];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert_eq!(out.conflicts[0].records, [(Side::Ehr, 0), (Side::Ehr, 1), (Side::Practice, 0)]);
    }

    #[test]
    fn married_name_or_dob_typo_still_links() {
        let ehr = [
            rec(Side::Ehr, "E1", Some("100"), "Ann", "Lee", "1970-01-01"),
            rec(Side::Ehr, "E2", Some("200"), "Bo", "Ng", "1980-02-02"),
        ];
        let pr = [
            rec(Side::Practice, "100", None, "Ann", "Park", "1970-01-01"),
            rec(Side::Practice, "200", None, "Bo", "Ng", "1980-02-03"),
        ];
        assert_eq!(link(&ehr, &pr, &cfg(LeadingZeros::Exact)).links.len(), 2);
        // A nickname with a married name, and a typo with swapped day and month.
        let ehr = [
            rec(Side::Ehr, "E1", Some("100"), "William", "Lee", "1970-01-01"),
            rec(Side::Ehr, "E2", Some("200"), "Bo", "Nguyen", "1980-02-03"),
        ];
        let pr = [
            rec(Side::Practice, "100", None, "Bill", "Park", "1970-01-01"),
            rec(Side::Practice, "200", None, "Bo", "Nguyn", "1980-03-02"),
        ];
        assert_eq!(link(&ehr, &pr, &cfg(LeadingZeros::Exact)).links.len(), 2);
        // Both names different on the same birth date: someone else.
        let pr = [rec(Side::Practice, "100", None, "Carl", "Park", "1970-01-01")];
        assert!(link(&ehr[..1], &pr, &cfg(LeadingZeros::Exact)).links.is_empty());
    }

    #[test]
    fn contradicting_keys_are_not_linked() {
        let ehr = [
            rec(Side::Ehr, "E1", Some("100"), "Ann", "Lee", "1970-01-01"),
            rec(Side::Ehr, "E2", None, "Ann", "Lee", "1970-01-01"),
        ];
        let pr = [rec(Side::Practice, "100", Some("E2"), "Ann", "Lee", "1970-01-01")];
        let out = link(&ehr, &pr, &cfg(LeadingZeros::Exact));
        assert_eq!(out.links.len(), 0);
        assert!(out.conflicts.iter().all(|c| c.kind == ConflictKind::KeyDisagreement));
        assert_eq!(out.conflicts.len(), 2);
    }

    #[test]
    fn unknown_id() {
        let ehr = [rec(Side::Ehr, "E1", Some("999"), "Ann", "Lee", "1970-01-01")];
        let out = link(&ehr, &[], &cfg(LeadingZeros::Exact));
        assert_eq!(kinds(&out), vec![(ConflictKind::UnknownId, Side::Ehr, "999".into())]);
    }
}
