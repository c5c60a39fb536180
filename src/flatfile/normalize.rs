//! Field-level normalisation: turning the raw text of one field (a date, a sex
//! code, a phone number, a state, a ZIP, an email) into the canonical value
//! stored on a [`crate::model::Patient`], and building the comparison keys
//! reconciliation uses to tell a real difference from formatting noise.
//!
//! This module only ever sees one value at a time. It does not read files,
//! know about columns or schemas beyond the options passed in, or decide
//! whether a bad value rejects the row or only warns: every function returns
//! a short, lower-case reason (quoting the offending value) and the caller
//! decides what to do with it. Empty values are also the caller's business;
//! the parsers here treat an empty string as just another invalid value.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};

use compact_str::{CompactString, format_compact};

use crate::model::{self, Sex};

/// Trim, and collapse internal runs of whitespace (incl. tabs, CR, LF, NBSP)
/// to a single space.
pub(crate) fn text(raw: &str) -> CompactString {
    // Nearly every value is already tidy: ASCII with single inner spaces.
    let b = raw.as_bytes();
    let tidy = b.is_ascii()
        && b.first().is_none_or(|&c| c != b' ')
        && b.last().is_none_or(|&c| c != b' ')
        && !b.iter().any(|&c| c.is_ascii_whitespace() && c != b' ')
        && !b.windows(2).any(|w| w == b"  ");
    if tidy {
        return CompactString::from(raw);
    }
    // `split_whitespace` follows Unicode White_Space, so NBSP, the narrow NBSP
    // and the ideographic space that spreadsheets leave behind all count.
    let mut out = CompactString::with_capacity(raw.len());
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

// ---------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------

/// Birth dates earlier than this are typos (1880 for 1980), not patients.
pub(crate) const EARLIEST_YEAR: i32 = 1850;

/// Parse a date with the first of `formats` (chrono strftime strings) that
/// matches the whole trimmed input.
///
/// Beyond what chrono checks, the input must have the shape the format would
/// print: a one-digit month or day is accepted where the format pads it
/// (`2/3/1980` for `%m/%d/%Y`, because spreadsheets drop the zeros), but a
/// two-digit year is not accepted for `%Y`, and an unseparated format such as
/// `%Y%m%d` needs exactly its 8 digits. chrono alone would read `2/3/80` as
/// the year 80 and `1980123` as 1980-12-03.
pub(crate) fn date(raw: &str, formats: &[String], today: NaiveDate) -> Result<NaiveDate, String> {
    let input = text(raw);
    if formats.is_empty() {
        return Err(format!("no date format configured for {input:?}"));
    }
    let parsed = formats.iter().find_map(|f| {
        numeric_date(&input, f)
            .or_else(|| NaiveDate::parse_from_str(&input, f).ok().filter(|d| same_shape(&input, *d, f)))
    });
    let Some(d) = parsed else {
        return Err(format!("not a date in format {}: {input:?}", human_formats(formats)));
    };
    if d.year() < EARLIEST_YEAR {
        return Err(format!("date is before {EARLIEST_YEAR}: {input:?}"));
    }
    if d > today {
        return Err(format!("date is in the future: {input:?}"));
    }
    Ok(d)
}

/// The common all-number formats (`%Y-%m-%d`, `%m/%d/%Y`, `%Y%m%d`, any
/// one separator of `-/.`) read straight from the digits. `None` when the
/// format is another kind or the input does not fit it; the general path
/// then decides, so this only ever agrees with it, faster.
fn numeric_date(input: &str, format: &str) -> Option<NaiveDate> {
    let (order, sep) = match format.as_bytes() {
        [b'%', a, s1, b'%', b, s2, b'%', c] if s1 == s2 && b"-/.".contains(s1) => ([*a, *b, *c], Some(*s1)),
        [b'%', a, b'%', b, b'%', c] => ([*a, *b, *c], None),
        _ => return None,
    };
    let mut sorted = order;
    sorted.sort_unstable();
    if sorted != *b"Ymd" {
        return None;
    }
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit()).then(|| p.parse::<u32>().ok()).flatten();
    let parts: Vec<&str> = match sep {
        Some(sep) => input.split(sep as char).collect(),
        None => {
            if input.len() != 8 {
                return None;
            }
            let mut at = 0;
            order
                .iter()
                .map(|&spec| {
                    let n = if spec == b'Y' { 4 } else { 2 };
                    let part = input.get(at..at + n).unwrap_or("");
                    at += n;
                    part
                })
                .collect()
        }
    };
    let [p1, p2, p3] = parts.as_slice() else { return None };
    let (mut y, mut m, mut d) = (None, None, None);
    for (&spec, part) in order.iter().zip([p1, p2, p3]) {
        let ok_len = if spec == b'Y' { part.len() == 4 } else { matches!(part.len(), 1 | 2) };
        if !ok_len {
            return None;
        }
        let v = digits(part)?;
        match spec {
            b'Y' => y = Some(v as i32),
            b'm' => m = Some(v),
            _ => d = Some(v),
        }
    }
    NaiveDate::from_ymd_opt(y?, m?, d?)
}

/// Whether `input` looks like `d` printed with `format`, allowing a missing
/// zero pad, any case for month names, and an abbreviated month name where
/// the format has the full one (chrono's `%B` also accepts those).
fn same_shape(input: &str, d: NaiveDate, format: &str) -> bool {
    let mut rendered = String::new();
    // A format with time fields cannot be printed from a bare date; chrono has
    // already checked the input against it, so trust that rather than reject.
    if write!(rendered, "{}", d.format(format)).is_err() {
        return true;
    }
    let (want, got) = (tokens(&text(&rendered)), tokens(input));
    want.len() == got.len()
        && want.iter().zip(&got).all(|(w, g)| match (w, g) {
            (Token::Digits(w), Token::Digits(g)) => {
                w == g || (g.len() == 1 && w.len() == 2 && w.starts_with('0') && w.ends_with(g.as_str()))
            }
            (Token::Letters(w), Token::Letters(g)) => {
                w == g || (g.chars().count() == 3 && w.starts_with(g.as_str()))
            }
            (w, g) => w == g,
        })
}

#[derive(Debug, PartialEq)]
enum Token {
    Digits(String),
    /// Upper-cased, so month names compare case-insensitively.
    Letters(String),
    Space,
    Other(char),
}

fn tokens(s: &str) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    for c in s.chars() {
        match (c, out.last_mut()) {
            (c, Some(Token::Digits(run))) if c.is_ascii_digit() => run.push(c),
            (c, _) if c.is_ascii_digit() => out.push(Token::Digits(c.to_string())),
            (c, Some(Token::Letters(run))) if c.is_alphabetic() => run.extend(c.to_uppercase()),
            (c, _) if c.is_alphabetic() => out.push(Token::Letters(c.to_uppercase().collect())),
            (c, Some(Token::Space)) if c.is_whitespace() => {}
            (c, _) if c.is_whitespace() => out.push(Token::Space),
            (c, _) => out.push(Token::Other(c)),
        }
    }
    out
}

/// The formats as staff would write them: "MM/DD/YYYY or YYYY-MM-DD".
fn human_formats(formats: &[String]) -> String {
    let names: Vec<String> = formats.iter().map(|f| human_format(f)).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// One strftime string in the MM/DD/YYYY notation people know from forms.
/// Specifiers without a common notation are left as written.
fn human_format(format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // chrono's padding modifiers: only "no padding" changes what people expect to type.
        let unpadded = chars.next_if_eq(&'-').is_some();
        if !unpadded {
            let _ = chars.next_if(|m| matches!(m, '_' | '0'));
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let human = match (spec, unpadded) {
            ('Y', _) => "YYYY",
            ('y', _) => "YY",
            ('m', false) => "MM",
            ('m', true) => "M",
            ('d', false) => "DD",
            ('d', true) | ('e', _) => "D",
            ('b' | 'h', _) => "Mon",
            ('B', _) => "Month",
            ('a', _) => "Ddd",
            ('A', _) => "Weekday",
            ('j', _) => "DDD",
            ('F', _) => "YYYY-MM-DD",
            ('D' | 'x', _) => "MM/DD/YY",
            ('H' | 'I', _) => "hh",
            ('M', _) => "mm",
            ('S', _) => "ss",
            ('p', _) => "AM/PM",
            ('R', _) => "hh:mm",
            ('T', _) => "hh:mm:ss",
            ('%', _) => "%",
            (other, _) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
                continue;
            }
        };
        out.push_str(human);
    }
    out
}

// ---------------------------------------------------------------------------
// Sex
// ---------------------------------------------------------------------------

/// Built-in sex codes, upper-case, sorted for binary search. Digits are
/// deliberately absent: "1" is male in some systems and female in others, so
/// a schema has to say so through `extra`.
const SEX_CODES: &[(&str, Sex)] = &[
    ("F", Sex::F),
    ("FEMALE", Sex::F),
    ("M", Sex::M),
    ("MALE", Sex::M),
    ("MAN", Sex::M),
    // HL7 "N" (not applicable / not specified) says nothing about the patient.
    ("N", Sex::U),
    ("NON BINARY", Sex::O),
    ("NON-BINARY", Sex::O),
    ("NONBINARY", Sex::O),
    ("O", Sex::O),
    ("OTHER", Sex::O),
    ("U", Sex::U),
    ("UNK", Sex::U),
    ("UNKNOWN", Sex::U),
    ("WOMAN", Sex::F),
    ("X", Sex::O),
];

fn builtin_sex(code: &str) -> Option<Sex> {
    SEX_CODES.binary_search_by(|(k, _)| (*k).cmp(code)).ok().map(|i| SEX_CODES[i].1)
}

/// Map a sex/gender code to M/F/O/U, case-insensitively after trimming.
/// `extra` (from the schema, e.g. `{"1" = "M", "2" = "F"}`) is checked first,
/// so a schema can also override a built-in code.
pub(crate) fn sex(raw: &str, extra: &BTreeMap<String, String>) -> Result<Sex, String> {
    let code = text(raw).to_uppercase();
    if let Some((key, value)) = extra.iter().find(|(k, _)| text(k).to_uppercase() == code) {
        // The schema's value goes through the built-in table so that "Female"
        // works as well as "F"; anything else is a schema mistake worth naming.
        return builtin_sex(&text(value).to_uppercase())
            .ok_or_else(|| format!("schema maps sex code {key:?} to {value:?}, which is not M, F, O or U"));
    }
    builtin_sex(&code).ok_or_else(|| format!("unknown sex code {:?}", text(raw)))
}

// ---------------------------------------------------------------------------
// Phone numbers
// ---------------------------------------------------------------------------

/// Words that introduce an extension, lower-case, longest first so that
/// "ext." is not read as "ext" followed by a stray period.
const EXTENSION_MARKERS: &[&str] = &["extension", "ext.", "ext", "x", "#"];

/// A normaliser's fast path: writes the value into an empty `slot` and says
/// so, or leaves it untouched for the general path.
type Fast = fn(&str, &mut Option<CompactString>) -> bool;

/// `fast`, else `general`, as an owned value.
fn owned(
    raw: &str,
    fast: Fast,
    general: impl FnOnce(&str) -> Result<CompactString, String>,
) -> Result<CompactString, String> {
    let mut value = None;
    if fast(raw, &mut value) {
        return Ok(value.unwrap_or_default());
    }
    general(raw)
}

