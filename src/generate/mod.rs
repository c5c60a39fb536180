//! A labelled, made-up population for testing reconciliation: the EHR's
//! patient export, the practice's roster, and the truth of which records are
//! the same human, with the errors real data has planted at known rates.
//!
//! Everything is derived from (seed, person index), so a seed gives the same
//! bytes every time, and rows are streamed to disk in chunks: ten million
//! patients per side need no more memory than a thousand. This module owns
//! the population's shape (who is on which side, twice on one side, or a
//! twin), the record IDs and the carried IDs, and the three file formats;
//! what a record says about its person, and how that goes wrong, is in
//! `person`. It reads nothing back and knows nothing of how ferry matches.

mod names;
mod person;

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::{AddAssign, Range};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use chrono::Datelike;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::model::Side;
use person::{People, Person, Record, mix, namesake_pair, twin_pair};

/// File names written in [`GenOptions::out_dir`].
pub const EHR_FILE: &str = "ehr_patients.csv";
pub const PRACTICE_FILE: &str = "practice_roster.csv";
pub const TRUTH_FILE: &str = "truth.csv";

const EHR_HEADER: [&str; 16] = [
    "PatientID",
    "FirstName",
    "LastName",
    "DOB",
    "Gender",
    "Address1",
    "Address2",
    "City",
    "State",
    "Zip",
    "Phone",
    "Email",
    "InsuranceProvider",
    "MemberID",
    "GroupNumber",
    "PracticeMRN",
];
const PRACTICE_HEADER: [&str; 15] = [
    "Chart Number",
    "EHR Patient ID",
    "Last Name",
    "First Name",
    "Middle Name",
    "Date of Birth",
    "Sex",
    "Street",
    "Street 2",
    "City",
    "ST",
    "ZIP Code",
    "Home Phone",
    "Cell Phone",
    "E-mail",
];
const TRUTH_HEADER: [&str; 3] = ["person_id", "side", "record_id"];

/// Record IDs are unique up to this many records per side (EHR IDs run out at
/// "E" + 8 digits).
pub const MAX_PATIENTS: usize = 90_000_000;

/// Rows built per task; tasks run in parallel, a batch at a time, and are
/// written in order.
const CHUNK_ROWS: u64 = 4096;
const CHUNKS_PER_BATCH: u64 = 32;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Records per side, within-side duplicates included.
    pub patients: usize,
    pub seed: u64,
    pub noise: Noise,
    /// Created if missing; the three files in it are replaced.
    pub out_dir: PathBuf,
}

/// The population's shape and the rates of everything that goes wrong, each
/// a fraction from 0 to 1.
///
/// "Errors" happen to one copy of a person: for a person on both sides the
/// side is chosen at random, and a within-side duplicate draws its own.
/// [`Noise::none`] and [`Noise::high`] change the errors, missing values,
/// twins, namesakes and duplicates, and keep the shape (the first three fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Noise {
    /// Persons on one side only, half in the EHR and half at the practice (0.2).
    pub single_side: f64,
    /// EHR records of persons on both sides that carry the practice MRN (0.5).
    pub ehr_carries_mrn: f64,
    /// Practice records of persons on both sides that carry the EHR patient ID (0.4).
    pub practice_carries_ehr_id: f64,

    /// Persons who have a twin: another person with the same birth date,
    /// surname, address and phone and a different first name (0.004).
    pub twins: f64,
    /// Persons who have a namesake: a parent or child of the same sex, first
    /// and last name, 20 to 40 years apart, at the same address and phone
    /// (Sr. and Jr.) (0.002).
    pub namesakes: f64,
    /// Persons of a side with a second record on that side, under a new
    /// record ID and with errors of its own (0.01).
    pub duplicate_record: f64,

    /// One keying error in the surname (0.03).
    pub last_name_typo: f64,
    /// One keying error in the first name (0.03).
    pub first_name_typo: f64,
    /// A nickname for the first name, among persons whose name has one (0.04).
    pub nickname: f64,
    /// Day and month swapped, among birth dates where both are 12 or less and differ (0.01).
    pub dob_swap: f64,
    /// One digit of the birth date mistyped (0.01).
    pub dob_digit: f64,
    /// Another street, city and ZIP (0.06).
    pub moved: f64,
    /// Another phone number (0.06).
    pub phone_changed: f64,
    /// A new surname (sometimes hyphenated with the old one), among women (0.02).
    pub married_name: f64,
    /// Names in ALL CAPS, all lower case, or with stray spaces (0.05).
    pub name_format: f64,
    /// EHR records with sex U or empty (0.01).
    pub unknown_sex: f64,

    /// Records without an email (0.2).
    pub missing_email: f64,
    /// Records without the home phone (0.05).
    pub missing_phone: f64,
    /// Records without any address field (0.03).
    pub missing_address: f64,
    /// Practice records that leave out a middle name the person has (0.25).
    pub missing_middle: f64,

    /// Carried IDs written with two extra leading zeros (0.003).
    pub leading_zero_id: f64,
    /// Carried IDs that belong to another person (0.001).
    pub wrong_id: f64,
}

