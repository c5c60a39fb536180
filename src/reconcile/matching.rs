//! Demographic matching in the Fellegi–Sunter way, for records no trusted
//! ID links, and for duplicates within one side.
//!
//! 1. **Features.** Each record is reduced once to comparison keys: names
//!    folded to upper-case letters with a Soundex code, the birth date, sex,
//!    5-digit ZIP, address key, phone numbers and email.
//! 2. **Blocking.** Only pairs that share at least one blocking key are
//!    compared (birth date with the first or last name's code, the birth date
//!    with day and month swapped, both name codes with the birth year, a
//!    phone, an email, the street address, the surname's code with the
//!    birth year and month). Blocks larger than
//!    [`MatchSettings::max_block`] pairs are skipped and counted, so common
//!    values cannot make the work grow with the square of the input.
//! 3. **Comparison.** Each pair gets a level per comparison (exact,
//!    nickname, close Jaro–Winkler, day and month swapped, ...), or "missing"
//!    when either side lacks the value; missing values weigh nothing.
//! 4. **Weights.** u (how often a level occurs between two random people) is
//!    counted on random pairs; m (how often it occurs for the same person)
//!    and the share of matches among candidate pairs are estimated by EM on
//!    the candidate pairs' level patterns, with u held fixed. The job may fix
//!    any m or u instead. A pair's match weight is the log2 of its odds.
//! 5. **Decision.** Above the link probability a pair is linked, between the
//!    review and link probabilities it is a possible match for a person to
//!    look at, below it nothing. Links are one-to-one, best weight first; a
//!    pair is never linked automatically when its first names disagree
//!    outright (twins share everything else), when its birth dates differ
//!    and no address, phone or email agrees (a common name and a near
//!    birthday are not a person), or when another candidate of either
//!    record comes within [`AMBIGUITY_BITS`] of it; a candidate whose first
//!    name differs outright is a sibling, not a rival.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use chrono::Datelike;
use rayon::prelude::*;

use super::nicknames;
use crate::flatfile::{address_key, name_key};
use compact_str::CompactString;

use crate::model::{Patient, PatientRecord, Sex};

/// Comparisons, in the order of a pattern's levels.
pub const COMPARISONS: [Comparison; 8] = [
    Comparison::FirstName,
    Comparison::LastName,
    Comparison::BirthDate,
    Comparison::Sex,
    Comparison::Address,
    Comparison::Zip,
    Comparison::Phone,
    Comparison::Email,
];
const N: usize = COMPARISONS.len();

/// A level value meaning "missing on either side".
const MISSING: u8 = u8::MAX;

/// A pair is not linked automatically when another candidate of either of
/// its records has a weight within this many bits (a factor of 8 in odds).
pub const AMBIGUITY_BITS: f64 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    FirstName,
    LastName,
    BirthDate,
    Sex,
    Address,
    Zip,
    Phone,
    Email,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::FirstName => "first_name",
            Comparison::LastName => "last_name",
            Comparison::BirthDate => "birth_date",
            Comparison::Sex => "sex",
            Comparison::Address => "address",
            Comparison::Zip => "zip",
            Comparison::Phone => "phone",
            Comparison::Email => "email",
        }
    }

    /// Names of the levels, best agreement first; the last is "different".
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Comparison::FirstName => &["exact", "nickname", "close", "similar", "different"],
            Comparison::LastName => &["exact", "close", "similar", "different"],
            Comparison::BirthDate => &["exact", "day_month_swapped", "one_part_differs", "different"],
            Comparison::Address => &["exact", "same_number_similar_street", "different"],
            Comparison::Sex | Comparison::Zip | Comparison::Phone | Comparison::Email => {
                &["same", "different"]
            }
        }
    }

    fn index(self) -> usize {
        COMPARISONS.iter().position(|&c| c == self).unwrap_or(0)
    }
}

/// The job's matching settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchSettings {
    /// Match probability at or above which a pair is linked.
    pub link_at: f64,
    /// Match probability at or above which a pair is listed for review.
    pub review_at: f64,
    /// Blocks whose pair count exceeds this are skipped (and counted).
    pub max_block: usize,
    /// m and u probabilities fixed by the job: (comparison, level, m, u).
    pub fixed: Vec<FixedWeight>,
    /// Random pairs sampled to count u.
    pub u_sample: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FixedWeight {
    pub comparison: Comparison,
    pub level: usize,
    pub m: Option<f64>,
    pub u: Option<f64>,
}

impl Default for MatchSettings {
    fn default() -> Self {
        MatchSettings {
            link_at: 0.99,
            review_at: 0.5,
            max_block: 2_500,
            fixed: Vec::new(),
            u_sample: 500_000,
        }
    }
}

/// The comparison keys of one record.
#[derive(Debug, Clone, Default)]
pub struct Features {
    first: String,
    /// Formal names the first name may stand for ("BILL" -> William).
    first_formal: &'static [&'static str],
    /// Every other form of the first name: its formal names, its nicknames
    /// and theirs, for a typo in a nickname ("JOM" for Jim, so James).
    first_forms: Box<[&'static str]>,
    first_letters: Letters,
    middle: String,
    last: String,
    last_letters: Letters,
    first_code: u32,
    last_code: u32,
    /// (year, month, day).
    dob: Option<(i32, u32, u32)>,
    sex: Option<Sex>,
    zip: Option<u32>,
    /// House number and the rest of the address key.
    house: String,
    street: String,
    phones: [Option<u64>; 2],
    email: String,
}