/// `fast`, else `general`, written into `slot` (empty), where the value
/// stays, for the HL7 mapping's hot path.
///
/// Written in place rather than returned and moved in: a move reads the
/// new value back in wider words than it was built in, and waits until
/// those writes have landed (a store-forwarding stall). In the
/// profile-guided build, that read-back for phones alone drew about 3% of
/// HL7 parse-and-map's time samples (perf, cpu-clock).
fn into(
    raw: &str,
    slot: &mut Option<CompactString>,
    fast: Fast,
    general: impl FnOnce(&str) -> Result<CompactString, String>,
) {
    if !fast(raw, slot) {
        *slot = general(raw).ok();
    }
}

/// Normalise a phone number to E.164 ("+16175550142"). National numbers are
/// read in `default_country`, of which only the NANP countries US and CA are
/// supported; numbers written with "+" (or the NANP exit code "011") work
/// whatever the default. Extensions are dropped: the canonical record has no
/// place for them and they never identify a patient.
pub(crate) fn phone_e164(raw: &str, default_country: &str) -> Result<CompactString, String> {
    // The country as schemas and HL7 mapping spell it; " us " and the like
    // are left to the general path, which trims.
    let nanp_default =
        matches!(default_country.as_bytes(), [b'U' | b'u', b'S' | b's'] | [b'C' | b'c', b'A' | b'a']);
    if nanp_default {
        return owned(raw, plain_nanp, |raw| phone_e164_general(raw, default_country));
    }
    phone_e164_general(raw, default_country)
}

/// [`phone_e164`] with the default country US (as HL7 mapping reads
/// phones), written into `slot`: see [`into`].
pub(crate) fn us_phone_into(raw: &str, slot: &mut Option<CompactString>) {
    into(raw, slot, plain_nanp, |raw| phone_e164_general(raw, "US"));
}

/// [`phone_e164`] of a valid national number in the common shapes
/// ("6175550142", "(617) 555-0142", "617.555.0142", "1-617-555-0142"): no
/// "+", letters, extension or spacing other than single-byte spaces, read
/// on the stack, and written into `slot`. False, with `slot` untouched, for
/// anything else, valid or not, which the general path then reads and
/// explains.
fn plain_nanp(raw: &str, slot: &mut Option<CompactString>) -> bool {
    let bytes = raw.as_bytes();
    let mut gathered = [0u8; 11];
    // HL7 sends the bare digits (area code and number joined): then the
    // number is the input itself, found by the cheapest scan there is.
    let digits = if bytes.iter().all(u8::is_ascii_digit) {
        bytes
    } else {
        let mut n = 0;
        for &b in bytes {
            match b {
                b'0'..=b'9' => {
                    let Some(digit) = gathered.get_mut(n) else { return false };
                    *digit = b;
                    n += 1;
                }
                b' ' | b'(' | b')' | b'-' | b'.' | b'/' => {}
                _ => return false,
            }
        }
        &gathered[..n]
    };
    // An array: copied below by moves of a known size.
    let national: Result<&[u8; 10], _> = match digits {
        [b'1', rest @ ..] if rest.len() == 10 => rest.try_into(),
        _ => digits.try_into(),
    };
    let Ok(national) = national else { return false };
    // The rules of `nanp`; the general path names whichever one fails.
    let valid = !matches!(national[0], b'0' | b'1')
        && national[1..3] != *b"11"
        && !matches!(national[3], b'0' | b'1');
    if !valid {
        return false;
    }
    let mut e164 = *b"+1..........";
    e164[2..].copy_from_slice(national);
    // SAFETY: "+1" and ten ASCII digits, checked above, are ASCII.
    let e164 = unsafe { std::str::from_utf8_unchecked(&e164) };
    model::fill(slot, e164);
    true
}

/// [`phone_e164`] for any input: spacing, "+", extensions, errors.
fn phone_e164_general(raw: &str, default_country: &str) -> Result<CompactString, String> {
    let shown = text(raw);
    let mut number = strip_extension(&shown)?.to_string();
    if number.starts_with('+') {
        // "+44 (0)20 ..." marks the trunk 0 that is dialled only from inside
        // the country; it is not part of the international number.
        number = number.replace("(0)", "");
    }
    let mut digits = String::new();
    let mut plus = false;
    for (i, c) in number.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            '(' | ')' | '-' | '.' | '/' | ' ' => {}
            c if c.is_alphabetic() => return Err(format!("letters in phone number {shown:?}")),
            c => {
                return Err(format!("unexpected character {c:?} in phone number {shown:?}"));
            }
        }
    }
    if digits.is_empty() {
        return Err(format!("no digits in phone number {shown:?}"));
    }
    if plus {
        return international(&digits, &shown);
    }
    let country = default_country.trim().to_ascii_uppercase();
    if country != "US" && country != "CA" {
        return Err(format!(
            "cannot read national phone number {shown:?} for country {:?} (only US and CA are supported; write it with +)",
            default_country.trim()
        ));
    }
    if let Some(rest) = digits.strip_prefix("011") {
        return international(rest, &shown);
    }
    nanp(digits.strip_prefix('1').filter(|_| digits.len() == 11).unwrap_or(&digits), &shown)
}

/// Split off an extension, checking that what follows the marker is digits.
/// Any other letter in the number is an error (vanity numbers, notes typed
/// into the phone column), reported as such.
fn strip_extension(shown: &str) -> Result<&str, String> {
    let Some(at) = shown.find(|c: char| c.is_alphabetic() || c == '#') else {
        return Ok(shown);
    };
    let rest = &shown[at..];
    let marker =
        EXTENSION_MARKERS.iter().find(|m| rest.get(..m.len()).is_some_and(|p| p.eq_ignore_ascii_case(m)));
    let Some(marker) = marker else {
        return Err(format!("letters in phone number {shown:?}"));
    };
    let ext = rest[marker.len()..].trim_start_matches([':', '.', ' ']).trim_end();
    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("unreadable extension in phone number {shown:?}"));
    }
    Ok(shown[..at].trim_end())
}

/// `digits` follows a "+" (or "011"): the country code and the number.
fn international(digits: &str, shown: &str) -> Result<CompactString, String> {
    if let Some(national) = digits.strip_prefix('1') {
        return nanp(national, shown);
    }
    if digits.starts_with('0') {
        return Err(format!("country code cannot start with 0 in phone number {shown:?}"));
    }
    // E.164 caps a number at 15 digits; real numbers outside NANP have at
    // least 8 with their country code. Checking more needs per-country plans.
    if !(8..=15).contains(&digits.len()) {
        return Err(format!(
            "expected 8 to 15 digits in international phone number {shown:?}, found {}",
            digits.len()
        ));
    }
    Ok(format_compact!("+{digits}"))
}

/// `digits` is the number without its country code 1.
fn nanp(digits: &str, shown: &str) -> Result<CompactString, String> {
    if digits.len() != 10 {
        return Err(format!("expected 10 digits in phone number {shown:?}, found {}", digits.len()));
    }
    let (area, exchange) = (&digits[..3], &digits[3..6]);
    // N11 codes (211, 411, 911...) are service numbers; NANP never assigns
    // them as area codes. 555-01xx numbers are fictional but well formed: keep.
    if area.starts_with(['0', '1']) || &area[1..] == "11" {
        return Err(format!("invalid area code {area} in phone number {shown:?}"));
    }
    if exchange.starts_with(['0', '1']) {
        return Err(format!("invalid exchange {exchange} in phone number {shown:?}"));
    }
    Ok(format_compact!("+1{digits}"))
}

// ---------------------------------------------------------------------------
// US states, ZIP codes, emails
// ---------------------------------------------------------------------------

/// USPS codes accepted: the 50 states, DC, the inhabited territories, and
/// the military "states". Sorted for binary search.
const US_STATE_CODES: &[&str] = &[
    "AA", "AE", "AK", "AL", "AP", "AR", "AS", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "GU", "HI",
    "IA", "ID", "IL", "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MP", "MS", "MT", "NC",
    "ND", "NE", "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA", "PR", "RI", "SC", "SD", "TN", "TX",
    "UT", "VA", "VI", "VT", "WA", "WI", "WV", "WY",
];

/// Full names (upper-case, no periods or commas, single spaces) and their
/// codes, sorted by name for binary search. A few common variants are listed
/// as separate names.
const US_STATE_NAMES: &[(&str, &str)] = &[
    ("ALABAMA", "AL"),
    ("ALASKA", "AK"),
    ("AMERICAN SAMOA", "AS"),
    ("ARIZONA", "AZ"),
    ("ARKANSAS", "AR"),
    ("ARMED FORCES AFRICA", "AE"),
    ("ARMED FORCES AMERICAS", "AA"),
    ("ARMED FORCES CANADA", "AE"),
    ("ARMED FORCES EUROPE", "AE"),
    ("ARMED FORCES MIDDLE EAST", "AE"),
    ("ARMED FORCES PACIFIC", "AP"),
    ("CALIFORNIA", "CA"),
    ("COLORADO", "CO"),
    ("CONNECTICUT", "CT"),
    ("DELAWARE", "DE"),
    ("DISTRICT OF COLUMBIA", "DC"),
    ("FLORIDA", "FL"),
    ("GEORGIA", "GA"),
    ("GUAM", "GU"),
    ("HAWAII", "HI"),
    ("IDAHO", "ID"),
    ("ILLINOIS", "IL"),
    ("INDIANA", "IN"),
    ("IOWA", "IA"),
    ("KANSAS", "KS"),
    ("KENTUCKY", "KY"),
    ("LOUISIANA", "LA"),
    ("MAINE", "ME"),
    ("MARYLAND", "MD"),
    ("MASSACHUSETTS", "MA"),
    ("MICHIGAN", "MI"),
    ("MINNESOTA", "MN"),
    ("MISSISSIPPI", "MS"),
    ("MISSOURI", "MO"),
    ("MONTANA", "MT"),
    ("NEBRASKA", "NE"),
    ("NEVADA", "NV"),
    ("NEW HAMPSHIRE", "NH"),
    ("NEW JERSEY", "NJ"),
    ("NEW MEXICO", "NM"),
    ("NEW YORK", "NY"),
    ("NORTH CAROLINA", "NC"),
    ("NORTH DAKOTA", "ND"),
    ("NORTHERN MARIANA ISLANDS", "MP"),
    ("OHIO", "OH"),
    ("OKLAHOMA", "OK"),
    ("OREGON", "OR"),
    ("PENNSYLVANIA", "PA"),
    ("PUERTO RICO", "PR"),
    ("RHODE ISLAND", "RI"),
    ("SOUTH CAROLINA", "SC"),
    ("SOUTH DAKOTA", "SD"),
    ("TENNESSEE", "TN"),
    ("TEXAS", "TX"),
    ("US VIRGIN ISLANDS", "VI"),
    ("UTAH", "UT"),
    ("VERMONT", "VT"),
    ("VIRGIN ISLANDS", "VI"),
    ("VIRGINIA", "VA"),
    ("WASHINGTON", "WA"),
    ("WASHINGTON DC", "DC"),
    ("WEST VIRGINIA", "WV"),
    ("WISCONSIN", "WI"),
    ("WYOMING", "WY"),
];

/// [`US_STATE_CODES`] as one bit per second letter for each first letter,
/// so that a two-letter code is checked with a shift rather than a search.
/// Built from the table at compile time, so the two cannot disagree.
const US_STATE_CODE_BITS: [u32; 26] = {
    let mut bits = [0u32; 26];
    let mut i = 0;
    while i < US_STATE_CODES.len() {
        let code = US_STATE_CODES[i].as_bytes();
        assert!(code.len() == 2 && code[0].is_ascii_uppercase() && code[1].is_ascii_uppercase());
        bits[(code[0] - b'A') as usize] |= 1 << (code[1] - b'A');
        i += 1;
    }
    bits
};