impl Default for Noise {
    fn default() -> Noise {
        Noise {
            single_side: 0.2,
            ehr_carries_mrn: 0.5,
            practice_carries_ehr_id: 0.4,
            twins: 0.004,
            namesakes: 0.002,
            duplicate_record: 0.01,
            last_name_typo: 0.03,
            first_name_typo: 0.03,
            nickname: 0.04,
            dob_swap: 0.01,
            dob_digit: 0.01,
            moved: 0.06,
            phone_changed: 0.06,
            married_name: 0.02,
            name_format: 0.05,
            unknown_sex: 0.01,
            missing_email: 0.2,
            missing_phone: 0.05,
            missing_address: 0.03,
            missing_middle: 0.25,
            leading_zero_id: 0.003,
            wrong_id: 0.001,
        }
    }
}

impl Noise {
    /// No errors, missing values, twins, namesakes or duplicates: a person on both sides
    /// has the same demographics on both, up to each system's formats.
    pub fn none() -> Noise {
        Noise::default().scaled(0.0)
    }

    /// About double the default rates.
    pub fn high() -> Noise {
        Noise::default().scaled(2.0)
    }

    /// Every rate but the shape's multiplied by `factor`, capped at 1.
    fn scaled(self, factor: f64) -> Noise {
        let s = |rate: f64| (rate * factor).min(1.0);
        Noise {
            single_side: self.single_side,
            ehr_carries_mrn: self.ehr_carries_mrn,
            practice_carries_ehr_id: self.practice_carries_ehr_id,
            twins: s(self.twins),
            namesakes: s(self.namesakes),
            duplicate_record: s(self.duplicate_record),
            last_name_typo: s(self.last_name_typo),
            first_name_typo: s(self.first_name_typo),
            nickname: s(self.nickname),
            dob_swap: s(self.dob_swap),
            dob_digit: s(self.dob_digit),
            moved: s(self.moved),
            phone_changed: s(self.phone_changed),
            married_name: s(self.married_name),
            name_format: s(self.name_format),
            unknown_sex: s(self.unknown_sex),
            missing_email: s(self.missing_email),
            missing_phone: s(self.missing_phone),
            missing_address: s(self.missing_address),
            missing_middle: s(self.missing_middle),
            leading_zero_id: s(self.leading_zero_id),
            wrong_id: s(self.wrong_id),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        let rates = [
            ("single_side", self.single_side),
            ("ehr_carries_mrn", self.ehr_carries_mrn),
            ("practice_carries_ehr_id", self.practice_carries_ehr_id),
            ("twins", self.twins),
            ("namesakes", self.namesakes),
            ("duplicate_record", self.duplicate_record),
            ("last_name_typo", self.last_name_typo),
            ("first_name_typo", self.first_name_typo),
            ("nickname", self.nickname),
            ("dob_swap", self.dob_swap),
            ("dob_digit", self.dob_digit),
            ("moved", self.moved),
            ("phone_changed", self.phone_changed),
            ("married_name", self.married_name),
            ("name_format", self.name_format),
            ("unknown_sex", self.unknown_sex),
            ("missing_email", self.missing_email),
            ("missing_phone", self.missing_phone),
            ("missing_address", self.missing_address),
            ("missing_middle", self.missing_middle),
            ("leading_zero_id", self.leading_zero_id),
            ("wrong_id", self.wrong_id),
        ];
        for (name, rate) in rates {
            ensure!((0.0..=1.0).contains(&rate), "noise rate {name} is {rate}; rates run from 0 to 1");
        }
        // With everyone on one side only there is nothing to reconcile, and
        // the split below would divide by zero.
        ensure!(self.single_side < 1.0, "noise rate single_side must be below 1");
        Ok(())
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenSummary {
    pub persons: usize,
    pub ehr_records: usize,
    pub practice_records: usize,
    /// Persons with records on both sides.
    pub true_pairs: usize,
    /// (EHR record, practice record) pairs of the same person: `true_pairs`
    /// plus the pairs that within-side duplicates add.
    pub true_record_pairs: usize,
    pub ehr_only: usize,
    pub practice_only: usize,
    /// Second records of a person on one side; each side has this many.
    pub duplicates_per_side: usize,
    /// Pairs of twins (both persons of a pair are counted in `persons`).
    pub twin_pairs: usize,
    /// Pairs of namesakes, parent and child (both counted in `persons`).
    pub namesake_pairs: usize,
    /// EHR records with a PracticeMRN.
    pub ehr_carrying_mrn: usize,
    /// Practice records with an EHR Patient ID.
    pub practice_carrying_ehr_id: usize,
    pub planted: Planted,
}

/// How many of each error and gap were planted, counted on the records
/// written (a duplicate record's own errors included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planted {
    pub last_name_typos: usize,
    pub first_name_typos: usize,
    pub nicknames: usize,
    pub dob_swaps: usize,
    pub dob_digit_errors: usize,
    pub moves: usize,
    pub phone_changes: usize,
    pub married_names: usize,
    pub name_formats: usize,
    pub unknown_sex: usize,
    pub missing_emails: usize,
    pub missing_phones: usize,
    pub missing_addresses: usize,
    pub missing_middle_names: usize,
    pub leading_zero_ids: usize,
    pub wrong_ids: usize,
}

impl AddAssign for Planted {
    fn add_assign(&mut self, o: Planted) {
        self.last_name_typos += o.last_name_typos;
        self.first_name_typos += o.first_name_typos;
        self.nicknames += o.nicknames;
        self.dob_swaps += o.dob_swaps;
        self.dob_digit_errors += o.dob_digit_errors;
        self.moves += o.moves;
        self.phone_changes += o.phone_changes;
        self.married_names += o.married_names;
        self.name_formats += o.name_formats;
        self.unknown_sex += o.unknown_sex;
        self.missing_emails += o.missing_emails;
        self.missing_phones += o.missing_phones;
        self.missing_addresses += o.missing_addresses;
        self.missing_middle_names += o.missing_middle_names;
        self.leading_zero_ids += o.leading_zero_ids;
        self.wrong_ids += o.wrong_ids;
    }
}

/// Write `ehr_patients.csv`, `practice_roster.csv` and `truth.csv` in
/// `opts.out_dir`. Each file is written under a temporary name and renamed
/// when complete, so a failed run never leaves a file that looks whole.
pub fn generate(opts: &GenOptions) -> anyhow::Result<GenSummary> {
    opts.noise.check()?;
    if opts.patients > MAX_PATIENTS {
        bail!("{} patients per side is more than the {MAX_PATIENTS} record IDs can number", opts.patients);
    }
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pop = Population::new(opts);

    let mut truth = PartFile::create(&dir.join(TRUTH_FILE))?;
    truth.write(&header(&TRUTH_HEADER, csv::Terminator::Any(b'\n'))?)?;
    let mut summary = pop.summary();
    for side in [Side::Ehr, Side::Practice] {
        let (name, head) = match side {
            Side::Ehr => (EHR_FILE, [UTF8_BOM, &header(&EHR_HEADER, csv::Terminator::CRLF)?].concat()),
            Side::Practice => (PRACTICE_FILE, header(&PRACTICE_HEADER, csv::Terminator::CRLF)?),
        };
        let mut out = PartFile::create(&dir.join(name))?;
        out.write(&head)?;
        let (planted, carrying) = pop.write_side(side, &mut out, &mut truth)?;
        out.finish()?;
        summary.planted += planted;
        match side {
            Side::Ehr => summary.ehr_carrying_mrn = carrying,
            Side::Practice => summary.practice_carrying_ehr_id = carrying,
        }
    }
    truth.finish()?;
    Ok(summary)
}

/// The one place CSV writers are built: quoting only where needed, the
/// line ending each file uses.
fn csv_writer(terminator: csv::Terminator, capacity: usize) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().terminator(terminator).from_writer(Vec::with_capacity(capacity))
}

fn header(names: &[&str], terminator: csv::Terminator) -> anyhow::Result<Vec<u8>> {
    let mut w = csv_writer(terminator, 256);
    w.write_record(names)?;
    Ok(w.into_inner().map_err(|e| e.into_error())?)
}

/// A file written under a temporary name and renamed into place by `finish`.
struct PartFile {
    path: PathBuf,
    part: PathBuf,
    out: BufWriter<File>,
}

impl PartFile {
    fn create(path: &Path) -> anyhow::Result<PartFile> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
        Ok(PartFile { path: path.to_path_buf(), part, out: BufWriter::with_capacity(1 << 20, file) })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.out.write_all(bytes).with_context(|| format!("cannot write {}", self.part.display()))
    }