impl Features {
    pub fn of(p: &Patient) -> Features {
        let key = |v: &Option<CompactString>| v.as_deref().map(name_key).unwrap_or_default();
        let (first, last) = (key(&p.first_name), key(&p.last_name));
        let address = p.address1.as_deref().map(address_key).unwrap_or_default();
        let (house, street) = match address.split_once(' ') {
            Some((h, s)) if h.bytes().any(|b| b.is_ascii_digit()) => (h.to_string(), s.to_string()),
            _ => (String::new(), address),
        };
        let phone = |v: &Option<CompactString>| {
            v.as_deref().and_then(|s| {
                let digits: String = s.chars().filter(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
        };
        let first_formal = nicknames::formal_names(&first);
        Features {
            first_code: soundex(&first),
            last_code: soundex(&last),
            first_formal,
            first_forms: nicknames::forms(&first),
            first_letters: Letters::of(&first),
            last_letters: Letters::of(&last),
            first,
            middle: key(&p.middle_name),
            last,
            dob: p.birth_date.map(|d| (d.year(), d.month(), d.day())),
            sex: p.sex.filter(|s| matches!(s, Sex::F | Sex::M)),
            zip: p.zip.as_deref().and_then(|z| z.get(..5)).and_then(|z| z.parse().ok()),
            house,
            street,
            phones: [phone(&p.phone_home), phone(&p.phone_mobile)],
            email: p.email.as_deref().map(|e| e.trim().to_lowercase()).unwrap_or_default(),
        }
    }
}

/// American Soundex of an upper-case name key, packed as the letter and
/// three digits (0 for an empty key). Spaces and other characters are
/// skipped, so "SMITH JONES" codes as one word.
pub fn soundex(key: &str) -> u32 {
    fn digit(c: u8) -> u8 {
        match c {
            b'B' | b'F' | b'P' | b'V' => 1,
            b'C' | b'G' | b'J' | b'K' | b'Q' | b'S' | b'X' | b'Z' => 2,
            b'D' | b'T' => 3,
            b'L' => 4,
            b'M' | b'N' => 5,
            b'R' => 6,
            _ => 0,
        }
    }
    let mut letters = key.bytes().filter(u8::is_ascii_uppercase);
    let Some(first) = letters.next() else { return 0 };
    let mut code = u32::from(first) << 12;
    let (mut last, mut n) = (digit(first), 0);
    for c in letters {
        let d = digit(c);
        if d != 0 && d != last {
            code |= u32::from(d) << (8 - 4 * n);
            n += 1;
            if n == 3 {
                break;
            }
        }
        // H and W do not separate equal codes; vowels do.
        if c != b'H' && c != b'W' {
            last = d;
        }
    }
    code
}

/// The levels of one pair, in [`COMPARISONS`] order.
pub type Pattern = [u8; N];

pub fn compare(a: &Features, b: &Features) -> Pattern {
    let mut p = [MISSING; N];
    p[0] = first_level(a, b);
    p[1] = if a.last.is_empty() || b.last.is_empty() {
        MISSING
    } else if a.last == b.last {
        0
    } else {
        // A hyphenated or double surname containing the other counts as close.
        let within = |x: &str, y: &str| x.len() > y.len() && x.split(' ').any(|w| w == y);
        let jw = similarity_from(0.8, (&a.last, a.last_letters), (&b.last, b.last_letters));
        if jw >= 0.92 || within(&a.last, &b.last) || within(&b.last, &a.last) {
            1
        } else if jw >= 0.8 {
            2
        } else {
            3
        }
    };
    p[2] = match (a.dob, b.dob) {
        (Some(x), Some(y)) if x == y => 0,
        (Some((y1, m1, d1)), Some((y2, m2, d2))) if y1 == y2 && m1 == d2 && d1 == m2 => 1,
        (Some((y1, m1, d1)), Some((y2, m2, d2))) => {
            let same = u8::from(y1 == y2) + u8::from(m1 == m2) + u8::from(d1 == d2);
            if same == 2 { 2 } else { 3 }
        }
        _ => MISSING,
    };
    p[3] = match (a.sex, b.sex) {
        (Some(x), Some(y)) => u8::from(x != y),
        _ => MISSING,
    };
    p[4] = if a.street.is_empty() || b.street.is_empty() {
        MISSING
    } else if a.house == b.house && a.street == b.street {
        0
    } else if a.house == b.house && jaro_winkler(&a.street, &b.street) >= 0.85 {
        1
    } else {
        2
    };
    p[5] = match (a.zip, b.zip) {
        (Some(x), Some(y)) => u8::from(x != y),
        _ => MISSING,
    };
    p[6] = if a.phones == [None; 2] || b.phones == [None; 2] {
        MISSING
    } else {
        u8::from(!a.phones.iter().flatten().any(|x| b.phones.contains(&Some(*x))))
    };
    p[7] = if a.email.is_empty() || b.email.is_empty() { MISSING } else { u8::from(a.email != b.email) };
    p
}

fn first_level(a: &Features, b: &Features) -> u8 {
    if a.first.is_empty() || b.first.is_empty() {
        return MISSING;
    }
    if a.first == b.first {
        return 0;
    }
    // "Mary Ann" against "Mary", or a first name recorded as the middle.
    let word = |x: &str, y: &str| x.len() > y.len() && x.as_bytes()[y.len()] == b' ' && x.starts_with(y);
    if nicknames::nicknames_by_formal((&a.first, a.first_formal), (&b.first, b.first_formal))
        || word(&a.first, &b.first)
        || word(&b.first, &a.first)
        || a.first == b.middle
        || b.first == a.middle
    {
        return 1;
    }
    let jw = similarity_from(0.8, (&a.first, a.first_letters), (&b.first, b.first_letters));
    if jw >= 0.92 {
        2
    } else if jw >= 0.8 || one_typo_apart(a, b) {
        3
    } else {
        4
    }
}

/// The letters of a key, for a cheap upper bound of its Jaro–Winkler
/// similarity to another: most pairs compared (and nearly all the random
/// pairs behind u) have names far apart, and the bound settles them.
#[derive(Debug, Clone, Copy, Default)]
struct Letters {
    /// A to Z one bit each; other bytes share bits 26 to 31. 0 with `len`
    /// 0 for a key the bound does not cover (not ASCII, or over 64 bytes).
    mask: u32,
    /// Letters beyond the first of each kind: len - mask's bit count.
    repeats: u8,
    len: u8,
}

impl Letters {
    fn of(key: &str) -> Letters {
        if !key.is_ascii() || key.len() > 64 {
            return Letters::default();
        }
        let mask = key
            .bytes()
            .fold(0u32, |m, b| m | if b.is_ascii_uppercase() { 1 << (b - b'A') } else { 1 << (26 + b % 6) });
        Letters { mask, repeats: (key.len() - mask.count_ones() as usize) as u8, len: key.len() as u8 }
    }
}

/// [`jaro_winkler`] of two keys when it could reach `floor`, else 0. The
/// letters bound the matches: at most one per letter kind the keys share,
/// plus the repeats of the key with fewer (a kind occurring c times in one
/// key and d in the other matches at most min(c, d) times); with no
/// transpositions and the keys' common prefix that bounds the similarity.
fn similarity_from(floor: f64, (x, lx): (&str, Letters), (y, ly): (&str, Letters)) -> f64 {
    if lx.len == 0 || ly.len == 0 || lx.len as usize != x.len() || ly.len as usize != y.len() {
        return jaro_winkler(x, y);
    }
    let shared = (lx.mask & ly.mask).count_ones() as usize + lx.repeats.min(ly.repeats) as usize;
    let m = shared.min(x.len()).min(y.len()) as f64;
    let j = (m / x.len() as f64 + m / y.len() as f64 + 1.0) / 3.0;
    let prefix = x.bytes().take(4).zip(y.bytes()).take_while(|(p, q)| p == q).count() as f64;
    let bound = if m == 0.0 {
        0.0
    } else if j > 0.7 {
        j + 0.1 * prefix * (1.0 - j)
    } else {
        j
    };
    if bound < floor { 0.0 } else { jaro_winkler(x, y) }
}

/// Jaro–Winkler similarity exactly as `strsim::jaro_winkler` computes it,
/// without its allocation and character counting for ASCII keys of up to 64
/// bytes: the comparison runs on every candidate pair and on the random
/// pairs behind u, and names and streets are such keys.
fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x.len() > 64 || y.len() > 64 || !a.is_ascii() || !b.is_ascii() {
        return strsim::jaro_winkler(a, b);
    }
    if x.is_empty() || y.is_empty() {
        return if x.is_empty() && y.is_empty() { 1.0 } else { 0.0 };
    }
    let range = (x.len().max(y.len()) / 2).saturating_sub(1);
    let (mut x_flags, mut y_flags) = (0u64, 0u64);
    let mut matches = 0usize;
    for (i, &c) in x.iter().enumerate() {
        let hi = y.len().min(i + range + 1);
        let lo = i.saturating_sub(range);
        if let Some(j) = (lo..hi).find(|&j| y[j] == c && y_flags & (1 << j) == 0) {
            x_flags |= 1 << i;
            y_flags |= 1 << j;
            matches += 1;
        }
    }
    if matches == 0 {
        return 0.0;
    }
    // Matched characters of each side, in order; each pair out of place is
    // half a transposition.
    let mut ys = (0..y.len()).filter(|&j| y_flags & (1 << j) != 0).map(|j| y[j]);
    let transpositions =
        (0..x.len()).filter(|&i| x_flags & (1 << i) != 0).filter(|&i| Some(x[i]) != ys.next()).count() / 2;
    let m = matches as f64;
    let sim = (m / x.len() as f64 + m / y.len() as f64 + (matches - transpositions) as f64 / m) / 3.0;
    if sim > 0.7 {
        let prefix = x.iter().take(4).zip(y).take_while(|(p, q)| p == q).count();
        sim + 0.1 * prefix as f64 * (1.0 - sim)
    } else {
        sim
    }
}

/// A typo away, directly or through a nickname: "ZMY" and "AMY" (Jaro–Winkler
/// weighs a first letter heavily), "EI" and "MEI", "JOM" and "JAMES" (a typo
/// of Jim), "MNILDRED" and "MILLIE" (of Mildred). Three letters at least, so
/// that "AL" and "ED" stay different.
fn one_typo_apart(a: &Features, b: &Features) -> bool {
    let typo = |x: &str, y: &str| x.len().max(y.len()) >= 3 && within_one_edit(x.as_bytes(), y.as_bytes());
    typo(&a.first, &b.first)
        || b.first_forms.iter().any(|r| typo(&a.first, r))
        || a.first_forms.iter().any(|r| typo(r, &b.first))
}

/// At most one edit apart: one letter changed, added or dropped, or two
/// neighbours swapped (optimal string alignment distance <= 1).
fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if b.len() - a.len() > 1 {
        return false;
    }
    let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) else {
        return true;
    };
    if a.len() < b.len() {
        a[i..] == b[i + 1..]
    } else {
        a[i + 1..] == b[i + 1..]
            || (i + 1 < a.len() && a[i] == b[i + 1] && a[i + 1] == b[i] && a[i + 2..] == b[i + 2..])
    }
}