/// Whether two bytes, in any case, are one of [`US_STATE_CODES`].
fn us_state_code(a: u8, b: u8) -> bool {
    let (a, b) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
    a.is_ascii_uppercase()
        && b.is_ascii_uppercase()
        && (US_STATE_CODE_BITS[usize::from(a - b'A')] >> (b - b'A')) & 1 == 1
}

/// A US state or territory as its USPS two-letter code. Accepts the code in
/// any case ("ny", "N.Y.") and the full name case-insensitively, with any
/// spacing and optional periods ("new  york", "Washington, D.C.").
pub(crate) fn us_state(raw: &str) -> Result<CompactString, String> {
    owned(raw, plain_state, us_state_general)
}

/// [`us_state`], written into `slot`: see [`into`].
pub(crate) fn us_state_into(raw: &str, slot: &mut Option<CompactString>) {
    into(raw, slot, plain_state, us_state_general);
}

/// [`us_state`] of most values, the bare code: nothing to trim, strip or
/// look up by name.
fn plain_state(raw: &str, slot: &mut Option<CompactString>) -> bool {
    let [a, b] = raw.as_bytes() else { return false };
    if !us_state_code(*a, *b) {
        return false;
    }
    model::fill(slot, raw).make_ascii_uppercase();
    true
}

/// [`us_state`] for any input.
fn us_state_general(raw: &str) -> Result<CompactString, String> {
    // Periods go without a trace ("N.Y.", "U.S. Virgin Islands", "D.C."); a
    // comma separates ("Washington, DC").
    let key = text(&raw.replace('.', "").replace(',', " ").to_uppercase());
    if key.len() == 2 && US_STATE_CODES.binary_search(&key.as_str()).is_ok() {
        return Ok(key);
    }
    US_STATE_NAMES
        .binary_search_by(|(name, _)| (*name).cmp(key.as_str()))
        .map(|i| CompactString::from(US_STATE_NAMES[i].1))
        .map_err(|_| format!("unknown US state {:?}", text(raw)))
}

/// A US ZIP code as "12345" or "12345-6789". A bare 9-digit ZIP+4 gets its
/// hyphen. A 4-digit ZIP is not padded: it is almost always a New England or
/// New Jersey ZIP whose leading zero a spreadsheet ate, but guessing would
/// hide that the file was damaged, so staff are told instead.
pub(crate) fn us_zip(raw: &str) -> Result<CompactString, String> {
    owned(raw, plain_zip, us_zip_general)
}

/// [`us_zip`], written into `slot`: see [`into`].
pub(crate) fn us_zip_into(raw: &str, slot: &mut Option<CompactString>) {
    into(raw, slot, plain_zip, us_zip_general);
}

/// [`us_zip`] of most values, already "12345" or "12345-6789": kept as they are.
fn plain_zip(raw: &str, slot: &mut Option<CompactString>) -> bool {
    let b = raw.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let clean = match b.len() {
        5 => digits(b),
        10 => digits(&b[..5]) && b[5] == b'-' && digits(&b[6..]),
        _ => false,
    };
    if clean {
        model::fill(slot, raw);
    }
    clean
}

/// [`us_zip`] for any input: spacing, a ZIP+4 without its hyphen, errors.
fn us_zip_general(raw: &str) -> Result<CompactString, String> {
    let zip = raw.trim();
    let not_zip = || format!("not a US zip code (12345 or 12345-6789): {zip:?}");
    if !zip.is_ascii() {
        return Err(not_zip());
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (main, plus4) = match zip.split_once('-') {
        Some((main, plus4)) => (main, Some(plus4)),
        // A ZIP+4 without its hyphen; 8 digits is one that also lost its zero.
        None if zip.len() == 9 || zip.len() == 8 => {
            let (main, plus4) = zip.split_at(zip.len() - 4);
            (main, Some(plus4))
        }
        None => (zip, None),
    };
    if !digits(main) || !plus4.is_none_or(|p| p.len() == 4 && digits(p)) {
        return Err(not_zip());
    }
    match (main.len(), plus4) {
        (5, None) => Ok(CompactString::from(main)),
        (5, Some(p)) => Ok(format_compact!("{main}-{p}")),
        (4, _) => Err(format!(
            "zip code {zip:?} has 4 digits instead of 5: a leading zero may have been lost (e.g. by a spreadsheet)"
        )),
        _ => Err(not_zip()),
    }
}

/// An email address, with the domain lower-cased (domains are
/// case-insensitive) and the local part kept as given (it need not be).
/// Deliberately loose: this catches typing and column mix-ups, not every
/// RFC 5322 corner.
pub(crate) fn email(raw: &str) -> Result<CompactString, String> {
    owned(raw, plain_email, email_general)
}

/// [`email`], written into `slot`: see [`into`].
pub(crate) fn email_into(raw: &str, slot: &mut Option<CompactString>) {
    into(raw, slot, plain_email, email_general);
}

/// What a byte is to [`plain_email`].
#[derive(Clone, Copy, PartialEq)]
enum EmailByte {
    Plain,
    Upper,
    At,
    Dot,
    /// Part of a non-ASCII character that is not a space.
    NonAscii,
    /// Whitespace, or may start some: the general path decides.
    Space,
}

/// [`EmailByte`] for every byte, so that the scan costs one load a byte
/// rather than a run of comparisons.
const EMAIL_BYTES: [EmailByte; 256] = {
    let mut table = [EmailByte::Plain; 256];
    let mut b = 0;
    while b < table.len() {
        table[b] = match b as u8 {
            b'A'..=b'Z' => EmailByte::Upper,
            b'@' => EmailByte::At,
            b'.' => EmailByte::Dot,
            // What `char::is_whitespace` says of ASCII: the vertical tab too,
            // which `u8::is_ascii_whitespace` leaves out. Then the first
            // bytes of every non-ASCII Unicode space (U+0085, U+00A0, U+1680,
            // U+2000 to U+205F, U+3000), so that "ë" or "ü" in a name need
            // not send the address down the general path.
            b'\t'..=b'\r' | b' ' | 0xC2 | 0xE1..=0xE3 => EmailByte::Space,
            0x80.. => EmailByte::NonAscii,
            _ => EmailByte::Plain,
        };
        b += 1;
    }
    table
};

/// [`email`] of a valid address without whitespace and with an ASCII
/// domain, checked in one pass over the bytes, and written into `slot`.
/// False, with `slot` untouched, for anything else, valid or not, which the
/// general path then reads and explains.
fn plain_email(raw: &str, slot: &mut Option<CompactString>) -> bool {
    let bytes = raw.as_bytes();
    // The local part is anything without whitespace, up to the first "@".
    let Some(at) =
        bytes.iter().position(|&b| matches!(EMAIL_BYTES[usize::from(b)], EmailByte::At | EmailByte::Space))
    else {
        return false;
    };
    if bytes[at] != b'@' || at == 0 {
        return false;
    }
    let (mut dot, mut upper) = (false, false);
    // True at the start, so that a leading dot is caught as ".." is, and an
    // empty domain as a trailing dot is.
    let mut after_dot = true;
    for &b in &bytes[at + 1..] {
        match EMAIL_BYTES[usize::from(b)] {
            EmailByte::Plain => after_dot = false,
            EmailByte::Upper => (upper, after_dot) = (true, false),
            EmailByte::Dot if !after_dot => (dot, after_dot) = (true, true),
            // A leading dot, "..", a second "@", a space, or a non-ASCII
            // domain, which Unicode's rules lower-case.
            _ => return false,
        }
    }
    if !dot || after_dot {
        return false;
    }
    let out = model::fill(slot, raw);
    if upper {
        out[at + 1..].make_ascii_lowercase();
    }
    true
}

/// [`email`] for any input: spacing, non-ASCII, errors.
fn email_general(raw: &str) -> Result<CompactString, String> {
    let e = raw.trim();
    if e.is_empty() {
        return Err("empty email".to_string());
    }
    if e.contains(char::is_whitespace) {
        return Err(format!("space in email {e:?}"));
    }
    let (local, domain) = match e.split_once('@') {
        None => return Err(format!("no @ in email {e:?}")),
        Some((_, domain)) if domain.contains('@') => return Err(format!("more than one @ in email {e:?}")),
        Some(pair) => pair,
    };
    if local.is_empty() {
        return Err(format!("nothing before the @ in email {e:?}"));
    }
    if domain.is_empty() {
        return Err(format!("nothing after the @ in email {e:?}"));
    }
    if domain.starts_with('.') || domain.ends_with('.') {
        return Err(format!("domain starts or ends with a dot in email {e:?}"));
    }
    if !domain.contains('.') {
        return Err(format!("domain has no dot in email {e:?}"));
    }
    // Bytes, not a `str` search: its set-up costs more than this short scan.
    if domain.as_bytes().windows(2).any(|w| w == b"..") {
        return Err(format!("two dots in a row in the domain of email {e:?}"));
    }
    let mut out = CompactString::with_capacity(e.len());
    out.push_str(local);
    out.push('@');
    if domain.bytes().any(|b| b.is_ascii_uppercase()) || !domain.is_ascii() {
        out.push_str(&domain.to_lowercase());
    } else {
        out.push_str(domain);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Languages
// ---------------------------------------------------------------------------

/// ISO 639-2's bibliographic codes that differ from its terminology codes,
/// and the terminology code each stands for (all twenty).
const BIBLIOGRAPHIC: [(&str, &str); 20] = [
    ("alb", "sqi"),
    ("arm", "hye"),
    ("baq", "eus"),
    ("bur", "mya"),
    ("chi", "zho"),
    ("cze", "ces"),
    ("dut", "nld"),
    ("fre", "fra"),
    ("geo", "kat"),
    ("ger", "deu"),
    ("gre", "ell"),
    ("ice", "isl"),
    ("mac", "mkd"),
    ("mao", "mri"),
    ("may", "msa"),
    ("per", "fas"),
    ("rum", "ron"),
    ("slo", "slk"),
    ("tib", "bod"),
    ("wel", "cym"),
];

/// Names front desks write that are not ISO's own, lower-case, and the code
/// each stands for. Cantonese and Mandarin keep ISO 639-3's codes: ISO
/// 639-2 has only Chinese, and an interpreter must know which.
const LANGUAGE_ALIASES: [(&str, &str); 6] = [
    ("cantonese", "yue"),
    ("farsi", "fas"),
    ("haitian creole", "hat"),
    ("mandarin", "cmn"),
    ("sign language", "sgn"),
    ("unknown", "und"),
];

/// A language as its ISO 639-2 code, lower-case, in the terminology form
/// (`eng`, `zho`, `fra`), from:
///
/// - an ISO 639-2 code of either form (`fre` is `fra`), or an ISO 639-3
///   code (a language ISO 639-2 lacks, such as `yue`, keeps it), case aside;
/// - an ISO 639-1 code or a language tag (`en`, `EN`, `en-US`, `zh_Hant`);
/// - ISO's English name (`English`, `spanish`), or one of a few names in
///   common use (`Farsi`, `Mandarin`, `Haitian Creole`, `Unknown`).
pub(crate) fn language(raw: &str) -> Result<CompactString, String> {
    if let Some(code) = language_code(raw.trim_ascii()) {
        return Ok(code.into());
    }
    let tidy = text(raw);
    let name = tidy.to_lowercase();
    language_code(&tidy)
        .or_else(|| LANGUAGE_ALIASES.iter().find(|(alias, _)| *alias == name).map(|(_, code)| *code))
        .or_else(|| language_names().get(name.as_str()).copied().flatten())
        .map(CompactString::from)
        .ok_or_else(|| format!("unknown language {tidy:?}"))
}

/// The ISO 639-2 code for a code or language tag (see [`language`]).
fn language_code(t: &str) -> Option<&'static str> {
    // A language tag's primary subtag; a whole code otherwise.
    let primary = &t.as_bytes()[..t.bytes().position(|b| b == b'-' || b == b'_').unwrap_or(t.len())];
    if !(2..=3).contains(&primary.len()) || !primary.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let codes = language_codes();
    codes.slots[code_slot(primary)].map(|at| codes.codes[usize::from(at.get())])
}

/// Two or three ASCII letters as a number below 27³, case aside: each
/// letter a digit from 1 to 26 in base 27, so two letters never meet three.
fn code_slot(letters: &[u8]) -> usize {
    letters.iter().fold(0, |n, b| n * 27 + usize::from(b.to_ascii_lowercase() - b'a' + 1))
}

/// Every code [`language_code`] reads: ISO 639-3's (which holds 639-2's
/// terminology codes), 639-2's bibliographic ones, 639-1's and `sgn`.
struct LanguageCodes {
    /// ISO 639-2 (else 639-3) codes.
    codes: Vec<&'static str>,
    /// Per [`code_slot`], the place in `codes` of the code it stands for.
    slots: Vec<Option<std::num::NonZeroU16>>,
}

/// Built once, from isolang's list. A table a code indexes, rather than
/// isolang's own lookups (SipHash over a perfect-hash map): PID-15 is read
/// on HL7's hot path, where those cost about 280 instructions a message
/// more (callgrind, 20,000 messages, plain release build).
fn language_codes() -> &'static LanguageCodes {
    static CODES: OnceLock<LanguageCodes> = OnceLock::new();
    CODES.get_or_init(|| {
        // Place 0 is never used, so that a slot's place is never zero.
        let mut table = LanguageCodes { codes: vec![""], slots: vec![None; 27 * 27 * 27] };
        let mut add = |letters: &str, code: &'static str| {
            let at = u16::try_from(table.codes.len()).expect("fewer than 65,535 languages");
            table.codes.push(code);
            table.slots[code_slot(letters.as_bytes())] = std::num::NonZeroU16::new(at);
        };
        for l in isolang::languages() {
            add(l.to_639_3(), l.to_639_3());
            if let Some(two) = l.to_639_1() {
                add(two, l.to_639_3());
            }
        }
        for (bibliographic, terminology) in BIBLIOGRAPHIC.into_iter().chain([("sgn", "sgn")]) {
            add(bibliographic, terminology);
        }
        table
    })
}

