//! One made-up person and what each system wrote down about them.
//!
//! A [`Person`] is the truth, drawn from the person's own random stream: the
//! EHR pass and the practice pass meet the same person at different rows and
//! must build the same one. A [`Record`] is one side's copy: the truth with
//! that record's errors, missing values and formatting habits. Record IDs,
//! carried IDs and who is on which side belong to the population (`super`).

use std::borrow::Cow;

use chrono::{Datelike, NaiveDate};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::names::{
    EMAIL_DOMAINS, FEMALE, INSURERS, MALE, PLACES, STREETS, SUFFIXES, SURNAME_ENDINGS, SURNAME_ROOTS,
    SURNAMES,
};
use super::{Noise, Planted};
use crate::flatfile::name_key;
use crate::model::{Sex, Side};
use crate::reconcile::nicknames::nicknames_of;

/// Fibonacci hashing's constant: spreads consecutive indices over the seed space.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Birth dates run from here to [`LATEST_BIRTH`], and date errors stay inside.
const EARLIEST_BIRTH: NaiveDate = NaiveDate::from_ymd_opt(1925, 1, 1).unwrap();
const LATEST_BIRTH: NaiveDate = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();

/// The random stream of person `index`: the same whichever side asks.
pub(super) fn person_rng(seed: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ index.wrapping_mul(GOLDEN))
}

/// A well-mixed 64-bit hash (splitmix64's finaliser), for decisions that must
/// be answered without building anyone (is pair k twins?) and for keys.
pub(super) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether persons 2k and 2k+1 are twins.
pub(super) fn twin_pair(seed: u64, k: u64, rate: f64) -> bool {
    unit(mix(seed ^ mix(k ^ 0x7417_5EED))) < rate
}

/// Whether person 2k+1 is person 2k's parent or child of the same name
/// (Sr. and Jr.). Never twins as well.
pub(super) fn namesake_pair(seed: u64, k: u64, twins: f64, rate: f64) -> bool {
    !twin_pair(seed, k, twins) && unit(mix(seed ^ mix(k ^ 0x0005_E41D))) < rate
}

/// Draws an index from a table with fixed weights.
pub(super) struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Weighted {
        let mut total = 0.0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Weighted { cumulative }
    }

    /// Zipf-like weights by rank, 1 / (rank + offset): a larger offset flattens the head.
    fn zipf(len: usize, offset: f64) -> Weighted {
        Weighted::new((0..len).map(|r| 1.0 / (r as f64 + offset)))
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        self.cumulative.partition_point(|&c| c <= u).min(self.cumulative.len() - 1)
    }
}

/// The tables' weights, built once per run.
pub(super) struct Tables {
    female: Weighted,
    male: Weighted,
    /// The nicknames of each name in [`FEMALE`] and [`MALE`], looked up once
    /// rather than per record.
    female_nicknames: Vec<&'static [&'static str]>,
    male_nicknames: Vec<&'static [&'static str]>,
    surnames: Weighted,
    streets: Weighted,
    suffixes: Weighted,
    places: Weighted,
    insurers: Weighted,
}

impl Tables {
    pub(super) fn new() -> Tables {
        Tables {
            // Offsets picked so the top name is about 3% of its sex and Smith
            // about 1.3% of surnames, as in US data.
            female: Weighted::zipf(FEMALE.len(), 10.0),
            male: Weighted::zipf(MALE.len(), 10.0),
            female_nicknames: FEMALE.iter().map(|n| nicknames_of(&name_key(n))).collect(),
            male_nicknames: MALE.iter().map(|n| nicknames_of(&name_key(n))).collect(),
            surnames: Weighted::zipf(SURNAMES.len(), 20.0),
            streets: Weighted::zipf(STREETS.len(), 8.0),
            suffixes: Weighted::new(SUFFIXES.iter().map(|s| s.2 as f64)),
            // Most patients live near the practice; the head is the Boston area.
            places: Weighted::zipf(PLACES.len(), 15.0),
            insurers: Weighted::zipf(INSURERS.len(), 2.0),
        }
    }
}

/// The errors a record can carry, one bit each in [`Errors`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Error {
    LastNameTypo,
    FirstNameTypo,
    Nickname,
    DobSwap,
    DobDigit,
    Moved,
    PhoneChanged,
    MarriedName,
    NameFormat,
}