/// Name and birth date say two different people: the birth date is at its
/// "different" level and so is a name, or both names are. Near misses (a
/// nickname, a typo, swapped day and month) are not disagreement.
pub fn different_person(p: &Pattern) -> bool {
    let first = p[0] == 4;
    let last = p[1] == 3;
    let dob = p[2] == 3;
    (dob && (first || last)) || (first && last)
}

/// Birth years this far apart are another generation, not a typo (one
/// digit wrong is at most 9 years off in the last digit; a parent is
/// rarely under 12 years older than a child).
const GENERATION_YEARS: i32 = 12;

/// Name and birth date say a relative rather than the same person written
/// twice: first names that differ outright (twins, siblings), or birth
/// years a generation apart (a parent and a child of one name, who share a
/// home too). Never linked, by ID or by score, without a person; never one
/// registration entered twice.
pub fn kin(p: &Pattern, a: &Features, b: &Features) -> bool {
    let generations = match (a.dob, b.dob) {
        (Some((x, _, _)), Some((y, _, _))) => (x - y).abs() >= GENERATION_YEARS,
        _ => false,
    };
    p[0] == 4 || generations
}

/// m and u per comparison level, and the prior share of matches among
/// candidate pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub m: [Vec<f64>; N],
    pub u: [Vec<f64>; N],
    pub lambda: f64,
    /// EM iterations run (0 when every m was fixed).
    pub iterations: usize,
}

impl Model {
    /// log2 Bayes factor of a pattern, prior excluded.
    pub fn bayes_bits(&self, p: &Pattern) -> f64 {
        p.iter()
            .enumerate()
            .filter(|&(_, &l)| l != MISSING)
            .map(|(c, &l)| (self.m[c][l as usize] / self.u[c][l as usize]).log2())
            .sum()
    }

    /// Match weight: log2 of the posterior odds.
    pub fn weight(&self, p: &Pattern) -> f64 {
        (self.lambda / (1.0 - self.lambda)).log2() + self.bayes_bits(p)
    }
}

/// Probability from a match weight.
pub fn probability(weight: f64) -> f64 {
    let odds = weight.exp2();
    if odds.is_infinite() { 1.0 } else { odds / (1.0 + odds) }
}