/// ISO 639-3's English names, lower-case, and their codes: built once, on
/// the first value that is not a code. A name ISO gives more than one
/// language ("Swahili", "Malay") is the one with an ISO 639-1 code; where
/// none or several have one, the name is not read.
fn language_names() -> &'static HashMap<String, Option<&'static str>> {
    static NAMES: OnceLock<HashMap<String, Option<&'static str>>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: HashMap<String, (Option<&'static str>, bool)> = HashMap::new();
        for l in isolang::languages() {
            let major = l.to_639_1().is_some();
            match names.entry(l.to_name().to_lowercase()) {
                Entry::Vacant(e) => {
                    e.insert((Some(l.to_639_3()), major));
                }
                Entry::Occupied(mut e) => {
                    let (code, was_major) = e.get_mut();
                    *code = match (major, *was_major) {
                        (true, false) => Some(l.to_639_3()),
                        (false, true) => *code,
                        _ => None,
                    };
                    *was_major |= major;
                }
            }
        }
        names.into_iter().map(|(name, (code, _))| (name, code)).collect()
    })
}

// ---------------------------------------------------------------------------
// Race and ethnicity
// ---------------------------------------------------------------------------

/// The OMB race categories of the CDC Race & Ethnicity code set, by the
/// names front desks write (as [`category_key`] reads them).
const RACE_NAMES: [(&str, &str); 15] = [
    ("african american", "2054-5"),
    ("alaska native", "1002-5"),
    ("american indian", "1002-5"),
    ("american indian alaska native", "1002-5"),
    ("asian", "2028-9"),
    ("black", "2054-5"),
    ("black african american", "2054-5"),
    ("caucasian", "2106-3"),
    ("native american", "1002-5"),
    ("native hawaiian", "2076-8"),
    ("native hawaiian other pacific islander", "2076-8"),
    ("other", "2131-1"),
    ("other race", "2131-1"),
    ("pacific islander", "2076-8"),
    ("white", "2106-3"),
];

/// The two OMB ethnicity categories, by name and by HL7 table 0189's codes.
const ETHNICITY_NAMES: [(&str, &str); 11] = [
    ("h", "2135-2"),
    ("hispanic", "2135-2"),
    ("hispanic latino", "2135-2"),
    ("latino", "2135-2"),
    ("n", "2186-5"),
    ("non hispanic", "2186-5"),
    ("non hispanic latino", "2186-5"),
    ("not hispanic", "2186-5"),
    ("not hispanic latino", "2186-5"),
    ("nonhispanic", "2186-5"),
    ("non latino", "2186-5"),
];

/// Answers that say the value is unknown or was not given (HL7's null
/// flavours among them): no value, rather than a bad one.
const NO_ANSWER: [&str; 12] = [
    "asked but unknown",
    "asku",
    "declined",
    "declined to answer",
    "declined to specify",
    "not specified",
    "patient declined",
    "refused",
    "u",
    "unk",
    "unknown",
    "unspecified",
];

/// The check digit of a code of the CDC Race & Ethnicity code set whose
/// four digits are `a`, `b`, `c`, `d` (`2106` of `2106-3`), by LOINC's mod 10 rule, which the code set
/// uses: the digits in odd places from the right, read right to left as a
/// number and doubled, then the digits of that and of the even places
/// summed; the check digit takes the sum up to a multiple of ten. Written
/// for four digits, as PID-10 and PID-22 are read for every message: the
/// general loop cost about 150 instructions a message more (callgrind).
fn cdc_check_digit(a: u32, b: u32, c: u32, d: u32) -> u32 {
    let doubled = 2 * (10 * d + b);
    // The digits of a number below 1000, summed.
    let doubled_digits = doubled - 9 * (doubled / 10) - 9 * (doubled / 100);
    (10 - (a + c + doubled_digits) % 10) % 10
}

/// The OMB categories' codes and their names in the CDC code set, for
/// people who read the codes ferry stores.
const CDC_CATEGORIES: [(&str, &str); 8] = [
    ("1002-5", "American Indian or Alaska Native"),
    ("2028-9", "Asian"),
    ("2054-5", "Black or African American"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    ("2106-3", "White"),
    ("2131-1", "Other Race"),
    ("2135-2", "Hispanic or Latino"),
    ("2186-5", "Not Hispanic or Latino"),
];

/// The name of a stored race or ethnicity code (`White` for `2106-3`), for
/// the OMB categories; of a language code, ISO's English name (`Spanish`
/// for `spa`). None for a code of any other field, or one without a name
/// here (a detailed CDC code such as `2108-9`).
pub(crate) fn code_name(field: model::Field, code: &str) -> Option<&'static str> {
    use model::FieldType;
    match field.field_type() {
        FieldType::Race | FieldType::Ethnicity => {
            CDC_CATEGORIES.iter().find(|(c, _)| *c == code).map(|(_, name)| *name)
        }
        FieldType::Language => isolang::Language::from_639_3(code).map(|l| l.to_name()),
        _ => None,
    }
}

/// A race as its CDC Race & Ethnicity code (`2106-3`): a code of that/// A race as its CDC Race & Ethnicity code (`2106-3`): a code of that
/// shape as it is, else an OMB category by name (`White`, `Black or African
/// American`, `Asian`, ...). An answer that none was given (`Unknown`,
/// `Declined`) is empty: no value, and no warning.
pub(crate) fn race(raw: &str) -> Result<CompactString, String> {
    cdc_code(raw, &RACE_NAMES, false)
        .ok_or_else(|| format!("unknown race {:?} (not a CDC race code or category)", text(raw)))
}

/// An ethnicity as its CDC Race & Ethnicity code (`2135-2`, `2186-5`), as
/// [`race`] reads a race; HL7 table 0189's `H` and `N` too.
pub(crate) fn ethnicity(raw: &str) -> Result<CompactString, String> {
    cdc_code(raw, &ETHNICITY_NAMES, true)
        .ok_or_else(|| format!("unknown ethnicity {:?} (not a CDC ethnicity code or category)", text(raw)))
}

/// [`race`] or [`ethnicity`], by the category `names` of the one: the code,
/// empty for an answer that none was given, `None` for no category.
///
/// A code is taken when its check digit is right (a typo in a code is not
/// stored as another race) and it is of the kind asked for: the code set's
/// ethnicities are 2133-7 to 2186-5, its races all the other codes, so a
/// race sent as an ethnicity, or the other way round, is caught.
fn cdc_code(raw: &str, names: &[(&str, &'static str)], ethnicity: bool) -> Option<CompactString> {
    let t = raw.trim_ascii();
    if let [a, b, c, d, b'-', check] = t.as_bytes()
        && [a, b, c, d, check].iter().all(|b| b.is_ascii_digit())
    {
        let digit = |b: &u8| u32::from(b - b'0');
        let (a, b, c, d) = (digit(a), digit(b), digit(c), digit(d));
        let right = cdc_check_digit(a, b, c, d) == digit(check);
        let number = ((a * 10 + b) * 10 + c) * 10 + d;
        return (right && (2133..=2186).contains(&number) == ethnicity).then(|| t.into());
    }
    let key = category_key(raw);
    if NO_ANSWER.iter().any(|answer| answer.eq_ignore_ascii_case(&key)) {
        return Some(CompactString::default());
    }
    names
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&key))
        .map(|(_, code)| CompactString::const_new(code))
}

/// A category's name as [`fold`] reads text (case aside, punctuation a
/// space), without the word "or": `Black/African American` and `Black or
/// African American` alike.
fn category_key(raw: &str) -> String {
    fold(raw).split(' ').filter(|w| *w != "OR").collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------
// Comparison keys
// ---------------------------------------------------------------------------
//
// Keys are for equality only; they are never shown or stored as values, so
// they may be lossy as long as both sides lose the same way.

/// Apostrophes and periods vanish without a trace: "O'Brien" is "OBRIEN" and
/// "J.R." is "JR", not "O BRIEN" and "J R".
fn is_joining_punct(c: char) -> bool {
    matches!(c, '\'' | '`' | '.' | '\u{2018}' | '\u{2019}' | '\u{02BC}' | '\u{00B4}')
}

/// Other punctuation separates words: "Smith-Jones" is "SMITH JONES", and so
/// is "Smith/Jones". Listed explicitly rather than "not alphanumeric" so that
/// combining accents (decomposed "José") are kept, not stripped.
fn is_separating_punct(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '\u{2010}'..='\u{2015}' // hyphen, non-breaking hyphen, dashes
                | '\u{2212}' // minus sign
                | '\u{201A}'..='\u{201F}' // low and double quotation marks
                | '\u{00AB}' | '\u{00BB}' // guillemets
                | '\u{2026}' // ellipsis
        )
}