impl Error {
    const ALL: [Error; 9] = [
        Error::LastNameTypo,
        Error::FirstNameTypo,
        Error::Nickname,
        Error::DobSwap,
        Error::DobDigit,
        Error::Moved,
        Error::PhoneChanged,
        Error::MarriedName,
        Error::NameFormat,
    ];

    fn rate(self, n: &Noise) -> f64 {
        match self {
            Error::LastNameTypo => n.last_name_typo,
            Error::FirstNameTypo => n.first_name_typo,
            Error::Nickname => n.nickname,
            Error::DobSwap => n.dob_swap,
            Error::DobDigit => n.dob_digit,
            Error::Moved => n.moved,
            Error::PhoneChanged => n.phone_changed,
            Error::MarriedName => n.married_name,
            Error::NameFormat => n.name_format,
        }
    }
}

/// A set of [`Error`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Errors(u16);

impl Errors {
    fn with(self, e: Error) -> Errors {
        Errors(self.0 | 1 << e as u16)
    }

    fn has(self, e: Error) -> bool {
        self.0 & 1 << e as u16 != 0
    }
}

#[derive(Clone, Debug)]
struct Address {
    number: u32,
    street: &'static str,
    suffix: usize,
    unit: Option<String>,
    /// Index into [`PLACES`].
    place: usize,
    plus4: u16,
}

#[derive(Clone, Debug)]
pub(super) struct Insurance {
    pub provider: &'static str,
    pub member_id: String,
    pub group: String,
}

/// The truth about one human.
#[derive(Clone, Debug)]
pub(super) struct Person {
    sex: Sex,
    first: &'static str,
    /// The first name's nicknames, most usual first.
    nicknames: &'static [&'static str],
    middle: Option<&'static str>,
    last: Cow<'static, str>,
    birth: NaiveDate,
    home: Address,
    /// Ten digits.
    phone: u64,
    mobile: Option<u64>,
    email: String,
    pub insurance: Option<Insurance>,
    /// The errors of this person's first record on each side (EHR, practice).
    pub errors: [Errors; 2],
}

/// One side's copy of a person, as text ready for a row.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Record {
    pub first: String,
    /// Only the practice writes it.
    pub middle: String,
    pub last: String,
    pub birth: NaiveDate,
    pub sex: &'static str,
    pub address1: String,
    pub address2: String,
    pub city: &'static str,
    pub state: &'static str,
    pub zip: String,
    pub phone: String,
    /// Only the practice writes it.
    pub mobile: String,
    pub email: String,
}

/// Builds persons and their records.
pub(super) struct People {
    pub seed: u64,
    pub noise: Noise,
    tables: Tables,
}

impl People {
    pub(super) fn new(seed: u64, noise: Noise) -> People {
        People { seed, noise, tables: Tables::new() }
    }

    /// Person `index`, who has records on the sides marked in `sides` (EHR, practice).
    pub(super) fn person(&self, index: u64, sides: [bool; 2]) -> Person {
        let mut rng = person_rng(self.seed, index);
        let mut p = self.draw(&mut rng);
        if index % 2 == 1 && twin_pair(self.seed, index / 2, self.noise.twins) {
            let elder = self.draw(&mut person_rng(self.seed, index - 1));
            self.make_twin(&mut p, &elder, &mut rng);
        } else if index % 2 == 1
            && namesake_pair(self.seed, index / 2, self.noise.twins, self.noise.namesakes)
        {
            let other = self.draw(&mut person_rng(self.seed, index - 1));
            self.make_namesake(&mut p, &other, &mut rng);
        }
        // The errors of the first records: each kind by its rate, on one of
        // the person's sides chosen at random.
        let kinds = self.draw_errors(&p, &mut rng);
        for e in Error::ALL {
            if kinds.has(e) {
                let side = match sides {
                    [true, true] => usize::from(rng.random_bool(0.5)),
                    [false, true] => 1,
                    _ => 0,
                };
                p.errors[side] = p.errors[side].with(e);
            }
        }
        p
    }