    /// Generated files can be made again, so no fsync: the rename is only
    /// there so a half-written file is never mistaken for a whole one.
    fn finish(mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("cannot write {}", self.part.display()))?;
        std::fs::rename(&self.part, &self.path)
            .with_context(|| format!("cannot rename {} to {}", self.part.display(), self.path.display()))
    }
}

/// A keyed bijection of `[0, size)` that follows no visible pattern: it
/// orders rows and numbers records, so neither row order nor IDs say which
/// records are the same person. A four-round Feistel network permutes a
/// power-of-four range at least as large; values that land outside are
/// passed through again ("cycle walking"), which keeps it a bijection of the
/// smaller range and needs under four passes on average.
#[derive(Debug)]
struct Shuffle {
    size: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Shuffle {
    fn new(size: u64, key: u64) -> Shuffle {
        let size = size.max(1);
        let bits = u64::BITS - (size - 1).leading_zeros();
        let keys = [mix(key), mix(key ^ 1), mix(key ^ 2), mix(key ^ 3)];
        Shuffle { size, half_bits: bits.div_ceil(2).max(1), keys }
    }

    fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.size);
        let mut y = self.rounds(x);
        while y >= self.size {
            y = self.rounds(y);
        }
        y
    }

    fn invert(&self, y: u64) -> u64 {
        debug_assert!(y < self.size);
        let mut x = self.rounds_back(y);
        while x >= self.size {
            x = self.rounds_back(x);
        }
        x
    }

    fn mask(&self) -> u64 {
        (1 << self.half_bits) - 1
    }

    fn rounds(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half_bits, x & self.mask());
        for k in self.keys {
            (l, r) = (r, l ^ (mix(r ^ k) & self.mask()));
        }
        l << self.half_bits | r
    }

    fn rounds_back(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half_bits, x & self.mask());
        for k in self.keys.into_iter().rev() {
            (l, r) = (r ^ (mix(l ^ k) & self.mask()), l);
        }
        l << self.half_bits | r
    }
}