/// Upper-case, drop or space out punctuation, collapse whitespace.
fn fold(s: &str) -> String {
    // A vertical tab takes the general path: `text` keeps a lone one.
    if s.is_ascii() && !s.as_bytes().contains(&0x0B) { fold_ascii(s) } else { fold_general(s) }
}

/// [`fold`] of ASCII text in one pass and one allocation: every name, street
/// and city of most files, folded for each record's matching keys.
fn fold_ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for b in s.bytes() {
        match b {
            b'\'' | b'`' | b'.' => {}
            // Separating punctuation and what `split_whitespace` splits on.
            b' ' | b'\t' | b'\n' | b'\x0C' | b'\r' => space = !out.is_empty(),
            _ if b.is_ascii_punctuation() => space = !out.is_empty(),
            _ => {
                if space {
                    out.push(' ');
                    space = false;
                }
                out.push(b.to_ascii_uppercase() as char);
            }
        }
    }
    out
}

fn fold_general(s: &str) -> String {
    let spaced: String = s
        .to_uppercase()
        .chars()
        .filter(|c| !is_joining_punct(*c))
        .map(|c| if is_separating_punct(c) { ' ' } else { c })
        .collect();
    text(&spaced).into_string()
}

/// Key for comparing names. Accents are kept: "José" and "Jose" differ,
/// because a dropped accent is a data-entry difference staff may want to fix
/// in one system. Text is not Unicode-normalised (that needs tables this crate
/// does not carry), so a precomposed "é" and "e" + combining accent differ too.
pub(crate) fn name_key(s: &str) -> String {
    fold(s)
}

/// Key for comparing other free text (city, insurance provider, ...).
pub(crate) fn text_key(s: &str) -> String {
    fold(s)
}

/// USPS Publication 28 street suffixes (appendix C1), secondary unit
/// designators (C2) and directionals, as (any spelling seen, standard
/// abbreviation), sorted by spelling for binary search. A subset: the common
/// words and their common misspellings, not every entry of the publication.
const ADDRESS_WORDS: &[(&str, &str)] = &[
    ("ALLEY", "ALY"),
    ("ALLY", "ALY"),
    ("APARTMENT", "APT"),
    ("AV", "AVE"),
    ("AVEN", "AVE"),
    ("AVENU", "AVE"),
    ("AVENUE", "AVE"),
    ("AVN", "AVE"),
    ("AVNUE", "AVE"),
    ("BASEMENT", "BSMT"),
    ("BOUL", "BLVD"),
    ("BOULEVARD", "BLVD"),
    ("BOULV", "BLVD"),
    ("BUILDING", "BLDG"),
    ("CENTER", "CTR"),
    ("CENTRE", "CTR"),
    ("CIRC", "CIR"),
    ("CIRCL", "CIR"),
    ("CIRCLE", "CIR"),
    ("COURT", "CT"),
    ("COVE", "CV"),
    ("CRCL", "CIR"),
    ("CRCLE", "CIR"),
    ("CRESCENT", "CRES"),
    ("CROSSING", "XING"),
    ("CRT", "CT"),
    ("DEPARTMENT", "DEPT"),
    ("DRIV", "DR"),
    ("DRIVE", "DR"),
    ("DRV", "DR"),
    ("EAST", "E"),
    ("EXPRESSWAY", "EXPY"),
    ("FLOOR", "FL"),
    ("FREEWAY", "FWY"),
    ("FRONT", "FRNT"),
    ("HEIGHTS", "HTS"),
    ("HIGHWAY", "HWY"),
    ("HIGHWY", "HWY"),
    ("HIWAY", "HWY"),
    ("HIWY", "HWY"),
    ("HWAY", "HWY"),
    ("JUNCTION", "JCT"),
    ("LANE", "LN"),
    ("LOWER", "LOWR"),
    ("NORTH", "N"),
    ("NORTHEAST", "NE"),
    ("NORTHWEST", "NW"),
    ("OFFICE", "OFC"),
    ("PARKWAY", "PKWY"),
    ("PARKWY", "PKWY"),
    ("PENTHOUSE", "PH"),
    ("PKWAY", "PKWY"),
    ("PKY", "PKWY"),
    ("PLACE", "PL"),
    ("PLAZA", "PLZ"),
    ("ROAD", "RD"),
    ("ROOM", "RM"),
    ("ROUTE", "RTE"),
    ("SOUTH", "S"),
    ("SOUTHEAST", "SE"),
    ("SOUTHWEST", "SW"),
    ("SPACE", "SPC"),
    ("SQR", "SQ"),
    ("SQRE", "SQ"),
    ("SQU", "SQ"),
    ("SQUARE", "SQ"),
    ("STR", "ST"),
    ("STREET", "ST"),
    ("STRT", "ST"),
    ("SUITE", "STE"),
    ("TERR", "TER"),
    ("TERRACE", "TER"),
    ("TRAIL", "TRL"),
    ("TRAILER", "TRLR"),
    ("TURNPIKE", "TPKE"),
    ("UPPER", "UPPR"),
    ("WEST", "W"),
];