    fn draw(&self, rng: &mut StdRng) -> Person {
        let t = &self.tables;
        let sex = if rng.random_bool(0.51) { Sex::F } else { Sex::M };
        let (first, nicknames) = self.given_name(sex, rng);
        let middle = rng.random_bool(0.65).then(|| self.given_name(sex, rng).0).filter(|m| *m != first);
        let last = self.surname(rng);
        let birth = birth_date(rng);
        let home = self.address(rng);
        let area = if rng.random_bool(0.8) { PLACES[home.place].3 } else { PLACES[t.places.pick(rng)].3 };
        let phone = phone_number(area, rng);
        let mobile = rng.random_bool(0.55).then(|| phone_number(PLACES[t.places.pick(rng)].3, rng));
        let email = email(first, &last, birth.year(), rng);
        let insurance = rng.random_bool(0.95).then(|| {
            let (provider, prefix, grouped) = INSURERS[t.insurers.pick(rng)];
            let member_id = format!("{prefix}{:09}", rng.random_range(0..1_000_000_000u32));
            let group =
                if grouped { format!("{:06}", rng.random_range(1000..1_000_000u32)) } else { String::new() };
            Insurance { provider, member_id, group }
        });
        Person {
            sex,
            first,
            nicknames,
            middle,
            last,
            birth,
            home,
            phone,
            mobile,
            email,
            insurance,
            errors: [Errors::default(); 2],
        }
    }

    /// A twin shares the elder's birth date, surname, address and phone, and
    /// has a first name of their own (and maybe the other sex).
    fn make_twin(&self, p: &mut Person, elder: &Person, rng: &mut StdRng) {
        if rng.random_bool(0.5) {
            p.sex = elder.sex;
        }
        (p.first, p.nicknames) = self.given_name(p.sex, rng);
        while p.first == elder.first {
            (p.first, p.nicknames) = self.given_name(p.sex, rng);
        }
        p.middle = p.middle.map(|_| self.given_name(p.sex, rng).0).filter(|m| *m != p.first);
        p.last = elder.last.clone();
        p.birth = elder.birth;
        p.home = elder.home.clone();
        p.phone = elder.phone;
        p.email = email(p.first, &p.last, p.birth.year(), rng);
    }

    /// A namesake is `other`'s child (or parent, where a child would not be
    /// born yet) of the same sex and first and last name, 20 to 40 years
    /// apart, at the same address and phone: Sr. and Jr., who must never be
    /// taken for one person.
    fn make_namesake(&self, p: &mut Person, other: &Person, rng: &mut StdRng) {
        p.sex = other.sex;
        (p.first, p.nicknames) = (other.first, other.nicknames);
        p.middle = p.middle.filter(|m| *m != p.first);
        p.last = other.last.clone();
        // Whole years (29 February becomes the 28th), so nothing but the
        // year tells the two apart.
        let months = chrono::Months::new(12 * rng.random_range(20..=40u32));
        let later = other.birth.checked_add_months(months).filter(|d| *d <= LATEST_BIRTH);
        p.birth = later.or_else(|| other.birth.checked_sub_months(months)).unwrap_or(EARLIEST_BIRTH);
        p.home = other.home.clone();
        p.phone = other.phone;
        p.email = email(p.first, &p.last, p.birth.year(), rng);
    }

    /// Which errors one record of `p` gets. Kinds that cannot happen to the
    /// person (a nickname for a name that has none, a day/month swap of
    /// 25/12, a married name for a man) are drawn among those they can.
    pub(super) fn draw_errors(&self, p: &Person, rng: &mut StdRng) -> Errors {
        let mut out = Errors::default();
        for e in Error::ALL {
            // One draw per kind whatever happens, so adding a condition never
            // shifts the rest of the stream.
            let hit = rng.random::<f64>() < e.rate(&self.noise);
            let possible = match e {
                Error::Nickname => !p.nicknames.is_empty(),
                Error::DobSwap => p.birth.day() <= 12 && p.birth.day() != p.birth.month(),
                Error::MarriedName => p.sex == Sex::F,
                _ => true,
            };
            if hit && possible {
                out = out.with(e);
            }
        }
        out
    }

