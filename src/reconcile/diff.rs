//! Field differences on linked pairs, compared on normalised keys so that
//! case, spacing, punctuation, phone and ZIP formats and street-suffix
//! abbreviations never show up as differences.

use rayon::prelude::*;

use super::{Difference, Link};
use crate::flatfile::{address_key, name_key, normalize_value, text_key, zip_key};
use crate::model::{Field, Patient, PatientRecord, Side};

/// The value staff would call "the same" for this field.
fn compare_key(field: Field, value: &str) -> String {
    match field {
        Field::FirstName | Field::MiddleName | Field::LastName => name_key(value),
        Field::Address1 | Field::Address2 => address_key(value),
        Field::Zip => zip_key(value),
        Field::Email => value.to_lowercase(),
        Field::City | Field::InsuranceProvider => text_key(value),
        // Stored as ISO 639-2 and CDC codes; a value stored before they
        // were (`en`, `White`) is read as one.
        Field::Language | Field::Race | Field::Ethnicity => {
            normalize_value(field, value).map_or_else(|_| value.to_lowercase(), String::from)
        }
        // Already canonical: dates, sex codes, state codes, E.164 phones, IDs.
        _ => value.to_string(),
    }
}

enum Verdict {
    BothEmpty,
    Same,
    Cosmetic,
    Different,
}

fn compare(field: Field, a: Option<&str>, b: Option<&str>) -> Verdict {
    match (a, b) {
        (None, None) => Verdict::BothEmpty,
        (Some(x), Some(y)) if x == y => Verdict::Same,
        (Some(x), Some(y)) if compare_key(field, x) == compare_key(field, y) => Verdict::Cosmetic,
        _ => Verdict::Different,
    }
}

/// Share of the compared fields present on either side that agree.
pub(super) fn agreement(a: &Patient, b: &Patient, fields: &[Field]) -> f64 {
    let (mut seen, mut same) = (0u32, 0u32);
    for &f in fields {
        match compare(f, f.get(a).as_deref(), f.get(b).as_deref()) {
            Verdict::BothEmpty => {}
            Verdict::Same | Verdict::Cosmetic => {
                seen += 1;
                same += 1;
            }
            Verdict::Different => seen += 1,
        }
    }
    if seen == 0 { 0.0 } else { f64::from(same) / f64::from(seen) }
}

/// Every real difference, and the number of cosmetic ones.
pub(super) fn differences(
    links: &[Link],
    ehr: &[PatientRecord],
    practice: &[PatientRecord],
    fields: &[Field],
) -> (Vec<Difference>, u64) {
    // Per link, in parallel; collected in link order.
    let per_link: Vec<(Vec<Difference>, u64)> = links
        .par_iter()
        .map(|l| {
            let (mut out, mut cosmetic) = (Vec::new(), 0);
            let (a, b) = (&ehr[l.ehr].patient, &practice[l.practice].patient);
            let changed_last = match (ehr[l.ehr].updated, practice[l.practice].updated) {
                (Some(x), Some(y)) if x > y => Some(Side::Ehr),
                (Some(x), Some(y)) if y > x => Some(Side::Practice),
                _ => None,
            };
            for &f in fields {
                let (x, y) = (f.get(a), f.get(b));
                match compare(f, x.as_deref(), y.as_deref()) {
                    Verdict::BothEmpty | Verdict::Same => {}
                    Verdict::Cosmetic => cosmetic += 1,
                    Verdict::Different => out.push(Difference {
                        ehr: l.ehr,
                        practice: l.practice,
                        field: f,
                        ehr_value: x,
                        practice_value: y,
                        changed_last,
                    }),
                }
            }
            (out, cosmetic)
        })
        .collect();
    let cosmetic = per_link.iter().map(|(_, c)| c).sum();
    (per_link.into_iter().flat_map(|(d, _)| d).collect(), cosmetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosmetic_versus_real() {
        assert!(matches!(compare(Field::LastName, Some("SMITH"), Some("Smith")), Verdict::Cosmetic));
        assert!(matches!(
            compare(Field::Address1, Some("12 Main Street"), Some("12 MAIN ST")),
            Verdict::Cosmetic
        ));
        assert!(matches!(compare(Field::Zip, Some("02134-1201"), Some("02134")), Verdict::Cosmetic));
        assert!(matches!(compare(Field::Email, Some("A@X.COM"), Some("a@x.com")), Verdict::Cosmetic));
        assert!(matches!(
            compare(Field::Address1, Some("12 Main St"), Some("14 Main St")),
            Verdict::Different
        ));
        assert!(matches!(compare(Field::PhoneHome, Some("+16175550100"), None), Verdict::Different));
        assert!(matches!(compare(Field::PhoneHome, None, None), Verdict::BothEmpty));
        // Languages stored before they were read as ISO 639-2 codes.
        assert!(matches!(compare(Field::Language, Some("eng"), Some("English")), Verdict::Cosmetic));
        assert!(matches!(compare(Field::Language, Some("eng"), Some("EN")), Verdict::Cosmetic));
        assert!(matches!(compare(Field::Language, Some("eng"), Some("spa")), Verdict::Different));
        assert!(matches!(
            compare(Field::Language, Some("Klingonese"), Some("klingonese")),
            Verdict::Cosmetic
        ));
    }

    #[test]
    fn agreement_counts_present_fields() {
        let a =
            Patient { first_name: Some("Ann".into()), last_name: Some("Lee".into()), ..Patient::default() };
        let b =
            Patient { first_name: Some("ANN".into()), last_name: Some("Park".into()), ..Patient::default() };
        assert_eq!(agreement(&a, &b, &[Field::FirstName, Field::LastName, Field::City]), 0.5);
    }
}