/// Key for comparing street lines: "12 Main Street", "12 MAIN ST" and
/// "12 Main St." all give "12 MAIN ST". Every word is abbreviated wherever it
/// stands ("North Street" is "N ST"); both sides get the same treatment, so
/// only words that really differ make the keys differ.
pub(crate) fn address_key(s: &str) -> String {
    fold(s)
        .split(' ')
        .map(|word| {
            ADDRESS_WORDS.binary_search_by(|(long, _)| (*long).cmp(word)).map_or(word, |i| ADDRESS_WORDS[i].1)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Key for comparing ZIPs: the 5-digit ZIP, since ZIP+4 against ZIP5 is not a
/// difference. Values that do not start with 5 digits (a damaged ZIP, a
/// foreign postal code) are compared whole, as text.
pub(crate) fn zip_key(s: &str) -> String {
    let s = s.trim();
    match s.get(..5) {
        Some(five) if five.bytes().all(|b| b.is_ascii_digit()) => five.to_string(),
        _ => text_key(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn races_and_ethnicities_become_cdc_codes() {
        for (raw, want) in [
            ("2106-3", "2106-3"),
            (" 2028-9 ", "2028-9"),
            ("2029-7", "2029-7"),
            ("White", "2106-3"),
            ("BLACK OR AFRICAN AMERICAN", "2054-5"),
            ("Black/African American", "2054-5"),
            ("American Indian or Alaska Native", "1002-5"),
            ("Native Hawaiian or Other Pacific Islander", "2076-8"),
            ("Other Race", "2131-1"),
            ("Declined", ""),
            ("UNK", ""),
        ] {
            assert_eq!(race(raw).as_deref(), Ok(want), "{raw:?}");
        }
        for (raw, want) in [
            ("2135-2", "2135-2"),
            ("Hispanic or Latino", "2135-2"),
            ("Hispanic/Latino", "2135-2"),
            ("H", "2135-2"),
            ("Not Hispanic or Latino", "2186-5"),
            ("Non-Hispanic", "2186-5"),
            ("N", "2186-5"),
            ("U", ""),
            ("Patient declined", ""),
        ] {
            assert_eq!(ethnicity(raw).as_deref(), Ok(want), "{raw:?}");
        }
        // A wrong check digit (a typo), and an ethnicity's code as a race,
        // are no race.
        for bad in ["W", "2106", "2106-33", "Martian", "Hispanic", "2106-4", "2160-3", "2135-2", "2186-5"] {
            let err = race(bad).unwrap_err();
            assert!(err.starts_with("unknown race"), "{bad:?}: {err}");
        }
        for bad in ["White", "2106-3", "2135-3", "2133-7x"] {
            assert!(ethnicity(bad).unwrap_err().starts_with("unknown ethnicity"), "{bad:?}");
        }
        assert_eq!(ethnicity("2133-7").as_deref(), Ok("2133-7"), "the root of the ethnicity codes");
        assert_eq!(ethnicity("2184-0").as_deref(), Ok("2184-0"), "Dominican");
        assert_eq!(race("2500-7").as_deref(), Ok("2500-7"), "Other Pacific Islander, past the ethnicities");
    }

    #[test]
    fn cdc_check_digits_are_loincs_mod_10() {
        // LOINC's rule where the doubled odd places reach three digits:
        // 9999 -> 99 * 2 = 198 -> 1 + 9 + 8, and 9 + 9 from the even places,
        // make 36, which 4 takes to 40.
        assert_eq!(cdc_check_digit(9, 9, 9, 9), 4);
        let codes = [
            "1000-9", "1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "2131-1", "2135-2", "2186-5",
            "2500-7",
        ];
        for code in codes {
            let (digits, check) = code.split_once('-').unwrap();
            let [a, b, c, d] = *digits.as_bytes().first_chunk::<4>().unwrap();
            let digit = |x: u8| u32::from(x - b'0');
            assert_eq!(cdc_check_digit(digit(a), digit(b), digit(c), digit(d)).to_string(), check, "{code}");
        }
    }

    #[test]
    fn languages_become_iso_639_2_codes() {
        let cases = [
            ("eng", "eng"),
            (" ENG ", "eng"),
            ("en", "eng"),
            ("en-US", "eng"),
            ("zh_Hant", "zho"),
            ("fre", "fra"),
            ("GER", "deu"),
            ("yue", "yue"),
            ("und", "und"),
            ("sgn", "sgn"),
            ("English", "eng"),
            (" spanish ", "spa"),
            ("HAITIAN  CREOLE", "hat"),
            ("Farsi", "fas"),
            ("Cantonese", "yue"),
            ("Unknown", "und"),
            // ISO names shared by two languages: the one with a 639-1 code.
            ("Swahili", "swa"),
            ("Malay", "msa"),
            ("Tonga", "ton"),
        ];
        for (raw, want) in cases {
            assert_eq!(language(raw).as_deref(), Ok(want), "{raw:?}");
        }
        // ISO names two languages Konkani, neither with a 639-1 code.
        for bad in ["Konkani", "1", "xx", "zzz", "Martian", "", "e1", "en US"] {
            let err = language(bad).unwrap_err();
            assert!(err.starts_with("unknown language"), "{bad:?}: {err}");
        }
    }

    proptest::proptest! {
        /// The one-pass fold of ASCII text says what the general path says.
        #[test]
        fn ascii_fold_agrees(raw in "[a-zA-Z0-9 '`.,/&#\\-\t\r\n\x0C]{0,24}") {
            proptest::prop_assert_eq!(fold_ascii(&raw), fold_general(&raw));
        }

        /// The copy-free path for plain phone numbers says what the general
        /// path says.
        #[test]
        fn plain_phone_fast_path_agrees(raw in "[0-9 ()./-]{0,18}", country in countries()) {
            proptest::prop_assert_eq!(phone_e164(&raw, country), phone_e164_general(&raw, country));
        }

        #[test]
        fn shaped_phone_fast_path_agrees(
            raw in "1?[ -]?[(]?[0-9]{3}[)]?[ ./-]?[0-9]{3}[ ./-]{0,2}[0-9]{4}",
            country in countries(),
        ) {
            proptest::prop_assert_eq!(phone_e164(&raw, country), phone_e164_general(&raw, country));
        }

        /// Bare digits, as HL7 sends them, take their own scan.
        #[test]
        fn bare_digit_phone_fast_path_agrees(raw in "1?[2-9][0-9]{9}|[0-9]{0,13}", country in countries()) {
            proptest::prop_assert_eq!(phone_e164(&raw, country), phone_e164_general(&raw, country));
        }

        #[test]
        fn any_phone_fast_path_agrees(raw in "[0-9 ()./+#xX\\-a\t\u{a0}\u{2003}]{0,16}", country in countries()) {
            proptest::prop_assert_eq!(phone_e164(&raw, country), phone_e164_general(&raw, country));
        }

        #[test]
        fn us_state_fast_path_agrees(raw in "[mMnNdDxX][aAyYcCxX][., ]?|[a-zA-Z., \t\u{a0}\u{2003}éß]{0,3}") {
            proptest::prop_assert_eq!(us_state(&raw), us_state_general(&raw));
        }

        #[test]
        fn us_zip_fast_path_agrees(raw in "[0-9 \t-]{0,11}|[0-9]{5}-?[0-9a\u{a0}\u{ff10}-]{0,5}") {
            proptest::prop_assert_eq!(us_zip(&raw), us_zip_general(&raw));
        }

        #[test]
        fn numeric_dates_agree_with_chrono(
            raw in "[0-9]{1,5}[-/.][0-9]{1,3}[-/.][0-9]{1,5}|[0-9]{6,9}",
            format in proptest::sample::select(vec!["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d", "%d-%m-%Y"]),
        ) {
            if let Some(fast) = numeric_date(&raw, format) {
                let general = NaiveDate::parse_from_str(&raw, format).ok().filter(|d| same_shape(&raw, *d, format));
                proptest::prop_assert_eq!(Some(fast), general);
            }
        }

        #[test]
        fn tidy_text_agrees(raw in "[a-z \t]{0,12}") {
            let expected = raw.split_whitespace().collect::<Vec<_>>().join(" ");
            proptest::prop_assert_eq!(text(&raw), expected);
        }
    }

    /// Default countries, as schemas spell them and as they should not.
    fn countries() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec!["US", "us", "Ca", " US ", "GB", "", "USA"])
    }

    /// Letters (with a few non-ASCII ones, and "İ", whose lower case is
    /// longer), digits, the punctuation of addresses, ASCII whitespace
    /// including the vertical tab, and Unicode spaces.
    fn email_chars() -> impl proptest::strategy::Strategy<Value = char> {
        proptest::sample::select(vec![
            'a', 'Z', 'k', '0', '.', '.', '.', '@', '@', '+', '-', '_', ' ', '\t', '\x0B', '\n', 'ë', 'ü',
            'É', 'İ', '\u{212A}', '\u{85}', '\u{a0}', '\u{1680}', '\u{2003}', '\u{202F}', '\u{3000}',
        ])
    }

    /// Addresses that are mostly valid, with now and then one of the faults
    /// the general path names, so that both paths get exercised often.
    fn email_shaped() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let rare = |common: &'static str, odd: Vec<&'static str>| prop_oneof![6 => Just(common), 1 => proptest::sample::select(odd)];
        let part = || proptest::collection::vec(email_chars(), 0..6).prop_map(String::from_iter);
        let (local, label) = ("[a-zA-Z0-9+_ëÉ-]{1,5}", "[a-zA-Z0-9-]{1,5}");
        (
            rare("", vec![" ", "\u{a0}", "\x0B"]),
            prop_oneof![4 => local.prop_map(String::from), 1 => part()],
            rare("@", vec!["", "@@"]),
            rare("", vec![".", "\u{2003}", "@"]),
            prop_oneof![4 => label.prop_map(String::from), 1 => part()],
            rare(".", vec!["..", "", " "]),
            label,
            rare("", vec![".", ".Com", "É"]),
            rare("", vec![" ", "\u{3000}", "\n"]),
        )
            .prop_map(|(pre, local, at, lead, label, dot, tld, tail, post)| {
                format!("{pre}{local}{at}{lead}{label}{dot}{tld}{tail}{post}")
            })
    }

    #[test]
    fn email_bytes_cover_every_space() {
        // `plain_email` leaves anything that `char::is_whitespace` calls a
        // space to the general path by the space's first byte alone.
        for c in (0..=char::MAX as u32).filter_map(char::from_u32) {
            let mut buf = [0; 4];
            let first = c.encode_utf8(&mut buf).as_bytes()[0];
            if c.is_whitespace() {
                assert!(EMAIL_BYTES[usize::from(first)] == EmailByte::Space, "{c:?}");
            }
        }
    }

    #[test]
    fn us_state_code_bits_agree_with_the_table() {
        for a in 0..=u8::MAX {
            for b in 0..=u8::MAX {
                let code = String::from_iter([a, b].map(|c| char::from(c.to_ascii_uppercase())));
                let listed = a.is_ascii_alphabetic()
                    && b.is_ascii_alphabetic()
                    && US_STATE_CODES.contains(&code.as_str());
                assert_eq!(us_state_code(a, b), listed, "{a} {b}");
            }
        }
    }

    proptest::proptest! {
        // Each fault of an address is one draw in several, so more draws.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// The one-pass email check says what the general path says, errors
        /// included: over shaped addresses, so that many are valid, and over
        /// any mix of the characters that matter.
        #[test]
        fn shaped_email_fast_path_agrees(raw in email_shaped()) {
            proptest::prop_assert_eq!(email(&raw), email_general(&raw));
        }

        #[test]
        fn any_email_fast_path_agrees(raw in proptest::collection::vec(email_chars(), 0..16)) {
            let raw = String::from_iter(raw);
            proptest::prop_assert_eq!(email(&raw), email_general(&raw));
        }
    }

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn today() -> NaiveDate {
        ymd(2024, 6, 15)
    }

    fn fmts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn us() -> Vec<String> {
        fmts(&["%m/%d/%Y"])
    }

    fn no_extra() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn extra(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn phone(raw: &str) -> Result<CompactString, String> {
        phone_e164(raw, "US")
    }

    fn err<T: std::fmt::Debug>(r: Result<T, String>) -> String {
        r.expect_err("expected an error")
    }

    // ---- text ----

    #[test]
    fn text_trims_and_collapses_whitespace() {
        assert_eq!(text("  Mary   Ann  "), "Mary Ann");
        assert_eq!(text("Mary\tAnn\r\nSmith"), "Mary Ann Smith");
        assert_eq!(text("\u{00A0}Mary\u{00A0}\u{00A0}Ann\u{00A0}"), "Mary Ann");
        assert_eq!(text("a\u{202F}b\u{3000}c"), "a b c");
    }

    #[test]
    fn text_of_blank_is_empty() {
        assert_eq!(text(""), "");
        assert_eq!(text(" \t\r\n\u{00A0} "), "");
    }

    #[test]
    fn text_keeps_case_and_punctuation() {
        assert_eq!(text("O'Brien-Smith, Jr."), "O'Brien-Smith, Jr.");
    }

    // ---- date ----

    #[test]
    fn date_parses_first_matching_format() {
        let f = fmts(&["%m/%d/%Y", "%Y-%m-%d", "%Y%m%d"]);
        assert_eq!(date("02/03/1980", &f, today()), Ok(ymd(1980, 2, 3)));
        assert_eq!(date("1980-02-03", &f, today()), Ok(ymd(1980, 2, 3)));
        assert_eq!(date("19800203", &f, today()), Ok(ymd(1980, 2, 3)));
    }

    #[test]
    fn date_order_of_formats_decides_ambiguity() {
        let f = fmts(&["%d/%m/%Y", "%m/%d/%Y"]);
        assert_eq!(date("02/03/1980", &f, today()), Ok(ymd(1980, 3, 2)));
        // Only the second format can read a 13th month-or-day.
        assert_eq!(date("02/13/1980", &f, today()), Ok(ymd(1980, 2, 13)));
    }

    #[test]
    fn date_trims_whitespace_and_nbsp() {
        assert_eq!(date("  02/03/1980\t", &us(), today()), Ok(ymd(1980, 2, 3)));
        assert_eq!(date("\u{00A0}02/03/1980\u{00A0}", &us(), today()), Ok(ymd(1980, 2, 3)));
    }

    #[test]
    fn date_accepts_missing_zero_padding() {
        assert_eq!(date("2/3/1980", &us(), today()), Ok(ymd(1980, 2, 3)));
        assert_eq!(date("12/3/1980", &us(), today()), Ok(ymd(1980, 12, 3)));
    }

    #[test]
    fn date_feb_29_leap_and_non_leap() {
        assert_eq!(date("02/29/1980", &us(), today()), Ok(ymd(1980, 2, 29)));
        assert_eq!(date("02/29/2000", &us(), today()), Ok(ymd(2000, 2, 29)));
        assert_eq!(
            err(date("02/29/1981", &us(), today())),
            r#"not a date in format MM/DD/YYYY: "02/29/1981""#
        );
        // 1900 is divisible by 100 but not 400: not a leap year.
        assert!(date("1900-02-29", &fmts(&["%Y-%m-%d"]), today()).is_err());
    }

    #[test]
    fn date_rejects_impossible_dates() {
        assert_eq!(
            err(date("02/30/1980", &us(), today())),
            r#"not a date in format MM/DD/YYYY: "02/30/1980""#
        );
        assert!(date("13/01/1980", &us(), today()).is_err());
        assert!(date("04/31/1980", &us(), today()).is_err());
        assert!(date("00/10/1980", &us(), today()).is_err());
    }

    #[test]
    fn date_rejects_future_but_accepts_today() {
        assert_eq!(date("06/15/2024", &us(), today()), Ok(today()));
        assert_eq!(err(date("06/16/2024", &us(), today())), r#"date is in the future: "06/16/2024""#);
    }

    #[test]
    fn date_rejects_before_1850() {
        assert_eq!(date("01/01/1850", &us(), today()), Ok(ymd(1850, 1, 1)));
        assert_eq!(err(date("12/31/1849", &us(), today())), r#"date is before 1850: "12/31/1849""#);
    }

    #[test]
    fn date_rejects_two_digit_year_for_four_digit_format() {
        assert_eq!(err(date("02/03/80", &us(), today())), r#"not a date in format MM/DD/YYYY: "02/03/80""#);
    }

    #[test]
    fn date_requires_exact_width_without_separators() {
        let f = fmts(&["%Y%m%d"]);
        assert!(date("1980123", &f, today()).is_err());
        assert!(date("198012031", &f, today()).is_err());
    }

    #[test]
    fn date_rejects_partial_matches_and_garbage() {
        assert!(date("02/03/1980 extra", &us(), today()).is_err());
        assert!(date("02/03/1980 00:00", &us(), today()).is_err());
        assert!(date("1980-02-03", &us(), today()).is_err());
        assert!(date("02/ 3/1980", &us(), today()).is_err());
        assert!(date("", &us(), today()).is_err());
        assert!(date("yesterday", &us(), today()).is_err());
    }

    #[test]
    fn date_with_month_names() {
        let f = fmts(&["%d %b %Y", "%B %d, %Y"]);
        assert_eq!(date("03 Feb 1980", &f, today()), Ok(ymd(1980, 2, 3)));
        assert_eq!(date("3 FEB 1980", &f, today()), Ok(ymd(1980, 2, 3)));
        assert_eq!(date("February 3, 1980", &f, today()), Ok(ymd(1980, 2, 3)));
        assert_eq!(date("february  03,  1980", &f, today()), Ok(ymd(1980, 2, 3)));
        assert!(date("03 Fbr 1980", &f, today()).is_err());
    }

    #[test]
    fn date_with_time_part_in_format() {
        let f = fmts(&["%m/%d/%Y %H:%M"]);
        assert_eq!(date("02/03/1980 00:00", &f, today()), Ok(ymd(1980, 2, 3)));
    }

    #[test]
    fn date_error_names_all_formats_in_human_form() {
        let f = fmts(&["%m/%d/%Y", "%Y-%m-%d", "%Y%m%d"]);
        assert_eq!(
            err(date("3rd Feb", &f, today())),
            r#"not a date in format MM/DD/YYYY, YYYY-MM-DD or YYYYMMDD: "3rd Feb""#
        );
        let f = fmts(&["%m/%d/%Y", "%Y-%m-%d"]);
        assert_eq!(err(date("x", &f, today())), r#"not a date in format MM/DD/YYYY or YYYY-MM-DD: "x""#);
    }

    #[test]
    fn date_without_formats_is_an_error() {
        assert_eq!(err(date("02/03/1980", &[], today())), r#"no date format configured for "02/03/1980""#);
    }

    #[test]
    fn human_format_conversions() {
        assert_eq!(human_format("%m/%d/%Y"), "MM/DD/YYYY");
        assert_eq!(human_format("%Y-%m-%d"), "YYYY-MM-DD");
        assert_eq!(human_format("%Y%m%d"), "YYYYMMDD");
        assert_eq!(human_format("%d %b %Y"), "DD Mon YYYY");
        assert_eq!(human_format("%B %e, %Y"), "Month D, YYYY");
        assert_eq!(human_format("%-m/%-d/%y"), "M/D/YY");
        assert_eq!(human_format("%F"), "YYYY-MM-DD");
        assert_eq!(human_format("%m/%d/%Y %H:%M:%S"), "MM/DD/YYYY hh:mm:ss");
        assert_eq!(human_format("100%% %Q"), "100% %Q");
        assert_eq!(human_format("trailing %"), "trailing %");
    }

    // ---- sex ----

    #[test]
    fn sex_builtin_codes() {
        for (raw, want) in [
            ("M", Sex::M),
            ("male", Sex::M),
            ("Man", Sex::M),
            ("f", Sex::F),
            ("FEMALE", Sex::F),
            ("woman", Sex::F),
            ("O", Sex::O),
            ("other", Sex::O),
            ("x", Sex::O),
            ("Nonbinary", Sex::O),
            ("non-binary", Sex::O),
            ("Non  Binary", Sex::O),
            ("U", Sex::U),
            ("unk", Sex::U),
            ("Unknown", Sex::U),
            ("N", Sex::U),
        ] {
            assert_eq!(sex(raw, &no_extra()), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn sex_trims_whitespace_and_nbsp() {
        assert_eq!(sex("  F \t", &no_extra()), Ok(Sex::F));
        assert_eq!(sex("\u{00A0}male\u{00A0}", &no_extra()), Ok(Sex::M));
    }

    #[test]
    fn sex_does_not_map_digits_by_default() {
        assert_eq!(err(sex("1", &no_extra())), r#"unknown sex code "1""#);
        assert_eq!(err(sex(" girl ", &no_extra())), r#"unknown sex code "girl""#);
        assert!(sex("", &no_extra()).is_err());
    }

    #[test]
    fn sex_extra_codes_are_checked_first_and_case_insensitively() {
        let map = extra(&[("1", "M"), ("2", "F"), ("9", "u"), ("hombre", "M"), ("F", "U")]);
        assert_eq!(sex("1", &map), Ok(Sex::M));
        assert_eq!(sex(" 2 ", &map), Ok(Sex::F));
        assert_eq!(sex("9", &map), Ok(Sex::U));
        assert_eq!(sex("HOMBRE", &map), Ok(Sex::M));
        // The schema wins over a built-in code.
        assert_eq!(sex("f", &map), Ok(Sex::U));
        // Built-ins still apply to codes the schema does not mention.
        assert_eq!(sex("male", &map), Ok(Sex::M));
        assert!(sex("3", &map).is_err());
    }

    #[test]
    fn sex_extra_value_must_be_a_sex() {
        let map = extra(&[("1", "Female"), ("2", "Z")]);
        assert_eq!(sex("1", &map), Ok(Sex::F));
        assert_eq!(err(sex("2", &map)), r#"schema maps sex code "2" to "Z", which is not M, F, O or U"#);
    }

    #[test]
    fn sex_code_table_is_sorted() {
        assert!(SEX_CODES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    // ---- phone ----

    #[test]
    fn phone_us_formats() {
        for raw in [
            "6175550142",
            "617-555-0142",
            "(617) 555-0142",
            "(617)555-0142",
            "617.555.0142",
            "617 555 0142",
            "617/555-0142",
            "1-617-555-0142",
            "1 (617) 555-0142",
            "16175550142",
            "+1 617 555 0142",
            "+16175550142",
            "+1 (617) 555-0142",
            "  617-555-0142\u{00A0}",
        ] {
            assert_eq!(phone(raw), Ok("+16175550142".into()), "{raw:?}");
        }
    }

    #[test]
    fn phone_canada_is_nanp_and_country_is_case_insensitive() {
        assert_eq!(phone_e164("416-555-0199", "CA"), Ok("+14165550199".into()));
        assert_eq!(phone_e164("416-555-0199", " us "), Ok("+14165550199".into()));
    }

    #[test]
    fn phone_fictional_555_01xx_is_accepted() {
        assert_eq!(phone("212-555-0100"), Ok("+12125550100".into()));
        assert_eq!(phone("212-555-0199"), Ok("+12125550199".into()));
    }

    #[test]
    fn phone_extension_is_dropped() {
        for raw in [
            "617-555-0142 x123",
            "617-555-0142x123",
            "617-555-0142 X 123",
            "617-555-0142 ext 123",
            "617-555-0142 ext. 123",
            "617-555-0142 Ext.123",
            "617-555-0142 EXT: 123",
            "617-555-0142 extension 123",
            "617-555-0142 #123",
            "617-555-0142#123",
            "+1 617 555 0142 x9",
        ] {
            assert_eq!(phone(raw), Ok("+16175550142".into()), "{raw:?}");
        }
    }

    #[test]
    fn phone_bad_extension() {
        assert_eq!(err(phone("617-555-0142 x")), r#"unreadable extension in phone number "617-555-0142 x""#);
        assert!(phone("617-555-0142 ext 12a").is_err());
        assert!(phone("617-555-0142 x 12-3").is_err());
    }

    #[test]
    fn phone_letters_are_rejected() {
        assert_eq!(err(phone("1-800-FLOWERS")), r#"letters in phone number "1-800-FLOWERS""#);
        assert_eq!(err(phone("617-555-0142 (cell)")), r#"letters in phone number "617-555-0142 (cell)""#);
        assert!(phone("call mom").is_err());
        assert!(phone("617-555-0142 extn 12").is_err());
    }

    #[test]
    fn phone_other_characters_are_rejected() {
        assert_eq!(err(phone("617*555*0142")), r#"unexpected character '*' in phone number "617*555*0142""#);
        assert!(phone("617-555-0142+").is_err());
        assert!(phone("++16175550142").is_err());
    }

    #[test]
    fn phone_wrong_digit_count() {
        assert_eq!(err(phone("617-555-014")), r#"expected 10 digits in phone number "617-555-014", found 9"#);
        assert!(phone("617-555-01422").is_err());
        assert!(phone("2-617-555-0142").is_err());
        assert!(phone("+1 617 555 014").is_err());
        assert_eq!(err(phone("--")), r#"no digits in phone number "--""#);
        assert!(phone("").is_err());
    }

    #[test]
    fn phone_area_code_and_exchange_rules() {
        assert_eq!(err(phone("911-555-0142")), r#"invalid area code 911 in phone number "911-555-0142""#);
        assert!(phone("411-555-0142").is_err());
        assert!(phone("017-555-0142").is_err());
        // Ten digits starting with 1: the 1 is not taken as a country code.
        assert!(phone("123-456-7890").is_err());
        assert_eq!(err(phone("617-055-0142")), r#"invalid exchange 055 in phone number "617-055-0142""#);
        assert!(phone("617-155-0142").is_err());
        // N11 is only banned as an area code; 2N1 and N21 are fine.
        assert!(phone("211-555-0142").is_err());
        assert_eq!(phone("212-555-0142"), Ok("+12125550142".into()));
        assert_eq!(phone("221-555-0142"), Ok("+12215550142".into()));
    }

    #[test]
    fn phone_international_with_plus() {
        assert_eq!(phone("+44 20 7946 0958"), Ok("+442079460958".into()));
        assert_eq!(phone("+44 (0)20-7946-0958"), Ok("+442079460958".into()));
        assert_eq!(phone("+33 1 23 45 67 89"), Ok("+33123456789".into()));
        // Eight to fifteen digits in all.
        assert_eq!(phone("+49 1234 56"), Ok("+49123456".into()));
        assert!(phone("+49 123 45").is_err());
        assert_eq!(phone("+49 1234 5678 90123"), Ok("+491234567890123".into()));
        assert_eq!(
            err(phone("+44 1234 5678 901234")),
            r#"expected 8 to 15 digits in international phone number "+44 1234 5678 901234", found 16"#
        );
        assert!(phone("+0 123 456 789").is_err());
    }

    #[test]
    fn phone_international_with_011() {
        assert_eq!(phone("011 44 20 7946 0958"), Ok("+442079460958".into()));
        assert_eq!(phone("011-44-20-7946-0958"), Ok("+442079460958".into()));
        assert_eq!(phone("011 1 617 555 0142"), Ok("+16175550142".into()));
    }

    #[test]
    fn phone_plus_works_whatever_the_default_country() {
        assert_eq!(phone_e164("+44 20 7946 0958", "GB"), Ok("+442079460958".into()));
        assert_eq!(phone_e164("+1 617 555 0142", "FR"), Ok("+16175550142".into()));
    }

    #[test]
    fn phone_national_number_needs_a_supported_country() {
        assert!(err(phone_e164("020 7946 0958", "GB")).contains(r#"for country "GB""#));
        assert!(phone_e164("617-555-0142", "").is_err());
        // "011" is only the exit code from NANP countries.
        assert!(phone_e164("011 44 20 7946 0958", "GB").is_err());
    }

    // ---- us_state ----

    #[test]
    fn us_state_codes_in_any_case() {
        assert_eq!(us_state("NY"), Ok("NY".into()));
        assert_eq!(us_state("ny"), Ok("NY".into()));
        assert_eq!(us_state(" Ma "), Ok("MA".into()));
        assert_eq!(us_state("N.Y."), Ok("NY".into()));
        assert_eq!(us_state("d.c."), Ok("DC".into()));
        for code in ["PR", "VI", "GU", "AS", "MP", "AA", "AE", "AP", "DC", "WY"] {
            assert_eq!(us_state(code), Ok(code.into()));
        }
    }

    #[test]
    fn us_state_full_names() {
        assert_eq!(us_state("New York"), Ok("NY".into()));
        assert_eq!(us_state("new york"), Ok("NY".into()));
        assert_eq!(us_state("  NEW \t YORK\u{00A0}"), Ok("NY".into()));
        assert_eq!(us_state("District of Columbia"), Ok("DC".into()));
        assert_eq!(us_state("Washington"), Ok("WA".into()));
        assert_eq!(us_state("Washington D.C."), Ok("DC".into()));
        assert_eq!(us_state("Washington, DC"), Ok("DC".into()));
        assert_eq!(us_state("west virginia"), Ok("WV".into()));
        assert_eq!(us_state("Puerto Rico"), Ok("PR".into()));
        assert_eq!(us_state("U.S. Virgin Islands"), Ok("VI".into()));
        assert_eq!(us_state("Northern Mariana Islands"), Ok("MP".into()));
        assert_eq!(us_state("Armed Forces Pacific"), Ok("AP".into()));
    }

    #[test]
    fn us_state_unknown() {
        assert_eq!(err(us_state("Nwe York")), r#"unknown US state "Nwe York""#);
        assert!(us_state("XX").is_err());
        assert!(us_state("Ontario").is_err());
        assert!(us_state("N").is_err());
        assert!(us_state("").is_err());
    }

    #[test]
    fn us_state_tables_are_sorted_and_consistent() {
        assert_eq!(US_STATE_CODES.len(), 50 + 1 + 5 + 3);
        assert!(US_STATE_CODES.windows(2).all(|w| w[0] < w[1]));
        assert!(US_STATE_NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        for (name, code) in US_STATE_NAMES {
            assert!(US_STATE_CODES.binary_search(code).is_ok(), "{name} -> {code}");
            assert_eq!(us_state(name).as_deref(), Ok(*code));
        }
        for code in US_STATE_CODES {
            assert!(US_STATE_NAMES.iter().any(|(_, c)| c == code), "no name for {code}");
        }
    }

    // ---- us_zip ----

    #[test]
    fn us_zip_valid_forms() {
        assert_eq!(us_zip("02134"), Ok("02134".into()));
        assert_eq!(us_zip(" 02134 "), Ok("02134".into()));
        assert_eq!(us_zip("02134-1234"), Ok("02134-1234".into()));
        assert_eq!(us_zip("021341234"), Ok("02134-1234".into()));
        assert_eq!(us_zip("\u{00A0}02134-1234\t"), Ok("02134-1234".into()));
    }

    #[test]
    fn us_zip_four_digits_mentions_lost_zero() {
        let e = err(us_zip("2134"));
        assert_eq!(
            e,
            r#"zip code "2134" has 4 digits instead of 5: a leading zero may have been lost (e.g. by a spreadsheet)"#
        );
        assert!(err(us_zip("2134-1234")).contains("leading zero"));
        assert!(err(us_zip("21341234")).contains("leading zero"));
    }

    #[test]
    fn us_zip_invalid() {
        assert_eq!(err(us_zip("ABCDE")), r#"not a US zip code (12345 or 12345-6789): "ABCDE""#);
        for raw in [
            "",
            "123",
            "123456",
            "1234567890",
            "02134-",
            "02134-12",
            "02134-12345",
            "02134 1234",
            "0213A",
            "02134-ABCD",
            "-1234",
            "０２１３４",
        ] {
            assert!(us_zip(raw).is_err(), "{raw:?}");
        }
    }

    // ---- written in place ----

    #[test]
    fn written_in_place_as_returned() {
        // Fast paths and general ones, valid and not, as HL7 mapping meets them.
        let phones =
            ["6175550142", "(617) 555-0142", "1-617-555-0142", "+44 20 7946 0958", "617555", "0175550142"];
        let states = ["MA", "ma", "N.Y.", "new york", "ZZ", "M", " ma "];
        let zips = ["02134", "02134-1234", "021341234", "2134", "ABCDE", " 02134 "];
        let emails = [
            "jane@example.com",
            "Jane@Example.COM",
            " jane@example.com ",
            "jane.example.com",
            "zoë@example.com",
        ];
        type Pair = (fn(&str) -> Result<CompactString, String>, fn(&str, &mut Option<CompactString>));
        let us_phone: fn(&str) -> Result<CompactString, String> = |raw| phone_e164(raw, "US");
        let cases: [(&[&str], Pair); 4] = [
            (&phones, (us_phone, us_phone_into)),
            (&states, (us_state, us_state_into)),
            (&zips, (us_zip, us_zip_into)),
            (&emails, (email, email_into)),
        ];
        let mut valid = 0;
        for (inputs, (returned, written)) in cases {
            for &raw in inputs {
                let mut slot = None;
                written(raw, &mut slot);
                assert_eq!(slot, returned(raw).ok(), "{raw:?}");
                valid += usize::from(slot.is_some());
            }
        }
        assert!(valid >= 10, "most inputs are valid, {valid} were");
    }

    // ---- email ----

    #[test]
    fn email_valid_lowercases_domain_only() {
        assert_eq!(email("  Jane.Doe@Example.COM "), Ok("Jane.Doe@example.com".into()));
        assert_eq!(email("a+tag@mail.example.org"), Ok("a+tag@mail.example.org".into()));
    }

    #[test]
    fn email_invalid() {
        assert_eq!(err(email("jane.example.com")), r#"no @ in email "jane.example.com""#);
        assert_eq!(err(email("a@b@c.com")), r#"more than one @ in email "a@b@c.com""#);
        assert_eq!(err(email("@example.com")), r#"nothing before the @ in email "@example.com""#);
        assert_eq!(err(email("jane@")), r#"nothing after the @ in email "jane@""#);
        assert_eq!(err(email("jane@localhost")), r#"domain has no dot in email "jane@localhost""#);
        assert_eq!(
            err(email("jane@.example.com")),
            r#"domain starts or ends with a dot in email "jane@.example.com""#
        );
        assert!(email("jane@example.com.").is_err());
        assert!(email("jane@example..com").is_err());
        assert_eq!(err(email("jane doe@example.com")), r#"space in email "jane doe@example.com""#);
        assert!(email("jane@exa\u{00A0}mple.com").is_err());
        assert_eq!(err(email("   ")), "empty email");
    }

    // ---- keys ----

    #[test]
    fn name_key_cosmetic_differences_compare_equal() {
        assert_eq!(name_key("O'Brien"), "OBRIEN");
        assert_eq!(name_key("O'Brien"), name_key("OBRIEN"));
        assert_eq!(name_key("O\u{2019}Brien"), name_key("obrien"));
        assert_eq!(name_key("Smith-Jones"), "SMITH JONES");
        assert_eq!(name_key("Smith-Jones"), name_key("smith  jones"));
        assert_eq!(name_key("Smith\u{2013}Jones"), name_key("SMITH JONES"));
        assert_eq!(name_key("  Mary\u{00A0}Ann "), name_key("MARY ANN"));
        assert_eq!(name_key("Smith, Jr."), name_key("SMITH JR"));
        assert_eq!(name_key("J.R."), "JR");
        assert_eq!(name_key("josé"), name_key("JOSÉ"));
    }

    #[test]
    fn name_key_real_differences_compare_unequal() {
        assert_ne!(name_key("O'Brien"), name_key("O Brien"));
        assert_ne!(name_key("José"), name_key("Jose"));
        assert_ne!(name_key("Jon"), name_key("John"));
        assert_ne!(name_key("Smith-Jones"), name_key("SmithJones"));
        // Decomposed accents are kept rather than stripped as punctuation.
        assert_eq!(name_key("Jose\u{0301}"), "JOSE\u{0301}");
    }

    #[test]
    fn text_key_cosmetic_and_real_differences() {
        assert_eq!(text_key("St. Louis"), text_key("ST LOUIS"));
        assert_eq!(text_key("Winston-Salem"), text_key("winston salem"));
        assert_eq!(text_key(" Blue Cross,  Blue Shield "), "BLUE CROSS BLUE SHIELD");
        assert_eq!(text_key("Aetna"), text_key("AETNA\u{00A0}"));
        assert_ne!(text_key("Aetna"), text_key("Cigna"));
        assert_ne!(text_key("Springfield"), text_key("Springfeld"));
    }

    #[test]
    fn address_key_cosmetic_differences_compare_equal() {
        let k = address_key("12 Main Street");
        assert_eq!(k, "12 MAIN ST");
        assert_eq!(address_key("12 MAIN ST"), k);
        assert_eq!(address_key("12 Main St."), k);
        assert_eq!(address_key("12  main  st"), k);
        assert_eq!(address_key("100 North Elm Avenue, Apartment #4B"), address_key("100 N. Elm Ave Apt 4B"));
        assert_eq!(address_key("5 Sunset Boulevard Suite 200"), "5 SUNSET BLVD STE 200");
        assert_eq!(address_key("9 Oak Court Building 3 Floor 2 Room 7"), "9 OAK CT BLDG 3 FL 2 RM 7");
        assert_eq!(address_key("1 Elm Lane"), address_key("1 elm ln"));
        assert_eq!(address_key("1 Elm Road"), address_key("1 Elm Rd."));
        assert_eq!(address_key("1 Elm Drive"), address_key("1 Elm Dr"));
        assert_eq!(address_key("1 Elm Place"), address_key("1 Elm Pl"));
        assert_eq!(address_key("1 Elm Terrace"), address_key("1 Elm Ter"));
        assert_eq!(address_key("1 Elm Circle"), address_key("1 Elm Cir"));
        assert_eq!(address_key("1 State Highway 9"), address_key("1 State Hwy 9"));
        assert_eq!(address_key("1 Elm Parkway"), address_key("1 Elm Pkwy"));
        assert_eq!(address_key("1 Town Square"), address_key("1 Town Sq"));
        assert_eq!(address_key("1 Elm Trail"), address_key("1 Elm Trl"));
        assert_eq!(address_key("1 Elm Way"), "1 ELM WAY");
        assert_eq!(address_key("1 Elm Unit 5"), "1 ELM UNIT 5");
        assert_eq!(address_key("1 Northeast 2nd Av"), "1 NE 2ND AVE");
        assert_eq!(address_key("1 Southwest Elm"), address_key("1 SW Elm"));
        assert_eq!(address_key("1 East West Road"), "1 E W RD");
    }

    #[test]
    fn address_key_real_differences_compare_unequal() {
        assert_ne!(address_key("12 Main Street"), address_key("21 Main Street"));
        assert_ne!(address_key("12 Main Street"), address_key("12 Main Avenue"));
        assert_ne!(address_key("12 North Main St"), address_key("12 South Main St"));
        assert_ne!(address_key("12 Main St Apt 4"), address_key("12 Main St Apt 5"));
    }

    #[test]
    fn address_key_is_idempotent_and_table_is_sound() {
        assert!(ADDRESS_WORDS.windows(2).all(|w| w[0].0 < w[1].0));
        for (long, short) in ADDRESS_WORDS {
            // A standard abbreviation must not itself be rewritten again.
            assert!(
                ADDRESS_WORDS.binary_search_by(|(l, _)| l.cmp(short)).is_err(),
                "{long} -> {short} is rewritten again"
            );
        }
        let k = address_key("100 North Elm Avenue, Apartment #4B");
        assert_eq!(address_key(&k), k);
    }

    #[test]
    fn zip_key_ignores_plus4() {
        assert_eq!(zip_key("02134"), "02134");
        assert_eq!(zip_key("02134-1234"), "02134");
        assert_eq!(zip_key(" 021341234 "), "02134");
        assert_eq!(zip_key("02134-1234"), zip_key("02134"));
        assert_ne!(zip_key("02134"), zip_key("02135"));
        // Not a ZIP: compared whole, so a damaged ZIP still differs from the real one.
        assert_eq!(zip_key("2134"), "2134");
        assert_ne!(zip_key("2134"), zip_key("02134"));
        assert_eq!(zip_key("k1a 0b6"), "K1A 0B6");
        assert_eq!(zip_key(""), "");
    }
}