    /// What `side` wrote about `p` in one record with `errors`, drawing this
    /// record's choices from `rng` and counting what it planted.
    pub(super) fn record(
        &self,
        p: &Person,
        side: Side,
        errors: Errors,
        rng: &mut StdRng,
        planted: &mut Planted,
    ) -> Record {
        let n = &self.noise;
        let t = &self.tables;

        let mut first = p.first.to_string();
        if errors.has(Error::Nickname) {
            let nicks = p.nicknames;
            // The first-listed nickname is the usual one (Bill, Bob, Peggy).
            let nick =
                if rng.random_bool(0.5) { nicks[0] } else { nicks.choose(rng).copied().unwrap_or(nicks[0]) };
            first = title_case(nick);
            planted.nicknames += 1;
        }
        if errors.has(Error::FirstNameTypo) {
            first = typo(&first, rng);
            planted.first_name_typos += 1;
        }
        let mut last = p.last.to_string();
        if errors.has(Error::MarriedName) {
            let mut new = self.surname(rng);
            while new == p.last {
                new = self.surname(rng);
            }
            last = if rng.random_bool(0.2) { format!("{}-{new}", p.last) } else { new.into_owned() };
            planted.married_names += 1;
        }
        if errors.has(Error::LastNameTypo) {
            last = typo(&last, rng);
            planted.last_name_typos += 1;
        }
        let mut middle = match p.middle {
            Some(m) if rng.random_bool(0.2) => m.chars().take(1).collect(),
            Some(m) => m.to_string(),
            None => String::new(),
        };
        if errors.has(Error::NameFormat) {
            reformat_names(&mut first, &mut last, rng);
            planted.name_formats += 1;
        }

        let mut birth = p.birth;
        if errors.has(Error::DobSwap) {
            birth = NaiveDate::from_ymd_opt(birth.year(), birth.day(), birth.month()).unwrap_or(birth);
            planted.dob_swaps += 1;
        }
        if errors.has(Error::DobDigit)
            && let Some(d) = digit_error(birth, rng)
        {
            birth = d;
            planted.dob_digit_errors += 1;
        }

        let mut home = Cow::Borrowed(&p.home);
        if errors.has(Error::Moved) {
            let mut new = self.address(rng);
            while new.street == p.home.street && new.number == p.home.number {
                new = self.address(rng);
            }
            home = Cow::Owned(new);
            planted.moves += 1;
        }
        let mut phone = Some(p.phone);
        if errors.has(Error::PhoneChanged) {
            let area =
                if rng.random_bool(0.6) { p.phone / 10_000_000 } else { PLACES[t.places.pick(rng)].3 as u64 };
            let mut new = phone_number(area as u16, rng);
            while new == p.phone {
                new = phone_number(area as u16, rng);
            }
            phone = Some(new);
            planted.phone_changes += 1;
        }

        // Values a record lacks, and how this record writes what it has.
        let mut email = p.email.clone();
        if rng.random_bool(n.missing_email) {
            email.clear();
            planted.missing_emails += 1;
        }
        if rng.random_bool(n.missing_phone) {
            phone = None;
            planted.missing_phones += 1;
        }
        let address = if rng.random_bool(n.missing_address) {
            planted.missing_addresses += 1;
            None
        } else {
            Some(home)
        };
        if side == Side::Practice && !middle.is_empty() && rng.random_bool(n.missing_middle) {
            middle.clear();
            planted.missing_middle_names += 1;
        }
        let mut sex = p.sex.as_str();
        if side == Side::Ehr && rng.random_bool(n.unknown_sex) {
            sex = if rng.random_bool(0.5) { "U" } else { "" };
            planted.unknown_sex += 1;
        }

        let (mut address1, mut address2, mut city, mut state, mut zip) =
            (String::new(), String::new(), "", "", String::new());
        if let Some(a) = address {
            let (abbr, full, _) = SUFFIXES[a.suffix];
            let suffix = if rng.random_bool(0.5) { abbr } else { full };
            address1 = format!("{} {} {suffix}", a.number, a.street);
            address2 = a.unit.clone().unwrap_or_default();
            let place = PLACES[a.place];
            (city, state) = (place.0, place.1);
            zip = if rng.random_bool(0.1) {
                format!("{}-{:04}", place.2, a.plus4)
            } else {
                place.2.to_string()
            };
        }
        let phone = phone.map(|d| format_phone(d, rng)).unwrap_or_default();
        let mobile = match (side, p.mobile) {
            (Side::Practice, Some(d)) => format_phone(d, rng),
            _ => String::new(),
        };
        if side == Side::Ehr {
            middle.clear();
        }
        Record { first, middle, last, birth, sex, address1, address2, city, state, zip, phone, mobile, email }
    }