fn ix(side: Side) -> usize {
    match side {
        Side::Ehr => 0,
        Side::Practice => 1,
    }
}

/// Who is where. Persons `[0, both)` are on both sides, the next `only` in
/// the EHR alone, the `only` after those at the practice alone. Each side
/// numbers its records by slot: slot `i < base` is the side's `i`-th person's
/// first record, the slots above are the within-side duplicates. Rows are
/// slots in shuffled order.
struct Population {
    people: People,
    /// Records per side.
    n: u64,
    /// Duplicate records per side.
    dups: u64,
    /// Persons per side.
    base: u64,
    both: u64,
    only: u64,
    /// Row -> slot, per side.
    rows: [Shuffle; 2],
    /// Duplicate number -> the side's person index it repeats.
    repeats: [Shuffle; 2],
    /// Slot -> record ID number, and the number the IDs start at.
    ids: [Shuffle; 2],
    id_start: [u64; 2],
}

impl Population {
    fn new(opts: &GenOptions) -> Population {
        let noise = &opts.noise;
        let n = opts.patients as u64;
        // `dup` of a side's persons have a second record: dups = dup * base
        // and base + dups = n.
        let dup = noise.duplicate_record;
        let dups = ((n as f64 * dup / (1.0 + dup)).round() as u64).min(n / 2);
        let base = n - dups;
        // Persons on both sides are (1 - s) of all persons and each side's
        // singles s/2, so each side's persons are (1 - s/2) of all.
        let s = noise.single_side;
        let both = ((base as f64 * (1.0 - s) / (1.0 - s / 2.0)).round() as u64).min(base);
        let key = |purpose: u64| mix(opts.seed ^ mix(purpose));
        let (ehr_start, ehr_span) =
            if n <= 9_000_000 { (1_000_000, 9_000_000) } else { (10_000_000, 90_000_000) };
        let (chart_start, chart_span) =
            if n <= 9_900_000 { (100_000, 9_900_000) } else { (100_000, 99_900_000) };
        Population {
            people: People::new(opts.seed, noise.clone()),
            n,
            dups,
            base,
            both,
            only: base - both,
            rows: [Shuffle::new(n, key(1)), Shuffle::new(n, key(2))],
            repeats: [Shuffle::new(base, key(3)), Shuffle::new(base, key(4))],
            ids: [Shuffle::new(ehr_span, key(5)), Shuffle::new(chart_span, key(6))],
            id_start: [ehr_start, chart_start],
        }
    }