/// Human-readable levels of a pattern: "first_name=nickname; dob=exact; ...".
pub fn evidence(p: &Pattern) -> String {
    COMPARISONS
        .iter()
        .zip(p)
        .map(|(c, &l)| {
            let level = if l == MISSING { "missing" } else { c.levels()[l as usize] };
            format!("{}={level}", c.as_str())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Blocking keys of a record, as hashes; a record missing a field has no key for rules that need it.
fn blocking_keys(f: &Features, out: &mut Vec<u64>) {
    out.clear();
    // A fixed seed: the same keys, so the same blocks, every run.
    let state = foldhash::fast::FixedState::with_seed(0x5EED_F0E5_B10C_4E75);
    let mut key = |rule: u8, parts: &dyn Fn(&mut foldhash::fast::FoldHasher)| {
        let mut h = state.build_hasher();
        rule.hash(&mut h);
        parts(&mut h);
        out.push(h.finish());
    };
    if let Some((y, m, d)) = f.dob {
        if f.first_code != 0 {
            key(1, &|h| (y, m, d, f.first_code).hash(h));
        }
        if f.last_code != 0 {
            key(2, &|h| (y, m, d, f.last_code).hash(h));
            // Written with day and month swapped: key both ways round.
            if m != d && d <= 12 {
                key(3, &|h| (y, m.min(d), m.max(d), f.last_code).hash(h));
            } else if m != d {
                key(3, &|h| (y, m, d, f.last_code).hash(h));
            }
        }
        if f.first_code != 0 && f.last_code != 0 {
            key(4, &|h| (y, f.first_code, f.last_code).hash(h));
        }
        // A nickname changes the first name's code: the surname, year and month.
        if f.last_code != 0 {
            key(8, &|h| (y, m, f.last_code).hash(h));
        }
    }
    for phone in f.phones.iter().flatten() {
        key(5, &|h| phone.hash(h));
    }
    if !f.email.is_empty() {
        key(6, &|h| f.email.hash(h));
    }
    if !f.house.is_empty() && !f.street.is_empty() {
        key(7, &|h| (&f.house, &f.street, f.zip).hash(h));
    }
}

/// Candidate pairs and what blocking did.
#[derive(Debug, Default)]
pub struct Candidates {
    /// (index into `a`, index into `b`), sorted, no repeats.
    pub pairs: Vec<(u32, u32)>,
    /// Blocks skipped for being larger than `max_block` pairs.
    pub skipped_blocks: usize,
}

/// Pairs of `a` x `b` sharing a blocking key. With `same_side`, `a` and `b`
/// are the same records and only pairs i < j are returned.
pub fn candidates(a: &[Features], b: &[Features], same_side: bool, max_block: usize) -> Candidates {
    // Every (key, record) of both sides in one list, sorted by key: each run
    // of one key is a block, side A's records first (side B's carry the top
    // bit). Sorting a flat list beats a map of millions of small vectors.
    const SIDE_B: u32 = 1 << 31;
    let keyed = |fs: &[Features], side: u32| -> Vec<(u64, u32)> {
        fs.par_iter()
            .enumerate()
            .fold(
                || (Vec::new(), Vec::new()),
                |(mut out, mut buf), (i, f)| {
                    blocking_keys(f, &mut buf);
                    buf.sort_unstable();
                    buf.dedup();
                    out.extend(buf.iter().map(|&k| (k, i as u32 | side)));
                    (out, buf)
                },
            )
            .map(|(out, _)| out)
            .reduce(Vec::new, |mut x, mut y| {
                x.append(&mut y);
                x
            })
    };
    let mut entries = keyed(a, 0);
    if !same_side {
        entries.append(&mut keyed(b, SIDE_B));
    }
    entries.par_sort_unstable();

    let mut out = Candidates::default();
    for block in entries.chunk_by(|x, y| x.0 == y.0) {
        let split = block.partition_point(|e| e.1 & SIDE_B == 0);
        let (left, right) = block.split_at(split);
        let right = if same_side { left } else { right };
        let size =
            if same_side { left.len() * left.len().saturating_sub(1) / 2 } else { left.len() * right.len() };
        if size == 0 {
            continue;
        }
        if size > max_block {
            out.skipped_blocks += 1;
            continue;
        }
        for &(_, i) in left {
            for &(_, j) in right {
                let j = j & !SIDE_B;
                if !same_side || i < j {
                    out.pairs.push((i, j));
                }
            }
        }
    }
    out.pairs.par_sort_unstable();
    out.pairs.dedup();
    out
}

/// Fit the model: u from random pairs of `a` x `b`, m and the match share by
/// EM on the candidate patterns, then the job's fixed values.
/// ID links needed before m is counted on them instead of estimated by EM.
pub const MIN_LABELLED: usize = 500;

/// Fit the model. u is given, counted on random pairs ([`random_u`]). m is counted
/// on `labelled`, the patterns of pairs the trusted IDs linked, when there
/// are at least [`MIN_LABELLED`] of them: real matches, which EM can only
/// guess at (on a large population the candidate pairs that share a
/// birthday and a name code outnumber the matches, and EM's "match" class
/// drifts towards them). With fewer, m and the match share are estimated by
/// EM on the candidate patterns. The job's fixed values override both.
pub fn fit_with_labels(
    u: LevelShares,
    patterns: &[Pattern],
    labelled: &[Pattern],
    s: &MatchSettings,
) -> Model {
    if labelled.len() < MIN_LABELLED {
        return fit(u, patterns, s);
    }
    let mut model = Model {
        m: std::array::from_fn(|c| {
            let levels = COMPARISONS[c].levels().len();
            // Half a pair per level keeps a level never seen from weighing minus infinity.
            let mut counts = vec![0.5; levels];
            for p in labelled {
                if p[c] != MISSING {
                    counts[p[c] as usize] += 1.0;
                }
            }
            let total: f64 = counts.iter().sum();
            counts.iter().map(|n| n / total).collect()
        }),
        u,
        lambda: 0.5,
        iterations: 0,
    };
    apply_fixed(&mut model, s);
    model.lambda = with_prior_for(&model, patterns.iter()).lambda;
    model
}

fn apply_fixed(model: &mut Model, s: &MatchSettings) {
    for f in &s.fixed {
        let c = f.comparison.index();
        if let Some(m) = f.m
            && let Some(slot) = model.m[c].get_mut(f.level)
        {
            *slot = m;
        }
        if let Some(u) = f.u
            && let Some(slot) = model.u[c].get_mut(f.level)
        {
            *slot = u;
        }
    }
}

pub fn fit(u: LevelShares, patterns: &[Pattern], s: &MatchSettings) -> Model {
    let mut model =
        Model { m: std::array::from_fn(|c| initial_m(COMPARISONS[c])), u, lambda: 0.1, iterations: 0 };
    // Fixed values first: EM reads the fixed u and leaves the fixed m alone.
    apply_fixed(&mut model, s);
    // Distinct patterns with their counts: EM runs on a few thousand rows
    // however many pairs there are.
    let rows = pattern_counts(patterns.iter());
    let all_m_fixed = COMPARISONS.iter().all(|&c| {
        (0..c.levels().len())
            .all(|l| s.fixed.iter().any(|f| f.comparison == c && f.level == l && f.m.is_some()))
    });
    if !rows.is_empty() && !all_m_fixed {
        em(&mut model, &rows, s);
    }
    model
}

/// The model with its prior re-estimated (m and u kept) for another set of
/// candidate pairs: the pairs still unlinked once IDs have linked most true
/// matches, or the pairs within one side, where duplicates are rare. The
/// prior learned on every candidate pair would overstate both.
/// The distinct patterns with how many times each occurs, in the patterns'
/// order, not a map's (seeded afresh in every process): sums of floats over
/// them come out the same to the last bit, and so does every probability
/// in the reports.
fn pattern_counts<'p>(patterns: impl Iterator<Item = &'p Pattern>) -> Vec<(Pattern, f64)> {
    let mut counts: HashMap<Pattern, f64> = HashMap::new();
    for p in patterns {
        *counts.entry(*p).or_default() += 1.0;
    }
    let mut rows: Vec<(Pattern, f64)> = counts.into_iter().collect();
    rows.sort_unstable_by_key(|&(p, _)| p);
    rows
}

pub fn with_prior_for<'p>(model: &Model, patterns: impl Iterator<Item = &'p Pattern>) -> Model {
    let counts = pattern_counts(patterns);
    let total: f64 = counts.iter().map(|(_, n)| n).sum();
    let mut out = model.clone();
    if total == 0.0 {
        return out;
    }
    let bits: Vec<(f64, f64)> = counts.iter().map(|(p, n)| (model.bayes_bits(p), *n)).collect();
    for _ in 0..200 {
        let odds = out.lambda / (1.0 - out.lambda);
        let matches: f64 = bits.iter().map(|(b, n)| probability(odds.log2() + b) * n).sum();
        let lambda = (matches / total).clamp(1e-9, 1.0 - 1e-6);
        let done = (lambda - out.lambda).abs() < 1e-9;
        out.lambda = lambda;
        if done {
            break;
        }
    }
    out
}

fn initial_m(c: Comparison) -> Vec<f64> {
    let n = c.levels().len();
    // Most true pairs agree exactly; the rest spread over the other levels.
    (0..n).map(|l| if l == 0 { 0.9 } else { 0.1 / (n - 1) as f64 }).collect()
}

/// A share per level of every comparison (u or m).
pub type LevelShares = [Vec<f64>; N];

/// u of every comparison: level frequencies among about `sample` random
/// pairs of `a` x `b`, each level counted at least once so no weight is
/// infinite. It needs only the features, so it runs beside linking by ID.
///
/// The pairs are every pair of √sample random records of `a` and as many
/// of `b`: each pair is still a uniformly random pair, and the few hundred
/// records stay in the CPU's caches, where pairs drawn one by one missed
/// them on nearly every comparison (`perf`).
pub fn random_u(a: &[Features], b: &[Features], sample: usize) -> LevelShares {
    let mut counts: [Vec<f64>; N] = std::array::from_fn(|c| vec![1.0; COMPARISONS[c].levels().len()]);
    if !a.is_empty() && !b.is_empty() {
        // xorshift: deterministic, and spread over both sides.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let k = (sample as f64).sqrt().ceil() as usize;
        let from_a: Vec<&Features> = (0..k).map(|_| &a[(next() % a.len() as u64) as usize]).collect();
        let from_b: Vec<&Features> = (0..k).map(|_| &b[(next() % b.len() as u64) as usize]).collect();
        let zero = || -> [Vec<f64>; N] { std::array::from_fn(|c| vec![0.0; COMPARISONS[c].levels().len()]) };
        let found = from_a
            .par_iter()
            .fold(zero, |mut acc, x| {
                for y in &from_b {
                    for (c, &l) in compare(x, y).iter().enumerate() {
                        if l != MISSING {
                            acc[c][l as usize] += 1.0;
                        }
                    }
                }
                acc
            })
            .reduce(zero, |mut x, y| {
                for (xs, ys) in x.iter_mut().zip(&y) {
                    xs.iter_mut().zip(ys).for_each(|(p, q)| *p += q);
                }
                x
            });
        for (cs, fs) in counts.iter_mut().zip(&found) {
            cs.iter_mut().zip(fs).for_each(|(p, q)| *p += q);
        }
    }
    counts.map(|levels| {
        let total: f64 = levels.iter().sum();
        levels.iter().map(|n| n / total).collect()
    })
}

fn em(model: &mut Model, rows: &[(Pattern, f64)], s: &MatchSettings) {
    let m_fixed = |c: usize, l: usize| {
        s.fixed.iter().any(|f| f.comparison.index() == c && f.level == l && f.m.is_some())
    };
    for iteration in 1..=200 {
        let mut m_num: [Vec<f64>; N] = std::array::from_fn(|c| vec![0.0; model.m[c].len()]);
        let (mut matches, mut total) = (0.0, 0.0);
        for (p, n) in rows {
            let prob = probability(model.weight(p));
            matches += prob * n;
            total += n;
            for (c, &l) in p.iter().enumerate() {
                if l != MISSING {
                    m_num[c][l as usize] += prob * n;
                }
            }
        }
        let mut change: f64 = 0.0;
        for (c, nums) in m_num.iter().enumerate() {
            let sum: f64 = nums.iter().sum();
            if sum <= 0.0 {
                continue;
            }
            let levels = nums.len() as f64;
            for (l, num) in nums.iter().enumerate() {
                if m_fixed(c, l) {
                    continue;
                }
                // A little smoothing keeps a level never seen among matches
                // from weighing minus infinity.
                let m = (num + 0.01) / (sum + 0.01 * levels);
                change = change.max((m - model.m[c][l]).abs());
                model.m[c][l] = m;
            }
        }
        let lambda = (matches / total).clamp(1e-6, 1.0 - 1e-6);
        change = change.max((lambda - model.lambda).abs());
        model.lambda = lambda;
        model.iterations = iteration;
        if change < 1e-6 {
            break;
        }
    }
}

/// A scored pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub a: usize,
    pub b: usize,
    pub pattern: Pattern,
    pub weight: f64,
    pub probability: f64,
}