    /// A given name and its nicknames.
    fn given_name(&self, sex: Sex, rng: &mut StdRng) -> (&'static str, &'static [&'static str]) {
        let t = &self.tables;
        match sex {
            Sex::F => {
                let i = t.female.pick(rng);
                (FEMALE[i], t.female_nicknames[i])
            }
            _ => {
                let i = t.male.pick(rng);
                (MALE[i], t.male_nicknames[i])
            }
        }
    }

    /// Four in five from the surname table; the rest a rare name made of a
    /// root and an ending, the long tail real populations have.
    fn surname(&self, rng: &mut StdRng) -> Cow<'static, str> {
        if rng.random_bool(0.8) {
            Cow::Borrowed(SURNAMES[self.tables.surnames.pick(rng)])
        } else {
            let root = SURNAME_ROOTS.choose(rng).copied().unwrap_or("Ash");
            let ending = SURNAME_ENDINGS.choose(rng).copied().unwrap_or("ford");
            Cow::Owned(format!("{root}{ending}"))
        }
    }

    fn address(&self, rng: &mut StdRng) -> Address {
        let t = &self.tables;
        // Low house numbers are the most common.
        let number = if rng.random_bool(0.95) {
            1 + (rng.random::<f64>().powi(2) * 2999.0) as u32
        } else {
            rng.random_range(3000..10_000)
        };
        let unit = rng.random_bool(0.15).then(|| match rng.random_range(0..20) {
            0..8 => {
                let letter =
                    if rng.random_bool(0.3) { ["A", "B", "C", "D"][rng.random_range(0..4)] } else { "" };
                format!("Apt {}{letter}", rng.random_range(1..41))
            }
            8..12 => format!("Unit {}", rng.random_range(1..301)),
            12..15 => format!("#{}", rng.random_range(1..21)),
            15..17 => format!("Fl {}", rng.random_range(1..5)),
            // Commas inside a field: the CSV writer must quote them.
            _ => format!("Bldg {}, Apt {}", rng.random_range(1..10), rng.random_range(1..41)),
        });
        Address {
            number,
            street: STREETS[t.streets.pick(rng)],
            suffix: t.suffixes.pick(rng),
            unit,
            place: t.places.pick(rng),
            plus4: rng.random_range(1..10_000),
        }
    }
}

/// Ages spread over a century, fewer of the very old.
fn birth_date(rng: &mut StdRng) -> NaiveDate {
    let span = (LATEST_BIRTH - EARLIEST_BIRTH).num_days();
    let days_old =
        if rng.random_bool(0.85) { rng.random_range(0..75 * 365) } else { rng.random_range(75 * 365..=span) };
    LATEST_BIRTH - chrono::Duration::days(days_old)
}

/// A ten-digit NANP number in `area`: the exchange starts 2-9 and is never N11.
fn phone_number(area: u16, rng: &mut StdRng) -> u64 {
    let exchange = loop {
        let e = rng.random_range(200..1000u64);
        if e % 100 != 11 {
            break e;
        }
    };
    area as u64 * 10_000_000 + exchange * 10_000 + rng.random_range(0..10_000u64)
}

/// The forms people type: (617) 555-0123, 617-555-0123, 6175550123, 617.555.0123.
fn format_phone(digits: u64, rng: &mut StdRng) -> String {
    let (area, exchange, line) = (digits / 10_000_000, digits / 10_000 % 1000, digits % 10_000);
    match rng.random_range(0..10) {
        0..4 => format!("({area}) {exchange}-{line:04}"),
        4..7 => format!("{area}-{exchange}-{line:04}"),
        7..9 => format!("{area}{exchange}{line:04}"),
        _ => format!("{area}.{exchange}.{line:04}"),
    }
}

/// A lower-case address at an example domain, made from the name and
/// perhaps the birth year or other digits.
fn email(first: &str, last: &str, born: i32, rng: &mut StdRng) -> String {
    let (f, l) = (ascii_letters(first), ascii_letters(last));
    let initial = &f[..f.len().min(1)];
    let local = match rng.random_range(0..5) {
        0 => format!("{f}.{l}"),
        1 => format!("{initial}{l}"),
        2 => format!("{f}{l}"),
        3 => format!("{f}_{l}"),
        _ => format!("{l}{initial}"),
    };
    let digits = match rng.random_range(0..5) {
        0 => String::new(),
        1 => format!("{:02}", born % 100),
        2 => born.to_string(),
        3 => rng.random_range(1..100).to_string(),
        _ => rng.random_range(100..10_000).to_string(),
    };
    let domain = EMAIL_DOMAINS.choose(rng).copied().unwrap_or("example.com");
    format!("{local}{digits}@{domain}")
}

