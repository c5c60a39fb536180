//! The generator's files read back through ferry's own schemas and checked
//! against the truth it wrote.

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;

use super::*;
use crate::flatfile::{ParsedFile, Schema, address_key, name_key, parse_bytes, text_key, zip_key};
use crate::job::{InputSchema, load_schema_file};
use crate::model::Patient;

fn generate_in(dir: &Path, patients: usize, seed: u64, noise: Noise) -> GenSummary {
    let opts = GenOptions { patients, seed, noise, out_dir: dir.to_path_buf() };
    generate(&opts).expect("generate")
}

fn schema(file: &str) -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(file);
    match load_schema_file(&path) {
        Ok(InputSchema::Flat(s)) => s,
        other => panic!("{file}: {:?}", other.err()),
    }
}

fn parse(dir: &Path, side: Side) -> ParsedFile {
    let (file, schema) = match side {
        Side::Ehr => (EHR_FILE, schema("ehr_patients.toml")),
        Side::Practice => (PRACTICE_FILE, schema("practice_roster.toml")),
    };
    let bytes = std::fs::read(dir.join(file)).unwrap();
    // After every generated birth date, whatever the clock says.
    let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    parse_bytes(&bytes, &schema, side, today)
}

/// (person, side, record ID) for every record, in file order.
fn truth(dir: &Path) -> Vec<(u64, Side, String)> {
    let text = std::fs::read_to_string(dir.join(TRUTH_FILE)).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("person_id,side,record_id"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), Side::parse(f[1]).unwrap(), f[2].to_string())
        })
        .collect()
}

/// Parsed records by side and own ID.
fn records(dir: &Path) -> HashMap<(Side, String), Patient> {
    let mut out = HashMap::new();
    for side in [Side::Ehr, Side::Practice] {
        for r in parse(dir, side).records {
            out.insert((side, r.patient.own_id(side).unwrap().to_string()), r.patient);
        }
    }
    out
}

#[test]
fn same_seed_gives_the_same_bytes() {
    let (a, b, c) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sa = generate_in(a.path(), 3000, 7, Noise::default());
    let sb = generate_in(b.path(), 3000, 7, Noise::default());
    generate_in(c.path(), 3000, 8, Noise::default());
    assert_eq!(sa, sb);
    for file in [EHR_FILE, PRACTICE_FILE, TRUTH_FILE] {
        let bytes = std::fs::read(a.path().join(file)).unwrap();
        assert!(bytes == std::fs::read(b.path().join(file)).unwrap(), "{file} differs for one seed");
        assert!(bytes != std::fs::read(c.path().join(file)).unwrap(), "{file} is the same for two seeds");
    }
    let left: Vec<_> = std::fs::read_dir(a.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "no .part files left: {left:?}");
}

#[test]
fn counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5000;
    let s = generate_in(dir.path(), n, 1, Noise::default());
    assert_eq!((s.ehr_records, s.practice_records), (n, n));
    assert_eq!(s.persons, s.true_pairs + s.ehr_only + s.practice_only);
    assert_eq!(s.true_pairs + s.ehr_only + s.duplicates_per_side, n);
    // 80/10/10 of persons, 1% of a side's persons twice.
    assert!((s.true_pairs as f64 / s.persons as f64 - 0.8).abs() < 0.005, "{s:?}");
    assert_eq!(s.duplicates_per_side, 50, "{s:?}");

    let truth = truth(dir.path());
    assert_eq!(truth.len(), 2 * n);
    let mut per_person: HashMap<u64, [usize; 2]> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (person, side, id) in &truth {
        per_person.entry(*person).or_default()[ix(*side)] += 1;
        assert!(ids.insert((*side, id.clone())), "{side} {id} twice");
    }
    assert_eq!(per_person.len(), s.persons);
    let both = per_person.values().filter(|c| c[0] > 0 && c[1] > 0).count();
    assert_eq!(both, s.true_pairs);
    let pairs: usize = per_person.values().map(|c| c[0] * c[1]).sum();
    assert_eq!(pairs, s.true_record_pairs);
    let twice = per_person.values().filter(|c| c[0] == 2).count();
    assert_eq!(twice, s.duplicates_per_side);
    assert!(per_person.values().all(|c| c[0] <= 2 && c[1] <= 2));

    for (file, rows) in [(EHR_FILE, n), (PRACTICE_FILE, n)] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        let records = csv::ReaderBuilder::new().from_reader(&bytes[..]).byte_records().count();
        assert_eq!(records, rows, "{file}");
    }
}