    fn persons(&self) -> u64 {
        self.both + 2 * self.only
    }

    /// Whether the person has records in the EHR and at the practice.
    fn sides_of(&self, person: u64) -> [bool; 2] {
        let ehr_end = self.both + self.only;
        [person < ehr_end, person < self.both || person >= ehr_end]
    }

    fn person_of(&self, side: Side, index: u64) -> u64 {
        match side {
            Side::Practice if index >= self.both => index + self.only,
            _ => index,
        }
    }

    fn index_of(&self, side: Side, person: u64) -> u64 {
        match side {
            Side::Practice if person >= self.both => person - self.only,
            _ => person,
        }
    }

    /// The person a slot belongs to, and whether it is their second record.
    fn slot_owner(&self, side: Side, slot: u64) -> (u64, bool) {
        if slot < self.base {
            (self.person_of(side, slot), false)
        } else {
            (self.person_of(side, self.repeats[ix(side)].apply(slot - self.base)), true)
        }
    }

    fn is_repeated(&self, side: Side, person: u64) -> bool {
        self.dups > 0 && self.repeats[ix(side)].invert(self.index_of(side, person)) < self.dups
    }

    fn record_id(&self, side: Side, slot: u64) -> String {
        let number = self.id_start[ix(side)] + self.ids[ix(side)].apply(slot);
        match side {
            Side::Ehr => format!("E{number}"),
            Side::Practice => number.to_string(),
        }
    }