/// Lower-case ASCII letters only, accents taken off: "Núñez" -> "nunez".
fn ascii_letters(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            let base = match c.to_lowercase().next().unwrap_or(c) {
                'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
                'ç' => 'c',
                'è' | 'é' | 'ê' | 'ë' => 'e',
                'ì' | 'í' | 'î' | 'ï' => 'i',
                'ñ' => 'n',
                'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
                'ù' | 'ú' | 'û' | 'ü' => 'u',
                'ý' | 'ÿ' => 'y',
                c => c,
            };
            base.is_ascii_lowercase().then_some(base)
        })
        .collect()
}

/// "BILL" -> "Bill".
fn title_case(key: &str) -> String {
    let mut out = key.to_lowercase();
    if let Some(first) = out.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    out
}

/// Keys adjacent on a QWERTY keyboard: the letter a slipped finger types.
fn neighbours(c: char) -> &'static str {
    const ROWS: [&str; 26] = [
        "qwsz", "vghn", "xdfv", "serfcx", "wsdr", "drtgvc", "ftyhbv", "gyujnb", "ujko", "huikmn", "jiolm",
        "kop", "njk", "bhjm", "iklp", "ol", "wa", "edft", "awedxz", "rfgy", "yhji", "cfgb", "qase", "zsdc",
        "tghu", "asx",
    ];
    match c.to_ascii_lowercase() {
        l @ 'a'..='z' => ROWS[(l as u8 - b'a') as usize],
        _ => "aeiou",
    }
}

/// One keying error: a letter substituted by a neighbour, doubled or
/// inserted, dropped, or two letters swapped. Always changes the name's key.
fn typo(name: &str, rng: &mut StdRng) -> String {
    let chars: Vec<char> = name.chars().collect();
    let letters: Vec<usize> = (0..chars.len()).filter(|&i| chars[i].is_alphabetic()).collect();
    if letters.is_empty() {
        return name.to_string();
    }
    for _ in 0..16 {
        let mut c = chars.clone();
        let i = letters[rng.random_range(0..letters.len())];
        let near = neighbours(c[i]).as_bytes();
        let slip = case_like(near[rng.random_range(0..near.len())] as char, c[i]);
        match rng.random_range(0..4) {
            0 => c[i] = slip,
            1 => {
                // A doubled letter or a neighbour struck with it, in the case
                // of the letter it lands before ("Smmith", not "SMith").
                let extra = if rng.random_bool(0.5) { c[i] } else { slip };
                let model = c.get(i + 1).copied().filter(|n| n.is_alphabetic()).unwrap_or(c[i]);
                c.insert(i + 1, case_like(extra, model));
            }
            2 if letters.len() > 2 => {
                c.remove(i);
            }
            3 if c.get(i + 1).is_some_and(|n| n.is_alphabetic()) => {
                // Swap the letters, keep the case pattern: "Jnoes", not "jNoes".
                let (a, b) = (c[i], c[i + 1]);
                (c[i], c[i + 1]) = (case_like(b, a), case_like(a, b));
            }
            _ => continue,
        }
        let out: String = c.into_iter().collect();
        if name_key(&out) != name_key(name) {
            return out;
        }
    }
    // Only a name like "Aa" gets here: double its last letter.
    format!("{name}{}", chars[letters[letters.len() - 1]])
}

/// `c` in the case of `model`.
fn case_like(c: char, model: char) -> char {
    let converted = if model.is_uppercase() { c.to_uppercase().next() } else { c.to_lowercase().next() };
    converted.unwrap_or(c)
}

/// Case and spacing the way some front desks type: ALL CAPS, all lower
/// case, or stray spaces. Cosmetic: the names' keys do not change.
fn reformat_names(first: &mut String, last: &mut String, rng: &mut StdRng) {
    match rng.random_range(0..4) {
        0 | 1 => {
            *first = first.to_uppercase();
            *last = last.to_uppercase();
        }
        2 => {
            *first = first.to_lowercase();
            *last = last.to_lowercase();
        }
        _ => match rng.random_range(0..3) {
            0 => last.push(' '),
            1 => first.insert(0, ' '),
            // A doubled space inside a two-word surname, else after the first name.
            _ => match last.find(' ') {
                Some(at) => last.insert(at, ' '),
                None => first.push_str("  "),
            },
        },
    }
}