/// Why a pair above the review threshold was not linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Its probability is between the review and link thresholds.
    BelowLink,
    /// First names differ outright: twins agree on everything else.
    FirstNamesDiffer,
    /// The birth years are a generation apart: a parent and a child of one
    /// name share a home too.
    BirthDatesDiffer,
    /// The birth dates do not agree (beyond a day and month swapped, or one
    /// is missing) and no address, phone or email does: a common name and a
    /// near birthday are not enough.
    Uncorroborated,
    /// Another candidate of one of the records scores nearly as well.
    Ambiguous,
    /// One of the records is linked to a better candidate (not listed).
    PartnerTaken,
    /// One of the records is in an external-ID conflict, which a person
    /// must settle first.
    IdConflict,
}

impl Hold {
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::BelowLink => "score between the review and link thresholds",
            Hold::FirstNamesDiffer => "first names differ: never linked without a person",
            Hold::BirthDatesDiffer => {
                "birth years a generation apart: a parent and a child of one name share a home; never linked \
                 without a person"
            }
            Hold::Uncorroborated => "birth dates do not agree, nor any address, phone or email",
            Hold::Ambiguous => "another candidate scores nearly as well",
            Hold::PartnerTaken => "one record is linked to a better candidate",
            Hold::IdConflict => "a record is in an external-ID conflict (see external_id_conflicts.csv)",
        }
    }
}

/// What matching decided.
#[derive(Debug, Default)]
pub struct Decided {
    pub links: Vec<Scored>,
    pub review: Vec<(Scored, Hold)>,
    pub candidates: usize,
    pub skipped_blocks: usize,
    pub model: Option<Model>,
}

impl Scored {
    /// Pair (`a`, `b`) with its levels, weighed by `model`.
    pub fn new(a: u32, b: u32, pattern: Pattern, model: &Model) -> Scored {
        let weight = model.weight(&pattern);
        Scored { a: a as usize, b: b as usize, pattern, weight, probability: probability(weight) }
    }
}

/// Score every candidate pair of `a` x `b`.
pub fn score(a: &[Features], b: &[Features], pairs: &[(u32, u32)], model: &Model) -> Vec<Scored> {
    pairs
        .par_iter()
        .map(|&(i, j)| Scored::new(i, j, compare(&a[i as usize], &b[j as usize]), model))
        .collect()
}

/// Match `a` against `b` with EM alone: candidates, model, scores, then
/// one-to-one links and pairs for review. The tests' view of the pipeline
/// that `reconcile` runs with ID links and holds around it.
#[cfg(test)]
fn match_sides(a: &[Features], b: &[Features], s: &MatchSettings) -> Decided {
    let cands = candidates(a, b, false, s.max_block);
    let patterns: Vec<Pattern> =
        cands.pairs.par_iter().map(|&(i, j)| compare(&a[i as usize], &b[j as usize])).collect();
    let model = fit(random_u(a, b, s.u_sample), &patterns, s);
    let scored: Vec<Scored> = cands
        .pairs
        .iter()
        .zip(&patterns)
        .map(|(&(i, j), p)| Scored::new(i, j, *p, &model))
        .filter(|x| x.probability >= s.review_at)
        .collect();
    let same_a = |i: usize, j: usize| same_registration(&a[i], &a[j]);
    let same_b = |i: usize, j: usize| same_registration(&b[i], &b[j]);
    let related = |x: &Scored| kin(&x.pattern, &a[x.a], &b[x.b]);
    let mut out = decide(scored, (a.len(), b.len()), s, &same_a, &same_b, &related);
    out.candidates = cands.pairs.len();
    out.skipped_blocks = cands.skipped_blocks;
    out.model = Some(model);
    out
}

/// One-to-one decisions on pairs already above the review threshold.
/// Two records of one side that are one registration entered twice: the
/// same name (or a nickname or close spelling), birth date and sex. A tie
/// between two such candidates is no ambiguity about who the patient is.
pub fn same_registration(a: &Features, b: &Features) -> bool {
    let p = compare(a, b);
    p[0] <= 2 && p[1] <= 1 && p[2] <= 1 && p[3] != 1
}

/// Something only the person has agrees (the address, a phone or the
/// email), or the birth date does (or differs only by day and month
/// swapped) and so, at least loosely, does the last name: a first name and
/// a birthday alone are shared by strangers in a large population.
fn corroborated(p: &Pattern) -> bool {
    let [_, last, dob, _, address, _, phone, email] = *p;
    (dob <= 1 && (last <= 2 || last == MISSING)) || address <= 1 || phone == 0 || email == 0
}