#[test]
fn files_parse_with_the_repo_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5000;
    generate_in(dir.path(), n, 2, Noise::default());

    let ehr = std::fs::read(dir.path().join(EHR_FILE)).unwrap();
    let head = "\u{FEFF}PatientID,FirstName,LastName,DOB,Gender,Address1,Address2,City,State,Zip,Phone,Email,\
                InsuranceProvider,MemberID,GroupNumber,PracticeMRN\r\n";
    assert!(ehr.starts_with(head.as_bytes()), "EHR header, BOM, CRLF");
    let roster = std::fs::read(dir.path().join(PRACTICE_FILE)).unwrap();
    let head = "Chart Number,EHR Patient ID,Last Name,First Name,Middle Name,Date of Birth,Sex,Street,\
                Street 2,City,ST,ZIP Code,Home Phone,Cell Phone,E-mail\r\n";
    assert!(roster.starts_with(head.as_bytes()), "roster header, no BOM, CRLF");
    for bytes in [&ehr, &roster] {
        let bare_lf = bytes.windows(2).filter(|w| w[1] == b'\n' && w[0] != b'\r').count();
        assert_eq!(bare_lf, 0, "every line ends in CRLF");
    }
    assert!(std::str::from_utf8(&roster).is_err(), "the roster is Windows-1252, with accents");

    for side in [Side::Ehr, Side::Practice] {
        let p = parse(dir.path(), side);
        assert_eq!(p.fatal, None);
        assert_eq!((p.read, p.accepted(), p.rejected()), (n as u64, n as u64, 0), "{side}: {:?}", p.rejects);
        assert_eq!(p.warnings(), 0, "{side}: {:?}", &p.rejects[..p.rejects.len().min(5)]);
        for r in &p.records {
            let id = r.patient.own_id(side).unwrap();
            match side {
                Side::Ehr => assert!(id.len() == 8 && id.starts_with('E'), "{id}"),
                Side::Practice => assert!((6..=7).contains(&id.len()) && !id.starts_with('0'), "{id}"),
            }
            if let Some(e) = &r.patient.email {
                assert_eq!(e, &e.to_lowercase());
            }
        }
        let accented =
            p.records.iter().filter(|r| !r.patient.last_name.as_deref().unwrap().is_ascii()).count();
        assert!(accented > 0, "{side}: some surnames have accents");
        let commas = p
            .records
            .iter()
            .filter(|r| r.patient.address2.as_deref().is_some_and(|a| a.contains(',')))
            .count();
        assert!(commas > 0, "{side}: addresses with commas survive");
        let plus4 =
            p.records.iter().filter(|r| r.patient.zip.as_deref().is_some_and(|z| z.len() == 10)).count();
        assert!(plus4 > 0, "{side}: some ZIP+4");
    }
}