/// One digit of YYYYMMDD mistyped, giving another valid date in range.
/// None when no such date turns up (rare: most digits have several).
fn digit_error(d: NaiveDate, rng: &mut StdRng) -> Option<NaiveDate> {
    let text = d.format("%Y%m%d").to_string();
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    for _ in 0..32 {
        // The century is rarely mistyped: keep the first two digits.
        let pos = rng.random_range(2..8);
        let new = rng.random_range(0..10);
        if new == digits[pos] {
            continue;
        }
        let mut t = digits.clone();
        t[pos] = new;
        let number = |r: std::ops::Range<usize>| t[r].iter().fold(0, |acc, d| acc * 10 + d);
        let candidate = NaiveDate::from_ymd_opt(number(0..4) as i32, number(4..6), number(6..8));
        if let Some(c) = candidate.filter(|c| (EARLIEST_BIRTH..=LATEST_BIRTH).contains(c)) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    #[test]
    fn typos_change_the_key_by_one_edit() {
        let mut r = rng(1);
        for name in ["Smith", "O'Brien", "Li", "Núñez", "De La Cruz", "ANN"] {
            for _ in 0..200 {
                let t = typo(name, &mut r);
                assert_ne!(name_key(&t), name_key(name), "{name} -> {t}");
                // Case aside: a swap keeps the case pattern ("Smith" -> "Msith").
                let distance = strsim::damerau_levenshtein(&name.to_lowercase(), &t.to_lowercase());
                assert_eq!(distance, 1, "{name} -> {t}");
            }
        }
    }

    #[test]
    fn reformatting_keeps_the_key() {
        let mut r = rng(2);
        for _ in 0..100 {
            let (mut f, mut l) = ("José".to_string(), "De La Cruz".to_string());
            reformat_names(&mut f, &mut l, &mut r);
            assert_eq!((name_key(&f), name_key(&l)), (name_key("José"), name_key("De La Cruz")));
        }
    }

    #[test]
    fn digit_errors_stay_valid_and_in_range() {
        let mut r = rng(3);
        let d = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
        for _ in 0..500 {
            let e = digit_error(d, &mut r).unwrap();
            assert!(e != d && e <= LATEST_BIRTH && e >= EARLIEST_BIRTH, "{e}");
        }
    }

    #[test]
    fn phones_are_nanp_valid() {
        let mut r = rng(4);
        for _ in 0..2000 {
            let p = phone_number(617, &mut r);
            let shown = format_phone(p, &mut r);
            let e164 = crate::flatfile::normalize_value(crate::model::Field::PhoneHome, &shown);
            assert_eq!(e164, Ok(compact_str::format_compact!("+1{p}")), "{shown}");
        }
    }

    #[test]
    fn emails_are_lower_case_ascii() {
        let mut r = rng(5);
        let e = email("Zoë", "Müller", 1990, &mut r);
        assert!(e.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()), "{e}");
        assert!(e.contains("muller"), "{e}");
    }

    #[test]
    fn tables_fit_windows_1252_and_have_no_repeats() {
        let tables: [&[&str]; 4] = [FEMALE, MALE, SURNAMES, STREETS];
        for t in tables {
            let mut seen = std::collections::HashSet::new();
            for name in t {
                assert!(seen.insert(name), "{name} twice");
                let (_, _, bad) = encoding_rs::WINDOWS_1252.encode(name);
                assert!(!bad, "{name} is not in Windows-1252");
            }
        }
        assert!(FEMALE.len() >= 300 && MALE.len() >= 300 && SURNAMES.len() >= 1000);
        for (city, state, zip, area) in PLACES {
            assert!(zip.len() == 5 && zip.bytes().all(|b| b.is_ascii_digit()), "{city} {zip}");
            assert!((200..1000).contains(area) && area % 100 != 11, "{city} {area}");
            assert_eq!(
                crate::flatfile::normalize_value(crate::model::Field::State, state).as_deref(),
                Ok(*state)
            );
        }
    }
}