/// The best two candidates of a record: (weight, partner), best first.
type BestTwo = [(f64, usize); 2];

/// One-to-one decisions on pairs already above the review threshold.
/// `same_a` and `same_b` say whether two records of side a (or b) are one
/// registration entered twice ([`same_registration`]).
/// `kin` says whether a pair (a, b) is of relatives ([`kin`]).
pub fn decide(
    mut scored: Vec<Scored>,
    (a_len, b_len): (usize, usize),
    s: &MatchSettings,
    same_a: &(dyn Fn(usize, usize) -> bool + Sync),
    same_b: &(dyn Fn(usize, usize) -> bool + Sync),
    kin: &(dyn Fn(&Scored) -> bool + Sync),
) -> Decided {
    // Best and second-best candidate of each record, for the ambiguity rule.
    const NONE: (f64, usize) = (f64::NEG_INFINITY, usize::MAX);
    let mut best_a: Vec<BestTwo> = vec![[NONE, NONE]; a_len];
    let mut best_b: Vec<BestTwo> = vec![[NONE, NONE]; b_len];
    let push = |slot: &mut BestTwo, w: f64, partner: usize| {
        if w > slot[0].0 {
            *slot = [(w, partner), slot[0]];
        } else if w > slot[1].0 {
            slot[1] = (w, partner);
        }
    };
    // A candidate whose first name differs outright is a sibling, not a
    // rival: such pairs are never linked, and twins agree on all else.
    for x in scored.iter().filter(|x| x.pattern[0] != 4) {
        push(&mut best_a[x.a], x.weight, x.b);
        push(&mut best_b[x.b], x.weight, x.a);
    }
    // Another candidate within AMBIGUITY_BITS that is not the same
    // registration as this pair's partner.
    let rival = |best: &BestTwo, partner: usize, weight: f64, same: &dyn Fn(usize, usize) -> bool| {
        let other = if best[0].1 == partner { best[1] } else { best[0] };
        other.1 != usize::MAX && other.0 > weight - AMBIGUITY_BITS && !same(partner, other.1)
    };
    scored.sort_by(|x, y| y.weight.total_cmp(&x.weight).then((x.a, x.b).cmp(&(y.a, y.b))));
    let (mut a_taken, mut b_taken) = (vec![false; a_len], vec![false; b_len]);
    let mut out = Decided::default();
    for x in scored {
        let hold = if a_taken[x.a] || b_taken[x.b] {
            Some(Hold::PartnerTaken)
        } else if x.probability < s.link_at {
            Some(Hold::BelowLink)
        } else if x.pattern[0] == 4 {
            Some(Hold::FirstNamesDiffer)
        } else if kin(&x) {
            Some(Hold::BirthDatesDiffer)
        } else if !corroborated(&x.pattern) {
            Some(Hold::Uncorroborated)
        } else if rival(&best_a[x.a], x.b, x.weight, same_b) || rival(&best_b[x.b], x.a, x.weight, same_a) {
            Some(Hold::Ambiguous)
        } else {
            None
        };
        match hold {
            // A pair that lost to a confident link is not worth a person's time.
            Some(Hold::PartnerTaken) => {}
            Some(h) => out.review.push((x, h)),
            None => {
                a_taken[x.a] = true;
                b_taken[x.b] = true;
                out.links.push(x);
            }
        }
    }
    out.links.sort_by_key(|x| (x.a, x.b));
    out
}

/// Share of a side's records assumed to be a second registration of a patient.
pub const DUPLICATE_RATE: f64 = 0.01;

/// Possible duplicates within one side: pairs at or above the link
/// threshold under `model` with the prior of within-side pairs, best first.
/// The link threshold, not the review one: every pair listed is a chart a
/// person may merge, and people who share a first name and a birthday are
/// common in a large practice.
pub fn duplicates(f: &[Features], model: &Model, s: &MatchSettings) -> (Vec<Scored>, usize) {
    let cands = candidates(f, f, true, s.max_block);
    // The prior: about one record in a hundred registered twice, a common
    // rate in practice systems. Estimating it by EM here over-fits: pairs
    // within a side that share a birthday and a first name are far more
    // numerous than duplicates, and the m and u of the cross-side model
    // score them just above even.
    let lambda = (DUPLICATE_RATE * f.len() as f64 / cands.pairs.len().max(1) as f64).clamp(1e-9, 0.5);
    let model = Model { lambda, ..model.clone() };
    // Twins, and a parent and child of one name, are not one registration.
    let mut found: Vec<Scored> = score(f, f, &cands.pairs, &model)
        .into_iter()
        .filter(|x| x.probability >= s.link_at && !kin(&x.pattern, &f[x.a], &f[x.b]))
        .collect();
    found.sort_by(|x, y| y.weight.total_cmp(&x.weight).then((x.a, x.b).cmp(&(y.a, y.b))));
    (found, cands.pairs.len())
}