#[test]
fn without_noise_both_sides_agree() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate_in(dir.path(), 3000, 3, Noise::none());
    assert_eq!((s.duplicates_per_side, s.twin_pairs, s.namesake_pairs), (0, 0, 0));
    assert_eq!(s.planted, Planted::default());
    let records = records(dir.path());
    let mut sides: HashMap<u64, [Option<String>; 2]> = HashMap::new();
    for (person, side, id) in truth(dir.path()) {
        sides.entry(person).or_default()[ix(side)] = Some(id);
    }
    let key = |p: &Patient| {
        let k = |v: &Option<compact_str::CompactString>, f: fn(&str) -> String| v.as_deref().map(f);
        (
            (k(&p.first_name, name_key), k(&p.last_name, name_key), p.birth_date, p.sex),
            (k(&p.address1, address_key), k(&p.address2, address_key), k(&p.city, text_key)),
            (p.state.clone(), k(&p.zip, zip_key), p.phone_home.clone(), p.email.clone()),
        )
    };
    let mut compared = 0;
    for [e, p] in sides.values() {
        if let (Some(e), Some(p)) = (e, p) {
            let (e, p) = (&records[&(Side::Ehr, e.clone())], &records[&(Side::Practice, p.clone())]);
            assert_eq!(key(e), key(p));
            assert!(
                e.first_name.is_some() && e.address1.is_some() && e.phone_home.is_some() && e.email.is_some()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, s.true_pairs);
}

#[test]
fn carried_ids_point_at_the_same_person_but_for_the_planted_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Enough wrong and zero-padded IDs to count.
    let noise = Noise { wrong_id: 0.02, leading_zero_id: 0.03, ..Noise::default() };
    let s = generate_in(dir.path(), 5000, 4, noise);
    let owner: HashMap<(Side, String), u64> =
        truth(dir.path()).into_iter().map(|(person, side, id)| ((side, id), person)).collect();
    let (mut carried, mut wrong, mut padded) = (0, 0, 0);
    for ((side, id), p) in records(dir.path()) {
        let Some(other_id) = p.carried_id(side) else { continue };
        carried += 1;
        let unpadded = match other_id.strip_prefix("00") {
            Some(rest) => {
                padded += 1;
                rest
            }
            None => other_id,
        };
        let target = owner[&(side.other(), unpadded.to_string())];
        if target != owner[&(side, id)] {
            wrong += 1;
        }
    }
    assert_eq!(carried, s.ehr_carrying_mrn + s.practice_carrying_ehr_id);
    assert_eq!((wrong, padded), (s.planted.wrong_ids, s.planted.leading_zero_ids));
    assert!(wrong > 0 && padded > 0);
}

/// The EHR records of persons 2k+1 and 2k (twins, namesakes) where both
/// have one.
fn ehr_pairs(dir: &Path) -> Vec<(Patient, Patient)> {
    let mut records = records(dir);
    let mut ehr: HashMap<u64, Patient> = HashMap::new();
    for (person, side, id) in truth(dir) {
        if side == Side::Ehr {
            ehr.insert(person, records.remove(&(side, id)).unwrap());
        }
    }
    let odd: Vec<u64> = ehr.keys().copied().filter(|p| p % 2 == 1 && ehr.contains_key(&(p ^ 1))).collect();
    odd.into_iter().map(|p| (ehr.remove(&p).unwrap(), ehr.remove(&(p ^ 1)).unwrap())).collect()
}

#[test]
fn twins_share_all_but_their_first_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate_in(dir.path(), 2000, 5, Noise { twins: 1.0, ..Noise::none() });
    assert_eq!(s.twin_pairs, s.persons / 2);
    let pairs = ehr_pairs(dir.path());
    assert!(pairs.len() > 500, "{}", pairs.len());
    for (younger, elder) in &pairs {
        let shared = |p: &Patient| {
            (
                p.last_name.clone(),
                p.birth_date,
                p.address1.as_deref().map(address_key),
                p.zip.as_deref().map(zip_key),
            )
        };
        assert_eq!(shared(younger), shared(elder));
        assert_eq!(younger.phone_home, elder.phone_home);
        assert_ne!(younger.first_name, elder.first_name);
    }
}

#[test]
fn namesakes_share_all_but_their_birth_years() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate_in(dir.path(), 2000, 5, Noise { namesakes: 1.0, ..Noise::none() });
    assert_eq!((s.namesake_pairs, s.twin_pairs), (s.persons / 2, 0));
    let pairs = ehr_pairs(dir.path());
    assert!(pairs.len() > 500, "{}", pairs.len());
    for (one, other) in &pairs {
        let shared = |p: &Patient| {
            (
                p.first_name.clone(),
                p.last_name.clone(),
                p.sex,
                p.address1.as_deref().map(address_key),
                p.zip.as_deref().map(zip_key),
                p.phone_home.clone(),
            )
        };
        assert_eq!(shared(one), shared(other));
        let (a, b) = (one.birth_date.unwrap(), other.birth_date.unwrap());
        assert!((20..=40).contains(&(a.year() - b.year()).abs()), "{a} {b}");
        assert_eq!(a.month(), b.month());
    }
}