    fn summary(&self) -> GenSummary {
        // A person with e records in the EHR and p at the practice makes e*p
        // true pairs; e and p are 1 or 2.
        let mut record_pairs = self.both;
        for k in 0..self.dups {
            let person = self.repeats[0].apply(k);
            if person < self.both {
                record_pairs += if self.is_repeated(Side::Practice, person) { 3 } else { 1 };
            }
            let person = self.person_of(Side::Practice, self.repeats[1].apply(k));
            if person < self.both && !self.is_repeated(Side::Ehr, person) {
                record_pairs += 1;
            }
        }
        let seed = self.people.seed;
        let noise = &self.people.noise;
        let twins = (0..self.persons() / 2).filter(|&k| twin_pair(seed, k, noise.twins)).count();
        let namesakes =
            (0..self.persons() / 2).filter(|&k| namesake_pair(seed, k, noise.twins, noise.namesakes)).count();
        GenSummary {
            persons: self.persons() as usize,
            ehr_records: self.n as usize,
            practice_records: self.n as usize,
            true_pairs: self.both as usize,
            true_record_pairs: record_pairs as usize,
            ehr_only: self.only as usize,
            practice_only: self.only as usize,
            duplicates_per_side: self.dups as usize,
            twin_pairs: twins,
            namesake_pairs: namesakes,
            ..GenSummary::default()
        }
    }

    /// Build the side's rows in parallel chunks and write them in order.
    /// Returns what was planted and how many records carry the other side's ID.
    fn write_side(
        &self,
        side: Side,
        out: &mut PartFile,
        truth: &mut PartFile,
    ) -> anyhow::Result<(Planted, usize)> {
        let chunks = self.n.div_ceil(CHUNK_ROWS);
        let (mut planted, mut carrying) = (Planted::default(), 0);
        let mut next = 0;
        while next < chunks {
            let batch = next..(next + CHUNKS_PER_BATCH).min(chunks);
            next = batch.end;
            let built: Vec<Chunk> = batch
                .into_par_iter()
                .map(|c| self.chunk(side, c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(self.n)))
                .collect::<anyhow::Result<_>>()?;
            for c in built {
                out.write(&c.rows)?;
                truth.write(&c.truth)?;
                planted += c.planted;
                carrying += c.carrying;
            }
        }
        Ok((planted, carrying))
    }

    fn chunk(&self, side: Side, rows: Range<u64>) -> anyhow::Result<Chunk> {
        // Sized for a chunk's rows (about 200 and 20 bytes each), so the
        // buffers rarely grow.
        let rows_len = (rows.end - rows.start) as usize;
        let mut out = csv_writer(csv::Terminator::CRLF, rows_len * 256);
        let mut truth = csv_writer(csv::Terminator::Any(b'\n'), rows_len * 24);
        let (mut planted, mut carrying) = (Planted::default(), 0);
        for row in rows {
            let slot = self.rows[ix(side)].apply(row);
            let (person, repeat) = self.slot_owner(side, slot);
            let p = self.people.person(person, self.sides_of(person));
            let mut rng = record_rng(self.people.seed, side, slot);
            let errors = if repeat { self.people.draw_errors(&p, &mut rng) } else { p.errors[ix(side)] };
            let record = self.people.record(&p, side, errors, &mut rng, &mut planted);
            let carried = self.carried_id(side, person, &mut rng, &mut planted);
            carrying += usize::from(carried.is_some());
            let id = self.record_id(side, slot);
            let carried = carried.as_deref().unwrap_or("");
            match side {
                Side::Ehr => write_ehr(&mut out, &id, &record, &p, carried)?,
                Side::Practice => write_practice(&mut out, &id, &record, carried)?,
            }
            truth.write_record([person.to_string().as_str(), side.as_str(), &id])?;
        }
        let mut rows = out.into_inner().map_err(|e| e.into_error())?;
        if side == Side::Practice {
            rows = windows_1252(rows)?;
        }
        let truth = truth.into_inner().map_err(|e| e.into_error())?;
        Ok(Chunk { rows, truth, planted, carrying })
    }