/// Features of every record, in parallel.
pub fn features(records: &[PatientRecord]) -> Vec<Features> {
    records.par_iter().map(|r| Features::of(&r.patient)).collect()
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn person(first: &str, last: &str, dob: (i32, u32, u32)) -> Patient {
        Patient {
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            birth_date: NaiveDate::from_ymd_opt(dob.0, dob.1, dob.2),
            ..Patient::default()
        }
    }

    #[test]
    fn the_fit_is_the_same_to_the_last_bit_every_time() {
        let mut state: u64 = 7;
        let patterns: Vec<Pattern> = (0..5000)
            .map(|_| {
                std::array::from_fn(|c| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) % COMPARISONS[c].levels().len() as u64) as u8
                })
            })
            .collect();
        let u: LevelShares = std::array::from_fn(|c| {
            vec![1.0 / COMPARISONS[c].levels().len() as f64; COMPARISONS[c].levels().len()]
        });
        let s = MatchSettings::default();
        let model = fit(u.clone(), &patterns, &s);
        let first = format!("{model:?}");
        let prior = format!("{:?}", with_prior_for(&model, patterns.iter()));
        // Each counts the patterns in a map seeded afresh.
        for _ in 0..5 {
            assert_eq!(format!("{:?}", fit(u.clone(), &patterns, &s)), first);
            assert_eq!(format!("{:?}", with_prior_for(&model, patterns.iter())), prior);
        }
    }

    #[test]
    fn soundex_codes() {
        let code = |s: &str| {
            let c = soundex(s);
            if c == 0 {
                return String::new();
            }
            format!("{}{}{}{}", (c >> 12) as u8 as char, (c >> 8) & 0xF, (c >> 4) & 0xF, c & 0xF)
        };
        assert_eq!(code("ROBERT"), "R163");
        assert_eq!(code("RUPERT"), "R163");
        assert_eq!(code("ASHCRAFT"), "A261", "H does not separate S and C");
        assert_eq!(code("TYMCZAK"), "T522");
        assert_eq!(code("PFISTER"), "P236", "first letter's code is not repeated");
        assert_eq!(code("LEE"), "L000");
        assert_eq!(code(""), "");
    }

    #[test]
    fn comparison_levels() {
        let a = Features::of(&person("William", "Smith", (1980, 3, 4)));
        let cases = [
            (person("Bill", "Smith", (1980, 3, 4)), [1, 0, 0]),
            (person("Wiliam", "Smithe", (1980, 4, 3)), [2, 1, 1]),
            (person("Bill", "Smyth", (1980, 3, 4)), [1, 2, 0]),
            (person("William", "Smith", (1981, 3, 4)), [0, 0, 2]),
            (person("Anne", "Jones", (1975, 1, 1)), [4, 3, 3]),
        ];
        for (b, want) in cases {
            let p = compare(&a, &Features::of(&b));
            assert_eq!(p[..3], want, "{:?}", b.first_name);
            assert_eq!(p[3..], [MISSING; 5], "absent values are missing, not different");
        }
    }

    /// Two sides of `n` people, the second with a typo in every tenth last name.
    fn sides(n: usize) -> (Vec<Features>, Vec<Features>) {
        const FIRST: [&str; 16] = [
            "Ann", "Bob", "Carl", "Dina", "Eve", "Fay", "Gus", "Hal", "Ida", "Jon", "Kim", "Lou", "Max",
            "Ned", "Ola", "Pia",
        ];
        const LAST: [&str; 16] = [
            "Lee", "Park", "Cho", "Diaz", "Khan", "Ross", "Wong", "Hill", "Baker", "Fuentes", "Gupta",
            "Jansen", "Moreau", "Novak", "Quinn", "Tanaka",
        ];
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..n {
            let mut p = person(
                FIRST[i % 16],
                LAST[(i / 16) % 16],
                (1900 + (i % 101) as i32, 1 + (i % 12) as u32, 1 + (i % 28) as u32),
            );
            p.zip = Some(format!("{:05}", 1000 + i % 300).into());
            p.phone_home = Some(format!("+1617555{:04}", i).into());
            a.push(Features::of(&p));
            if i % 10 == 0 {
                p.last_name = Some(format!("{}e", p.last_name.unwrap()).into());
            }
            if i % 7 == 0 {
                p.phone_home = None;
            }
            b.push(Features::of(&p));
        }
        (a, b)
    }

    #[test]
    fn em_learns_and_links_one_to_one() {
        let (a, b) = sides(2000);
        let s = MatchSettings::default();
        let d = match_sides(&a, &b, &s);
        let model = d.model.as_ref().unwrap();
        assert!(model.iterations > 0);
        // Agreement on the birth date is far likelier among matches.
        let dob = Comparison::BirthDate.index();
        assert!(model.m[dob][0] > 0.8 && model.u[dob][0] < 0.01, "{model:?}");
        let correct = d.links.iter().filter(|l| l.a == l.b).count();
        assert_eq!(correct, d.links.len(), "every link is right");
        assert!(d.links.len() >= 1990, "nearly all linked: {}", d.links.len());
        let mut seen_a: Vec<usize> = d.links.iter().map(|l| l.a).collect();
        seen_a.dedup();
        assert_eq!(seen_a.len(), d.links.len(), "one-to-one");
    }

    #[test]
    fn twins_are_never_linked_automatically() {
        let mut twin_a = person("Ann", "Lee", (1990, 5, 6));
        twin_a.address1 = Some("12 Main St".into());
        twin_a.zip = Some("02134".into());
        twin_a.phone_home = Some("+16175550100".into());
        let twin_b = Patient { first_name: Some("Zoe".into()), ..twin_a.clone() };
        let p = compare(&Features::of(&twin_a), &Features::of(&twin_b));
        assert_eq!(p[0], 4);
        let strong = Scored { a: 0, b: 0, pattern: p, weight: 40.0, probability: 1.0 };
        let d =
            decide(vec![strong], (1, 1), &MatchSettings::default(), &|_, _| false, &|_, _| false, &|_| false);
        assert!(d.links.is_empty());
        assert_eq!(d.review[0].1, Hold::FirstNamesDiffer);
    }

    #[test]
    fn a_typo_in_a_first_name_or_its_nickname_is_similar_not_different() {
        let level = |x: &str, y: &str| {
            compare(
                &Features::of(&person(x, "Lee", (1990, 5, 6))),
                &Features::of(&person(y, "Lee", (1990, 5, 6))),
            )[0]
        };
        for (x, y) in
            [("Zmy", "Amy"), ("Ei", "Mei"), ("Jom", "James"), ("Mnildred", "Millie"), ("Onald", "Don")]
        {
            assert_eq!(level(x, y), 3, "{x} / {y}");
            assert_eq!(level(y, x), 3, "{y} / {x}, either order");
        }
        for (x, y) in [("Anne", "Zoe"), ("Al", "Ed"), ("Ella", "Emma"), ("Jom", "Robert")] {
            assert_eq!(level(x, y), 4, "{x} / {y}");
        }
        assert!(within_one_edit(b"MARY", b"AMRY"), "neighbours swapped");
        assert!(within_one_edit(b"MARY", b"MARYE") && within_one_edit(b"MARY", b"MAY"));
        assert!(!within_one_edit(b"MARY", b"YRAM") && !within_one_edit(b"MARY", b"MA"));
    }

    proptest::proptest! {
        #[test]
        fn the_letters_bound_never_hides_a_close_pair(a in "[A-F' ]{0,12}", b in "[A-F' ]{0,12}", floor in 0.5f64..1.0) {
            let jw = strsim::jaro_winkler(&a, &b);
            let got = similarity_from(floor, (&a, Letters::of(&a)), (&b, Letters::of(&b)));
            proptest::prop_assert!(got == jw || (got == 0.0 && jw < floor), "{a:?} {b:?}: {got} vs {jw}");
        }

        #[test]
        fn jaro_winkler_is_strsims(a in "[A-D ]{0,70}", b in "[A-D ]{0,70}") {
            proptest::prop_assert_eq!(jaro_winkler(&a, &b).to_bits(), strsim::jaro_winkler(&a, &b).to_bits());
        }

        #[test]
        fn jaro_winkler_is_strsims_on_names(a in "[A-Z]{0,12}", b in "[A-Z]{0,12}", c in "[A-Z ]{0,9}") {
            let b = format!("{}{b}", &a[..a.len() / 2]);
            proptest::prop_assert_eq!(jaro_winkler(&a, &b).to_bits(), strsim::jaro_winkler(&a, &b).to_bits());
            proptest::prop_assert_eq!(jaro_winkler(&c, "MÜLLER").to_bits(), strsim::jaro_winkler(&c, "MÜLLER").to_bits());
        }
    }

    #[test]
    fn a_sibling_with_another_first_name_is_no_rival() {
        let s = MatchSettings { link_at: 0.99, review_at: 0.5, ..MatchSettings::default() };
        let never = |_: usize, _: usize| false;
        let mut twin = [0; N];
        twin[0] = 4;
        // Catherine (0) against Catherine (0) and her twin Susan (1), who
        // shares the address Catherine's record lacks and so scores close.
        let pairs = vec![
            Scored { a: 0, b: 0, pattern: [0; N], weight: 48.5, probability: 1.0 },
            Scored { a: 0, b: 1, pattern: twin, weight: 47.0, probability: 1.0 },
        ];
        let d = decide(pairs, (1, 2), &s, &never, &never, &|_| false);
        assert_eq!(d.links.iter().map(|l| (l.a, l.b)).collect::<Vec<_>>(), [(0, 0)]);
    }

    #[test]
    fn a_name_and_a_near_birthday_alone_are_held() {
        let s = MatchSettings { link_at: 0.99, review_at: 0.5, ..MatchSettings::default() };
        let never = |_: usize, _: usize| false;
        // John Davis, born the 24th and the 11th of one month, who share no
        // address, phone or email.
        let mut near = [0; N];
        (near[2], near[4], near[5], near[6], near[7]) = (2, 2, 1, 1, MISSING);
        let strong = |pattern| Scored { a: 0, b: 0, pattern, weight: 12.0, probability: probability(12.0) };
        let d = decide(vec![strong(near)], (1, 1), &s, &never, &never, &|_| false);
        assert!(d.links.is_empty());
        assert_eq!(d.review[0].1, Hold::Uncorroborated);
        // The same pair with the phone in common, or the birth dates only
        // swapped, is linked.
        for (c, l) in [(6, 0), (2, 1)] {
            let mut p = near;
            p[c] = l;
            let d = decide(vec![strong(p)], (1, 1), &s, &never, &never, &|_| false);
            assert_eq!(d.links.len(), 1, "{p:?}");
        }
    }

    /// A parent and a child of one name share a home and a phone: birth
    /// years a generation apart are never linked without a person, however
    /// well the rest agrees. A typo in the day or the year still links
    /// with the home in common.
    #[test]
    fn a_parent_and_child_of_one_name_are_never_linked_automatically() {
        let home = |dob| {
            let mut p = person("Robert", "Whitfield", dob);
            p.address1 = Some("12 Main St".into());
            p.zip = Some("02134".into());
            p.phone_home = Some("+16175550100".into());
            Features::of(&p)
        };
        let s = MatchSettings::default();
        let never = |_: usize, _: usize| false;
        let cases =
            [((1986, 7, 22), true), ((1986, 3, 14), true), ((1958, 3, 15), false), ((1959, 3, 14), false)];
        for (other, held) in cases {
            let (a, b) = (home((1958, 3, 14)), home(other));
            let p = compare(&a, &b);
            assert_eq!(kin(&p, &a, &b), held, "{other:?}");
            let strong = Scored { a: 0, b: 0, pattern: p, weight: 40.0, probability: 1.0 };
            let d = decide(vec![strong], (1, 1), &s, &never, &never, &|x| kin(&x.pattern, &a, &b));
            match held {
                true => assert_eq!(d.review[0].1, Hold::BirthDatesDiffer, "{other:?}"),
                false => assert_eq!(d.links.len(), 1, "{other:?}"),
            }
        }
    }

    /// A first name, a birth date and a sex are shared by strangers in a
    /// large population: with the last name different and nothing only
    /// the person has in common, the pair is held.
    #[test]
    fn a_first_name_and_birthday_alone_are_held() {
        let s = MatchSettings::default();
        let never = |_: usize, _: usize| false;
        let mut only = [0; N];
        (only[1], only[4], only[5], only[6], only[7]) = (3, 2, 1, 1, MISSING);
        let strong = |pattern| Scored { a: 0, b: 0, pattern, weight: 14.0, probability: probability(14.0) };
        let d = decide(vec![strong(only)], (1, 1), &s, &never, &never, &|_| false);
        assert_eq!(d.review[0].1, Hold::Uncorroborated);
        // A married name with the phone kept, or a close last name, links.
        for (c, l) in [(6, 0), (1, 2)] {
            let mut p = only;
            p[c] = l;
            let d = decide(vec![strong(p)], (1, 1), &s, &never, &never, &|_| false);
            assert_eq!(d.links.len(), 1, "{p:?}");
        }
    }

    /// Twins (first names that differ) and a parent and child of one name
    /// are not one registration entered twice.
    #[test]
    fn relatives_are_not_possible_duplicates() {
        let mut twin = person("Liam", "Osei", (2018, 2, 2));
        twin.address1 = Some("4 Elm St".into());
        twin.zip = Some("02134".into());
        twin.phone_home = Some("+16175550111".into());
        let other_twin = Patient { first_name: Some("Noah".into()), ..twin.clone() };
        let parent = Patient { birth_date: NaiveDate::from_ymd_opt(1980, 6, 1), ..twin.clone() };
        let again = twin.clone();
        let f: Vec<Features> = [twin, other_twin, parent, again].iter().map(Features::of).collect();
        let (a, b) = sides(300);
        let model = match_sides(&a, &b, &MatchSettings::default()).model.unwrap();
        let (found, _) = duplicates(&f, &model, &MatchSettings::default());
        let pairs: Vec<(usize, usize)> = found.iter().map(|x| (x.a.min(x.b), x.a.max(x.b))).collect();
        assert_eq!(pairs, [(0, 3)], "only the record entered twice");
    }

    #[test]
    fn thresholds_and_ambiguity() {
        let s = MatchSettings { link_at: 0.99, review_at: 0.5, ..MatchSettings::default() };
        let pair =
            |a, b, weight: f64| Scored { a, b, pattern: [0; N], weight, probability: probability(weight) };
        // Clear winner, a pair between the thresholds, and a near tie.
        let never = |_: usize, _: usize| false;
        let d = decide(
            vec![pair(0, 0, 20.0), pair(1, 1, 2.0), pair(2, 2, 15.0), pair(2, 3, 14.0)],
            (3, 4),
            &s,
            &never,
            &never,
            &|_| false,
        );
        assert_eq!(d.links.iter().map(|l| (l.a, l.b)).collect::<Vec<_>>(), [(0, 0)]);
        let holds: Vec<(usize, usize, Hold)> = d.review.iter().map(|(x, h)| (x.a, x.b, *h)).collect();
        assert!(holds.contains(&(1, 1, Hold::BelowLink)));
        assert!(holds.contains(&(2, 2, Hold::Ambiguous)));
        assert!(holds.contains(&(2, 3, Hold::Ambiguous)));
        // A pair that lost to a link is not listed for review.
        let d = decide(vec![pair(0, 0, 30.0), pair(0, 1, 10.0)], (1, 2), &s, &never, &never, &|_| false);
        assert_eq!(d.links.len(), 1);
        assert!(d.review.is_empty());
        // A near tie between two registrations of one patient is no ambiguity.
        let same_b = |i: usize, j: usize| (i, j) == (2, 3) || (i, j) == (3, 2);
        let d = decide(vec![pair(2, 2, 15.0), pair(2, 3, 14.0)], (3, 4), &s, &never, &same_b, &|_| false);
        assert_eq!(d.links.iter().map(|l| (l.a, l.b)).collect::<Vec<_>>(), [(2, 2)]);
    }

    #[test]
    fn blocking_skips_oversized_blocks_and_dedups() {
        let same = Features::of(&person("Ann", "Lee", (1990, 5, 6)));
        let many = vec![same.clone(); 60];
        let c = candidates(&many, &many, false, 100);
        assert!(c.pairs.is_empty());
        assert!(c.skipped_blocks > 0);
        let c = candidates(&many[..5], &many[..5], true, 100);
        assert_eq!(c.pairs.len(), 10, "i < j only, once per pair though several keys agree");
    }

    #[test]
    fn fixed_weights_override_estimates() {
        let (a, b) = sides(300);
        let s = MatchSettings {
            fixed: vec![FixedWeight { comparison: Comparison::Sex, level: 0, m: Some(0.97), u: Some(0.5) }],
            ..MatchSettings::default()
        };
        let d = match_sides(&a, &b, &s);
        let model = d.model.unwrap();
        assert_eq!(model.m[Comparison::Sex.index()][0], 0.97);
        assert_eq!(model.u[Comparison::Sex.index()][0], 0.5);
    }
}