#[test]
fn planted_counts_are_near_their_rates() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    let noise = Noise::default();
    let s = generate_in(dir.path(), n, 6, noise.clone());
    let p = &s.planted;
    // Each person's first records draw errors once; each duplicate draws its own.
    let draws = (s.persons + 2 * s.duplicates_per_side) as f64;
    let records = 2.0 * n as f64;
    let near = |what: &str, count: usize, expected: f64| {
        let slack = 5.0 * expected.sqrt() + 3.0;
        assert!((count as f64 - expected).abs() <= slack, "{what}: {count}, expected about {expected:.0}");
    };
    near("last-name typos", p.last_name_typos, noise.last_name_typo * draws);
    near("first-name typos", p.first_name_typos, noise.first_name_typo * draws);
    near("birth-date digits", p.dob_digit_errors, noise.dob_digit * draws);
    near("moves", p.moves, noise.moved * draws);
    near("phone changes", p.phone_changes, noise.phone_changed * draws);
    near("name formats", p.name_formats, noise.name_format * draws);
    near("married names", p.married_names, noise.married_name * draws * 0.51);
    near("missing emails", p.missing_emails, noise.missing_email * records);
    near("missing phones", p.missing_phones, noise.missing_phone * records);
    near("missing addresses", p.missing_addresses, noise.missing_address * records);
    near("unknown sex", p.unknown_sex, noise.unknown_sex * n as f64);
    near("twins", s.twin_pairs, noise.twins * (s.persons / 2) as f64);
    near("namesakes", s.namesake_pairs, noise.namesakes * (s.persons / 2) as f64);
    // Only some names have nicknames and some dates allow a swap.
    assert!((0.3..=1.0).contains(&(p.nicknames as f64 / (noise.nickname * draws))), "{p:?}");
    assert!((0.2..=0.6).contains(&(p.dob_swaps as f64 / (noise.dob_swap * draws))), "{p:?}");
    // Carried IDs: on records of persons on both sides.
    let ehr_both = s.true_pairs as f64 * (1.0 + noise.duplicate_record);
    near("carried MRNs", s.ehr_carrying_mrn, noise.ehr_carries_mrn * ehr_both);
    near("carried EHR IDs", s.practice_carrying_ehr_id, noise.practice_carries_ehr_id * ehr_both);
    let carrying = (s.ehr_carrying_mrn + s.practice_carrying_ehr_id) as f64;
    near("leading zeros", p.leading_zero_ids, noise.leading_zero_id * carrying);
    near("wrong IDs", p.wrong_ids, noise.wrong_id * carrying);
}

#[test]
fn high_noise_plants_more() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let normal = generate_in(a.path(), 5000, 9, Noise::default());
    let high = generate_in(b.path(), 5000, 9, Noise::high());
    assert!(high.planted.moves > normal.planted.moves * 3 / 2, "{:?} {:?}", high.planted, normal.planted);
    assert!(high.duplicates_per_side > normal.duplicates_per_side);
    assert_eq!(high.true_pairs + high.ehr_only + high.duplicates_per_side, 5000);
}

#[test]
fn tiny_populations() {
    for n in [0, 1, 2, 7] {
        let dir = tempfile::tempdir().unwrap();
        let s = generate_in(dir.path(), n, 10, Noise::default());
        assert_eq!(s.true_pairs + s.ehr_only + s.duplicates_per_side, n);
        assert_eq!(truth(dir.path()).len(), 2 * n);
        for side in [Side::Ehr, Side::Practice] {
            assert_eq!(
                (parse(dir.path(), side).accepted(), parse(dir.path(), side).rejected()),
                (n as u64, 0)
            );
        }
    }
}

#[test]
fn bad_rates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for noise in [Noise { moved: 1.5, ..Noise::default() }, Noise { single_side: 1.0, ..Noise::default() }] {
        let opts = GenOptions { patients: 10, seed: 1, noise, out_dir: dir.path().to_path_buf() };
        assert!(generate(&opts).is_err());
    }
}

#[test]
fn shuffle_is_a_bijection() {
    for size in [1, 2, 3, 10, 1000, 4097] {
        let s = Shuffle::new(size, 42);
        let mut seen: Vec<u64> = (0..size).map(|x| s.apply(x)).collect();
        assert!((0..size).all(|x| s.invert(s.apply(x)) == x));
        seen.sort();
        assert_eq!(seen, (0..size).collect::<Vec<_>>());
    }
    let s = Shuffle::new(1000, 42);
    let fixed = (0..1000).filter(|&x| s.apply(x) == x).count();
    assert!(fixed < 10, "not the identity: {fixed}");
}