    /// The other side's ID this record carries, if any: the person's first
    /// record there, now and then padded with zeros or another person's.
    fn carried_id(&self, side: Side, person: u64, rng: &mut StdRng, planted: &mut Planted) -> Option<String> {
        if person >= self.both {
            return None;
        }
        let noise = &self.people.noise;
        let rate = match side {
            Side::Ehr => noise.ehr_carries_mrn,
            Side::Practice => noise.practice_carries_ehr_id,
        };
        if !rng.random_bool(rate) {
            return None;
        }
        let mut owner = person;
        if self.both > 1 && rng.random_bool(noise.wrong_id) {
            owner = (person + 1 + rng.random_range(0..self.both - 1)) % self.both;
            planted.wrong_ids += 1;
        }
        let other = side.other();
        let mut id = self.record_id(other, self.index_of(other, owner));
        if rng.random_bool(noise.leading_zero_id) {
            id.insert_str(0, "00");
            planted.leading_zero_ids += 1;
        }
        Some(id)
    }
}

/// One record's own random stream: its format choices, and a duplicate's errors.
fn record_rng(seed: u64, side: Side, slot: u64) -> StdRng {
    StdRng::seed_from_u64(mix(seed ^ mix(slot.wrapping_mul(2) + ix(side) as u64)))
}

struct Chunk {
    rows: Vec<u8>,
    truth: Vec<u8>,
    planted: Planted,
    carrying: usize,
}

fn write_ehr(
    w: &mut csv::Writer<Vec<u8>>,
    id: &str,
    r: &Record,
    p: &Person,
    practice_mrn: &str,
) -> csv::Result<()> {
    let dob = format!("{:02}/{:02}/{:04}", r.birth.month(), r.birth.day(), r.birth.year());
    let (provider, member, group) =
        p.insurance.as_ref().map_or(("", "", ""), |i| (i.provider, i.member_id.as_str(), i.group.as_str()));
    w.write_record([
        id,
        &r.first,
        &r.last,
        &dob,
        r.sex,
        &r.address1,
        &r.address2,
        r.city,
        r.state,
        &r.zip,
        &r.phone,
        &r.email,
        provider,
        member,
        group,
        practice_mrn,
    ])
}

fn write_practice(w: &mut csv::Writer<Vec<u8>>, chart: &str, r: &Record, ehr_id: &str) -> csv::Result<()> {
    let dob = format!("{:04}-{:02}-{:02}", r.birth.year(), r.birth.month(), r.birth.day());
    w.write_record([
        chart,
        ehr_id,
        &r.last,
        &r.first,
        &r.middle,
        &dob,
        r.sex,
        &r.address1,
        &r.address2,
        r.city,
        r.state,
        &r.zip,
        &r.phone,
        &r.mobile,
        &r.email,
    ])
}

/// The roster's encoding. The name tables hold only characters it has, so a
/// character it lacks is a bug in the tables, not something to paper over.
fn windows_1252(utf8: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let text = String::from_utf8(utf8)?;
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    ensure!(!unmappable, "a generated value has a character Windows-1252 cannot hold");
    Ok(match bytes {
        Cow::Owned(b) => b,
        // All ASCII: the bytes are already right.
        Cow::Borrowed(_) => text.into_bytes(),
    })
}

#[cfg(test)]
mod tests;
