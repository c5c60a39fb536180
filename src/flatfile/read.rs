//! Reading one file's bytes through a schema.
//!
//! Every data row ends in exactly one of two places: a [`ParsedRecord`] or a
//! rejected [`Reject`], so `read == accepted + rejected` always holds.
//! Warnings (a bad optional value, loaded as empty) ride alongside.

use crate::FastMap;
use compact_str::CompactString;
use std::borrow::Cow;

use chrono::NaiveDate;

use super::normalize;
use super::schema::{Column, EncodingName, Layout, Place, Schema};
use crate::model::{Field, FieldType, Patient, Reject, Severity, Side};

/// One accepted record and the line it starts on.
#[derive(Debug, Clone)]
pub struct ParsedRecord {
    pub line: u64,
    pub patient: Patient,
}

/// What a file held.
#[derive(Debug, Default, Clone)]
pub struct ParsedFile {
    /// Data rows seen (header and blank lines not counted).
    pub read: u64,
    pub records: Vec<ParsedRecord>,
    /// Rejected rows and warnings, in file order.
    pub rejects: Vec<Reject>,
    /// A problem with the whole file (wrong layout): nothing in it is usable.
    pub fatal: Option<String>,
}

impl ParsedFile {
    pub fn accepted(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn rejected(&self) -> u64 {
        self.count(Severity::Rejected)
    }

    pub fn warnings(&self) -> u64 {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> u64 {
        self.rejects.iter().filter(|r| r.severity == severity).count() as u64
    }

    fn fail(reason: String) -> ParsedFile {
        ParsedFile { fatal: Some(reason), ..ParsedFile::default() }
    }
}

/// Parse a whole file. `today` bounds birth dates.
pub fn parse_bytes(bytes: &[u8], schema: &Schema, side: Side, today: NaiveDate) -> ParsedFile {
    // Windows-1252 decodes every byte, so convert up front and read UTF-8
    // after; a UTF-8 file is read as bytes and checked field by field, so one
    // stray byte rejects one record, not the file.
    // A DOS end-of-file byte (Ctrl-Z) after the last line is no record.
    let bytes = bytes.strip_suffix(b"\x1a").unwrap_or(bytes);
    let decoded: Cow<[u8]> = match (encoding_rs::Encoding::for_bom(bytes), schema.encoding) {
        // A byte-order mark says what the file is, whatever the schema says
        // (as WHATWG's decode does): Excel's "CSV UTF-8" of a Windows-1252
        // roster, or its "Unicode text" (UTF-16). It is never part of a
        // header name or an ID.
        (Some((enc, bom)), _) if enc == encoding_rs::UTF_8 => Cow::Borrowed(&bytes[bom..]),
        (Some((enc, bom)), _) => {
            let (text, _) = enc.decode_without_bom_handling(&bytes[bom..]);
            Cow::Owned(text.into_owned().into_bytes())
        }
        (None, EncodingName::Utf8) => Cow::Borrowed(bytes),
        (None, EncodingName::Windows1252) => {
            let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes);
            match text {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            }
        }
    };
    // One record per line, near enough: sized once, the records and the ID
    // index are not regrown (and copied) a dozen times on a large file.
    let lines = memchr::memchr_iter(b'\n', &decoded).count() + 1;
    // Values are looked at for control characters only when the file holds
    // a byte that may be one: tabs and line breaks are collapsed to spaces
    // anyway, and a C1 control starts with 0xC2 in UTF-8. One pass without
    // early exit, which LLVM vectorises.
    let controls = decoded.iter().fold(false, |any, &b| {
        any | ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')) | (b == 0x7F) | (b == 0xC2)
    });
    let mut builder = RecordBuilder {
        schema,
        side,
        today,
        controls,
        out: ParsedFile { records: Vec::with_capacity(lines), ..ParsedFile::default() },
        own_ids: FastMap::with_capacity_and_hasher(lines, Default::default()),
    };
    match &schema.layout {
        Layout::Delimited { delimiter, quote, header } => {
            read_delimited(&decoded, *delimiter, *quote, *header, &mut builder)
        }
        Layout::FixedWidth { skip_lines, line_width } => {
            read_fixed(&decoded, *skip_lines, *line_width, &mut builder)
        }
    }
}

fn read_delimited(bytes: &[u8], delimiter: u8, quote: u8, header: bool, b: &mut RecordBuilder) -> ParsedFile {
    // A reader from byte `from` on: the file's start, or the line after one
    // whose quote was never closed.
    let reader = |from: usize| {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .quote(quote)
            .from_reader(&bytes[from..])
    };
    let mut rdr = reader(0);
    let mut base = 0;
    let mut record = csv::ByteRecord::new();

    // Where each schema column sits in a row; None for an absent optional column.
    let mut slots: Vec<Option<usize>> = Vec::with_capacity(b.schema.columns.len());
    let mut width: Option<usize> = None;
    if header {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return ParsedFile::default(),
            Err(e) => return ParsedFile::fail(format!("cannot read the header: {e}")),
        }
        let names: Vec<String> =
            record.iter().map(|f| String::from_utf8_lossy(f).trim().to_ascii_lowercase()).collect();
        let mut missing = Vec::new();
        for c in &b.schema.columns {
            let Place::Named(name) = &c.place else { unreachable!("schema checks named columns") };
            let wanted = name.trim().to_ascii_lowercase();
            let mut found = names.iter().enumerate().filter(|(_, n)| **n == wanted).map(|(i, _)| i);
            let at = found.next();
            if let (Some(first), Some(second)) = (at, found.next()) {
                return ParsedFile::fail(format!(
                    "line 1: the header has column {name} twice (fields {} and {}): which one holds \
                     the value is unclear",
                    first + 1,
                    second + 1
                ));
            }
            if at.is_none() && !c.optional_column {
                missing.push(name.as_str());
            }
            slots.push(at);
        }
        if !missing.is_empty() {
            return ParsedFile::fail(format!(
                "line 1: header lacks column(s) {} that schema {:?} requires",
                missing.join(", "),
                b.schema.name
            ));
        }
        width = Some(record.len());
    } else {
        for c in &b.schema.columns {
            let Place::Index(ix) = c.place else { unreachable!("schema checks indexed columns") };
            slots.push(Some(ix));
        }
    }
    let needed = slots.iter().flatten().max().map_or(0, |m| m + 1);
    if !header {
        // Without a header, a row's width is the one most rows of the file
        // have (at least what the schema reads): a row with more fields
        // (an unquoted comma in a street) would shift its values.
        let mut widths: crate::FastMap<usize, usize> = crate::FastMap::default();
        let mut row = csv::ByteRecord::new();
        let mut all = reader(0);
        while let Ok(true) = all.read_byte_record(&mut row) {
            *widths.entry(row.len()).or_default() += 1;
        }
        let common = widths.into_iter().max_by_key(|&(w, n)| (n, std::cmp::Reverse(w))).map_or(0, |(w, _)| w);
        width = Some(common.max(needed));
    }
    let mut lines = LineCounter { bytes, offset: 0, line: 1 };
    // A value that holds a line break and a row's worth of delimiters is
    // rows swallowed by a quote left open, not one value.
    let row_of_delimiters = width.unwrap_or(needed).saturating_sub(1).max(2);

    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // The csv reader only fails on I/O or (never here) UTF-8; stop
                // the file rather than guess where the next record starts.
                let line = lines.line_at(base as u64 + e.position().map_or(0, |p| p.byte()));
                b.out.fatal = Some(format!("line {line}: {e}"));
                break;
            }
        }
        let start = base + record.position().map_or(0, |p| p.byte() as usize);
        let line = lines.line_at(start as u64);
        // One search over the row's values together; a value is looked at
        // only when the row holds a line break at all.
        if memchr::memchr2(b'\n', b'\r', record.as_slice()).is_some()
            && record.iter().any(|f| {
                memchr::memchr2(b'\n', b'\r', f).is_some()
                    && memchr::memchr_iter(delimiter, f).count() >= row_of_delimiters
            })
        {
            // The row is rejected alone, and reading goes on at the next line
            // with a reader of its own: the rows the quote ran over are read
            // as the rows they are.
            b.reject_row(
                line,
                None,
                format!(
                    "a quote ({}) opened in this row is never closed before the rows after it: \
                     the row is rejected, and the next line is read as a row of its own",
                    quote as char
                ),
            );
            let from = start + bytes[start..].iter().position(|&c| !matches!(c, b'\r' | b'\n')).unwrap_or(0);
            base = from + split_line(&bytes[from..]).1.unwrap_or(bytes.len() - from);
            rdr = reader(base);
            continue;
        }
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            // A row of bare delimiters is a blank line to people, but it was
            // a record in the file: count it so the totals still add up.
            if record.len() > 1 {
                b.reject_row(line, None, "empty row".to_string());
            }
            continue;
        }
        let expected = width.unwrap_or(needed);
        if record.len() != expected {
            b.reject_row(
                line,
                None,
                format!("wrong column count: expected {expected} fields, found {}", record.len()),
            );
            continue;
        }
        let mut values: Vec<Option<Cow<str>>> = Vec::with_capacity(slots.len());
        let mut bad = None;
        for (c, slot) in b.schema.columns.iter().zip(&slots) {
            let raw = slot.and_then(|i| record.get(i));
            match raw.map(std::str::from_utf8) {
                None => values.push(None),
                Some(Ok(s)) => values.push(Some(Cow::Borrowed(s))),
                Some(Err(e)) => {
                    let raw = raw.unwrap_or_default();
                    let byte = raw.get(e.valid_up_to()).copied().unwrap_or(0);
                    bad = Some((
                        c,
                        format!(
                            "invalid UTF-8 byte 0x{byte:02X} in column {} (the schema says utf-8; \
                             was the file saved as Windows-1252?)",
                            c.label
                        ),
                    ));
                    break;
                }
            }
        }
        if let Some((c, reason)) = bad {
            b.reject_row(line, Some(c), reason);
            continue;
        }
        b.build(line, &values);
    }
    b.finish()
}

fn read_fixed(
    bytes: &[u8],
    skip_lines: usize,
    line_width: Option<usize>,
    b: &mut RecordBuilder,
) -> ParsedFile {
    let needed = b
        .schema
        .columns
        .iter()
        .filter(|c| c.required)
        .filter_map(|c| match c.place {
            // Exports often trim trailing spaces, so a line may end inside
            // its last column; it is short only if a required column is
            // wholly missing.
            Place::Span { start, .. } => Some(start + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    for (i, raw_line) in physical_lines(bytes).enumerate() {
        let line = i as u64 + 1;
        if i < skip_lines {
            continue;
        }
        if raw_line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = match std::str::from_utf8(raw_line) {
            Ok(t) => t,
            Err(e) => {
                let byte = raw_line[e.valid_up_to()];
                b.reject_row(
                    line,
                    None,
                    format!(
                        "invalid UTF-8 byte 0x{byte:02X} at character {} (the schema says utf-8; \
                         was the file saved as Windows-1252?)",
                        e.valid_up_to() + 1
                    ),
                );
                continue;
            }
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        if chars.len() < needed {
            b.reject_row(
                line,
                None,
                format!("line is {} characters; the layout needs at least {needed}", chars.len()),
            );
            continue;
        }
        // Longer even by spaces: a value that ran over its columns pushed
        // the padding of the last one out too.
        if let Some(w) = line_width
            && chars.len() > w
        {
            b.reject_row(
                line,
                None,
                format!(
                    "line is {} characters; the layout's lines are {w} (a value ran over its columns, and \
                     every value after it would be read shifted)",
                    chars.len()
                ),
            );
            continue;
        }
        let slice = |start: usize, end: usize| -> Option<Cow<str>> {
            if start >= chars.len() {
                return None;
            }
            let from = chars[start].0;
            let to = chars.get(end).map_or(text.len(), |c| c.0);
            Some(Cow::Borrowed(&text[from..to]))
        };
        let values: Vec<Option<Cow<str>>> = b
            .schema
            .columns
            .iter()
            .map(|c| match c.place {
                Place::Span { start, end } => slice(start, end),
                _ => None,
            })
            .collect();
        b.build(line, &values);
    }
    b.finish()
}

/// The per-column rules a value is read with.
struct Rules<'a> {
    formats: &'a [String],
    sex_map: &'a std::collections::BTreeMap<String, String>,
    phone_country: &'a str,
}

// Inlined so that `normalize_value`'s constant rules fold away and each kind
// of value goes straight to its parser: HL7 mapping calls `normalize_value`
// five times a patient.
#[inline(always)]
fn normalize_typed(t: FieldType, text: &str, r: &Rules, today: NaiveDate) -> Result<CompactString, String> {
    match t {
        FieldType::Id | FieldType::Text => Ok(normalize::text(text)),
        FieldType::Date => normalize::date(text, r.formats, today).map(crate::model::iso_date),
        FieldType::Sex => normalize::sex(text, r.sex_map).map(|s| s.as_str().into()),
        FieldType::Phone => normalize::phone_e164(text, r.phone_country),
        FieldType::UsState => normalize::us_state(text),
        FieldType::UsZip => normalize::us_zip(text),
        FieldType::Email => normalize::email(text),
        FieldType::Language => normalize::language(text),
        FieldType::Race => normalize::race(text),
        FieldType::Ethnicity => normalize::ethnicity(text),
    }
}

/// Normalise one value of `field` by the default rules (US phones, built-in
/// sex codes, ISO dates), as `Field::set` takes it. For sources without a
/// schema of columns, such as HL7.
pub(crate) fn normalize_value(field: Field, text: &str) -> Result<CompactString, String> {
    match field.field_type() {
        // Only dates need today (and a clock read): keep it off the hot path.
        FieldType::Date => normalize_default_date(text),
        t => {
            let rules = Rules { formats: &[], sex_map: &NO_MAP, phone_country: "US" };
            normalize_typed(t, text, &rules, NaiveDate::MIN)
        }
    }
}

static NO_MAP: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

/// [`normalize_value`], written into `slot` (empty), where the value stays:
/// the HL7 mapping's hot path. Phones, states, ZIPs and emails are written
/// in place (see `normalize::into` for why); other kinds are moved in.
#[inline(always)]
pub(crate) fn normalize_into(field: Field, text: &str, slot: &mut Option<CompactString>) {
    match field.field_type() {
        // The country `normalize_value` reads phones in.
        FieldType::Phone => normalize::us_phone_into(text, slot),
        FieldType::UsState => normalize::us_state_into(text, slot),
        FieldType::UsZip => normalize::us_zip_into(text, slot),
        FieldType::Email => normalize::email_into(text, slot),
        _ => *slot = normalize_value(field, text).ok(),
    }
}

/// [`normalize_value`] of a date. Kept out of line: its format list and
/// clock read would otherwise give every call of `normalize_value` their
/// stack frame, where the other kinds need none and only jump to their
/// parser.
#[inline(never)]
fn normalize_default_date(text: &str) -> Result<CompactString, String> {
    let formats = ["%Y-%m-%d".to_string()];
    let rules = Rules { formats: &formats, sex_map: &NO_MAP, phone_country: "US" };
    normalize_typed(FieldType::Date, text, &rules, chrono::Local::now().date_naive())
}

/// The field that is a record's own key on `side`.
fn own_field(side: Side) -> Field {
    match side {
        Side::Ehr => Field::EhrId,
        Side::Practice => Field::PracticeMrn,
    }
}

/// Physical line numbers from byte offsets. The csv reader's own line count
/// lags behind after CRLF endings and blank lines, and staff need the line
/// their editor shows.
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl LineCounter<'_> {
    /// The line of the first byte at or after `offset` that is not a line
    /// ending (a record's position can point at the previous terminator).
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut at = (offset as usize).min(self.bytes.len());
        while at < self.bytes.len() && matches!(self.bytes[at], b'\r' | b'\n') {
            at += 1;
        }
        if at >= self.offset {
            self.line += line_breaks(&self.bytes[self.offset..at], self.bytes.get(at).copied());
            self.offset = at;
        }
        self.line
    }
}

/// How many line breaks `bytes` holds: LF, CRLF, or a CR alone (classic
/// Mac, Excel's "CSV (Macintosh)"), as the csv reader ends records and
/// editors break lines. `next` is the byte after them, to tell a CR that
/// ends the run from the first half of a CRLF.
fn line_breaks(bytes: &[u8], next: Option<u8>) -> u64 {
    let lf = memchr::memchr_iter(b'\n', bytes).count();
    let lone_cr = memchr::memchr_iter(b'\r', bytes)
        .filter(|&i| bytes.get(i + 1).copied().or(next) != Some(b'\n'))
        .count();
    (lf + lone_cr) as u64
}

/// The lines of a file, each without its ending: LF, CRLF or a CR alone.
fn physical_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let text = rest?;
        let (line, next) = split_line(text);
        rest = next.map(|n| &text[n..]);
        Some(line)
    })
}

/// The first line of `text`, without its ending (LF, CRLF or a CR alone),
/// and where the next line starts; None when the line runs to the end.
fn split_line(text: &[u8]) -> (&[u8], Option<usize>) {
    match memchr::memchr2(b'\n', b'\r', text) {
        Some(i) => {
            let ending = if text[i] == b'\r' && text.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
            (&text[..i], Some(i + ending))
        }
        None => (text, None),
    }
}

/// Turns one row's raw values into a record, a rejection, or a record with warnings.
struct RecordBuilder<'a> {
    schema: &'a Schema,
    side: Side,
    today: NaiveDate,
    /// The file may hold a control character (see `parse_bytes`).
    controls: bool,
    out: ParsedFile,
    /// Own ID -> line it was first seen on, to refuse a second record with it.
    own_ids: FastMap<String, u64>,
}

impl RecordBuilder<'_> {
    fn reject_row(&mut self, line: u64, column: Option<&Column>, reason: String) {
        self.out.read += 1;
        self.out.rejects.push(Reject {
            line,
            severity: Severity::Rejected,
            record_id: None,
            column: column.map(|c| c.label.clone()),
            field: column.map(|c| c.field),
            reason,
        });
    }

    fn build(&mut self, line: u64, values: &[Option<Cow<str>>]) {
        let schema = self.schema;
        let mut patient = Patient::default();
        let mut warnings: Vec<(&Column, String)> = Vec::new();
        let mut rejection: Option<(&Column, String)> = None;
        for (c, raw) in schema.columns.iter().zip(values) {
            let text = raw.as_deref().map(normalize::text).filter(|t| !t.is_empty());
            let Some(text) = text else {
                if c.required {
                    rejection.get_or_insert_with(|| {
                        (c, format!("missing required field {} ({})", c.label, c.field))
                    });
                }
                continue;
            };
            match self.value(c, &text) {
                // An answer that none was given (a race "Declined").
                Ok(v) if v.is_empty() => {}
                Ok(v) => c.field.set(&mut patient, Some(v)),
                Err(reason) if c.required => {
                    rejection.get_or_insert_with(|| (c, format!("{}: {reason}", c.label)));
                }
                Err(reason) => warnings.push((c, format!("{}: {reason}; loaded without it", c.label))),
            }
        }
        let cleaned = if self.controls { patient.strip_controls() } else { Default::default() };
        for field in cleaned.iter() {
            if let Some(c) = schema.column_for(field) {
                let why =
                    "held control characters (bytes that are no text, such as NUL); loaded without them";
                warnings.push((c, format!("{}: {why}", c.label)));
            }
        }
        let own_id = patient.own_id(self.side).map(str::to_string);
        if rejection.is_none()
            && let Some(id) = &own_id
            && let Some(first) = self.own_ids.get(id)
            && let Some(c) = schema.column_for(own_field(self.side))
        {
            rejection = Some((c, format!("duplicate {} {id:?}: already on line {first}", c.label)));
        }
        self.out.read += 1;
        let reject = |severity, (c, reason): (&Column, String)| Reject {
            line,
            severity,
            record_id: own_id.clone(),
            column: Some(c.label.clone()),
            field: Some(c.field),
            reason,
        };
        if let Some(r) = rejection {
            self.out.rejects.push(reject(Severity::Rejected, r));
            return;
        }
        for w in warnings {
            self.out.rejects.push(reject(Severity::Warning, w));
        }
        if let Some(id) = own_id {
            self.own_ids.insert(id, line);
        }
        self.out.records.push(ParsedRecord { line, patient });
    }

    /// The normalised text of one non-empty value, as `Field::set` takes it.
    fn value(&self, c: &Column, text: &str) -> Result<CompactString, String> {
        let rules =
            Rules { formats: &c.formats, sex_map: &c.sex_map, phone_country: &self.schema.phone_country };
        normalize_typed(c.field_type, text, &rules, self.today)
    }

    fn finish(&mut self) -> ParsedFile {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SCHEMA: &str = r#"
format = "delimited"
encoding = "ENCODING"
[[columns]]
name = "ID"
field = "ehr_id"
required = true
[[columns]]
name = "Last"
field = "last_name"
required = true
[[columns]]
name = "DOB"
field = "birth_date"
formats = ["%m/%d/%Y"]
required = true
[[columns]]
name = "Phone"
field = "phone_home"
[[columns]]
name = "MRN"
field = "practice_mrn"
optional_column = true
"#;

    fn schema(encoding: &str) -> Schema {
        Schema::parse(Path::new("t.toml"), &SCHEMA.replace("ENCODING", encoding)).unwrap()
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
    }

    fn parse(bytes: &[u8]) -> ParsedFile {
        parse_bytes(bytes, &schema("utf-8"), Side::Ehr, today())
    }

    fn lines(p: &ParsedFile) -> Vec<u64> {
        p.records.iter().map(|r| r.line).collect()
    }

    fn assert_adds_up(p: &ParsedFile) {
        assert_eq!(p.read, p.accepted() + p.rejected(), "{p:?}");
    }

    #[test]
    fn bom_crlf_quotes_and_embedded_newlines() {
        let p = parse(b"\xEF\xBB\xBFID,Last,DOB,Phone\r\nE1,\"Lee, Jr\",01/02/1970,\r\nE2,\"Multi\r\nLine\",02/03/1980,\r\nE3,Ng,03/04/1990,\r\n");
        assert_eq!(p.fatal, None);
        assert_eq!(lines(&p), [2, 3, 5], "an embedded newline moves later records down");
        assert_eq!(p.records[0].patient.last_name.as_deref(), Some("Lee, Jr"));
        assert_eq!(p.records[1].patient.last_name.as_deref(), Some("Multi Line"), "whitespace collapsed");
        assert_eq!(p.records[0].patient.practice_mrn, None, "optional column absent");
        assert_adds_up(&p);
    }

    #[test]
    fn control_characters_are_taken_out_with_a_warning() {
        let p = parse(b"ID,Last,DOB,Phone\nE\x001,O\x00Brien,01/02/1970,\n");
        let r = &p.records[0].patient;
        assert_eq!((r.ehr_id.as_deref(), r.last_name.as_deref()), (Some("E1"), Some("OBrien")));
        let warned: Vec<_> = p.rejects.iter().map(|r| (r.severity, r.column.as_deref())).collect();
        assert_eq!(warned, [(Severity::Warning, Some("ID")), (Severity::Warning, Some("Last"))]);
        assert!(p.rejects[1].reason.contains("control characters"), "{}", p.rejects[1].reason);
        assert_adds_up(&p);
    }

    #[test]
    fn header_names_match_case_insensitively_in_any_order() {
        let p = parse(b"dob,LAST,id,phone,mrn\n01/02/1970,Lee,E1,6175550100,0042\n");
        let r = &p.records[0].patient;
        assert_eq!(
            (r.ehr_id.as_deref(), r.practice_mrn.as_deref()),
            (Some("E1"), Some("0042")),
            "IDs keep zeros"
        );
        assert_eq!(r.phone_home.as_deref(), Some("+16175550100"));
    }

    #[test]
    fn bad_rows_are_rejected_and_the_rest_carries_on() {
        let p = parse(
            b"ID,Last,DOB,Phone\n\
              E1,Lee,02/30/1970,\n\
              E2,,01/01/1970,\n\
              E3,Ng\n\
              E4,Jos\xE9,01/01/1970,\n\
              E5,Po,01/01/1970,555\n\
              E1,Dup,01/01/1970,\n\
              ,,,\n\
              E6,Ok,01/01/1970,\n",
        );
        let got: Vec<(u64, Severity, Option<&str>)> =
            p.rejects.iter().map(|r| (r.line, r.severity, r.column.as_deref())).collect();
        assert_eq!(
            got,
            [
                (2, Severity::Rejected, Some("DOB")),
                (3, Severity::Rejected, Some("Last")),
                (4, Severity::Rejected, None),
                (5, Severity::Rejected, Some("Last")),
                (6, Severity::Warning, Some("Phone")),
                (8, Severity::Rejected, None),
            ]
        );
        assert!(p.rejects[0].reason.contains("02/30/1970"), "{}", p.rejects[0].reason);
        assert!(p.rejects[2].reason.contains("expected 4 fields, found 2"), "{}", p.rejects[2].reason);
        assert!(p.rejects[3].reason.contains("0xE9"), "{}", p.rejects[3].reason);
        assert_eq!(p.rejects[5].reason, "empty row");
        // E1 on line 7 is not a duplicate: the E1 on line 2 was never accepted.
        assert_eq!(lines(&p), [6, 7, 9], "E5 loaded without its phone");
        assert_eq!(p.records[0].patient.phone_home, None);
        assert_eq!(p.read, 8);
        assert_adds_up(&p);
    }

    #[test]
    fn duplicate_own_id_is_rejected_with_the_first_line() {
        let p = parse(b"ID,Last,DOB,Phone\nE1,Lee,01/01/1970,\nE1,Dup,01/01/1970,\n");
        assert_eq!(lines(&p), [2]);
        assert_eq!(p.rejects[0].line, 3);
        assert_eq!(p.rejects[0].reason, "duplicate ID \"E1\": already on line 2");
        assert_adds_up(&p);
    }

    /// A language column is stored as ISO 639-2, as HL7's PID-15 is, so the
    /// two sides compare; one that is no language loads without it.
    #[test]
    fn languages_races_and_ethnicities_are_stored_as_codes() {
        let s = Schema::parse(
            Path::new("l.toml"),
            "format = \"delimited\"\n[[columns]]\nname = \"ID\"\nfield = \"ehr_id\"\nrequired = true\n\
             [[columns]]\nname = \"Lang\"\nfield = \"language\"\n",
        )
        .unwrap();
        let p = parse_bytes(b"ID,Lang\nE1,English\nE2,es\nE3,Martian\nE4,\n", &s, Side::Ehr, today());
        let languages: Vec<_> = p.records.iter().map(|r| r.patient.language.as_deref()).collect();
        assert_eq!(languages, [Some("eng"), Some("spa"), None, None]);
        assert_eq!(p.warnings(), 1, "{:?}", p.rejects);
        assert_eq!(p.rejects[0].line, 4);
        assert!(p.rejects[0].reason.contains("unknown language"), "{}", p.rejects[0].reason);
        assert_adds_up(&p);
        // Race and ethnicity as CDC codes; an answer that none was given
        // loads no value and no warning.
        let s = Schema::parse(
            Path::new("r.toml"),
            "format = \"delimited\"\n[[columns]]\nname = \"ID\"\nfield = \"ehr_id\"\nrequired = true\n\
             [[columns]]\nname = \"Race\"\nfield = \"race\"\n[[columns]]\nname = \"Eth\"\nfield = \"ethnicity\"\n",
        )
        .unwrap();
        let p = parse_bytes(
            b"ID,Race,Eth\nE1,White,Hispanic\nE2,Declined,2186-5\nE3,Blue,N\n",
            &s,
            Side::Ehr,
            today(),
        );
        let read: Vec<_> =
            p.records.iter().map(|r| (r.patient.race.as_deref(), r.patient.ethnicity.as_deref())).collect();
        assert_eq!(read, [(Some("2106-3"), Some("2135-2")), (None, Some("2186-5")), (None, Some("2186-5"))]);
        assert_eq!((p.warnings(), p.rejects[0].line), (1, 4), "{:?}", p.rejects);
        assert!(p.rejects[0].reason.contains("unknown race"), "{}", p.rejects[0].reason);
        assert_adds_up(&p);
        // A schema that says a language column is an ID is told what it is.
        let err = Schema::parse(
            Path::new("l.toml"),
            "format = \"delimited\"\n[[columns]]\nname = \"Lang\"\nfield = \"language\"\ntype = \"id\"\n",
        )
        .unwrap_err();
        assert!(err.contains("which is read as language"), "{err}");
    }

    #[test]
    fn windows_1252_is_decoded() {
        let p = parse_bytes(
            b"ID,Last,DOB,Phone\nE1,Mu\xF1oz,01/01/1970,\n",
            &schema("windows-1252"),
            Side::Ehr,
            today(),
        );
        assert_eq!(p.records[0].patient.last_name.as_deref(), Some("Muñoz"));
    }

    #[test]
    fn missing_column_fails_the_whole_file() {
        let p = parse(b"ID,Last,Phone\nE1,Lee,\n");
        assert!(p.fatal.as_deref().unwrap().contains("lacks column(s) DOB"), "{:?}", p.fatal);
        assert_eq!(p.read, 0);
    }

    #[test]
    fn header_only_and_empty_files_hold_nothing() {
        for bytes in [&b""[..], b"ID,Last,DOB,Phone\r\n"] {
            let p = parse(bytes);
            assert_eq!((p.read, p.fatal.as_deref()), (0, None));
        }
    }

    #[test]
    fn fixed_width() {
        let s = fixed_schema();
        let p = parse_bytes(
            b"HEADER\r\n0001Lee   19700102\r\n\r\n0002Ng\r\n0003Po    2099\r\n",
            &s,
            Side::Practice,
            today(),
        );
        assert_eq!(lines(&p), [2, 4, 5], "trimmed lines are fine while every required column starts");
        assert_eq!(p.records[0].patient.practice_mrn.as_deref(), Some("0001"));
        assert_eq!(p.records[1].patient.birth_date, None);
        assert_eq!(p.rejects.len(), 1);
        assert_eq!((p.rejects[0].line, p.rejects[0].severity), (5, Severity::Warning));
        assert_adds_up(&p);
    }

    #[test]
    fn an_unclosed_quote_rejects_its_row_alone() {
        // Never closed: it ran to the end of the file, taking two rows.
        let p = parse(b"ID,Last,DOB,Phone\nE1,Smith,01/02/1970,\nE2,\"Jones,01/02/1971,\nE3,Lee,01/02/1972,\nE4,Ng,01/02/1973,\n");
        assert_eq!(lines(&p), [2, 4, 5]);
        assert_eq!((p.read, p.rejects[0].line), (4, 3));
        assert!(p.rejects[0].reason.contains("never closed"), "{:?}", p.rejects);
        // Closed by a later row's quoted value: the two rows came out as one
        // row of the right width, E2 with E3's values.
        let p =
            parse(b"ID,Last,DOB,Phone\nE2,\"Jones,01/02/1971,\nE3,\"Lee\",01/02/1972,\nE4,Ng,01/02/1973,\n");
        let ids: Vec<_> = p.records.iter().map(|r| r.patient.ehr_id.as_deref().unwrap()).collect();
        assert_eq!((ids, lines(&p)), (vec!["E3", "E4"], vec![3, 4]));
        assert_eq!(p.records[0].patient.last_name.as_deref(), Some("Lee"));
        assert_eq!((p.read, p.rejects[0].line), (3, 2));
        assert_adds_up(&p);
        // A quoted value over two lines, with a comma, is still one value.
        let p = parse(b"ID,Last,DOB,Phone\nE1,\"Smith,\nJr\",01/02/1970,\nE2,Ng,01/02/1973,\n");
        assert_eq!((lines(&p), p.rejects.len()), (vec![2, 4], 0));
    }

    #[test]
    fn without_a_header_rows_are_as_wide_as_most() {
        let s = Schema::parse(
            Path::new("n.toml"),
            "format = \"delimited\"\nheader = false\n[[columns]]\nindex = 1\nfield = \"practice_mrn\"\nrequired = true\n\
             [[columns]]\nindex = 2\nfield = \"last_name\"\n[[columns]]\nindex = 3\nfield = \"city\"\n",
        )
        .unwrap();
        // Four fields a row (the fourth not read); one row has an unquoted
        // comma in its name, one lacks the last field.
        let p = parse_bytes(
            b"1,Smith,Boston,x\n2,Jones, Jr,Salem,x\n3,Lee,Lowell,x\n4,Ng,Quincy\n",
            &s,
            Side::Practice,
            today(),
        );
        assert_eq!(lines(&p), [1, 3]);
        let rejects: Vec<(u64, &str)> = p.rejects.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(
            rejects,
            [
                (2, "wrong column count: expected 4 fields, found 5"),
                (4, "wrong column count: expected 4 fields, found 3")
            ]
        );
        assert_adds_up(&p);
    }

    #[test]
    fn a_fixed_width_line_longer_than_the_layout_is_rejected() {
        let text = fixed_schema_text().replace("skip_lines = 1", "skip_lines = 1\nline_width = 20");
        let s = Schema::parse(Path::new("f.toml"), &text).unwrap();
        let p = parse_bytes(
            b"HEADER\r\n0001Lee   19700102  \r\n0002Leeson19710102\r\n0003Longwood 19720102\r\n0004Ng    19730102   \r\n",
            &s,
            Side::Practice,
            today(),
        );
        assert_eq!(lines(&p), [2, 3]);
        let rejects: Vec<(u64, &str)> = p.rejects.iter().map(|r| (r.line, &r.reason[..44])).collect();
        assert_eq!(
            rejects,
            [
                (4, "line is 21 characters; the layout's lines ar"),
                (5, "line is 21 characters; the layout's lines ar")
            ]
        );
        let bad = fixed_schema_text().replace("skip_lines = 1", "skip_lines = 1\nline_width = 12");
        let e = Schema::parse(Path::new("f.toml"), &bad).unwrap_err().to_string();
        assert!(e.contains("line_width = 12 ends inside a column"), "{e}");
    }

    #[test]
    fn a_column_the_header_names_twice_fails_the_file() {
        let p = parse(b"ID,Last,DOB,ID,Phone\nE1,Smith,01/02/1970,E999,\n");
        let fatal = p.fatal.unwrap_or_default();
        assert!(fatal.contains("column ID twice (fields 1 and 4)"), "{fatal}");
        // A column the schema does not read may be there twice.
        let p = parse(b"ID,Last,DOB,Phone,Note,Note\nE1,Smith,01/02/1970,,a,b\n");
        assert_eq!((p.fatal, p.read), (None, 1));
    }

    #[test]
    fn lines_may_end_in_a_cr_alone() {
        let p =
            parse(b"ID,Last,DOB,Phone\rE1,Smith,01/02/1970,\rE2,Jones,13/02/1971,\r\rE1,Lee,01/02/1972,\r");
        assert_eq!(lines(&p), [2]);
        let rejects: Vec<_> = p.rejects.iter().map(|r| r.line).collect();
        assert_eq!(rejects, [3, 5]);
        assert!(p.rejects[1].reason.contains("already on line 2"), "{}", p.rejects[1].reason);
        let p = parse_bytes(
            b"HEADER\r0001Lee   19700102\r0002Ng    19710102\r",
            &fixed_schema(),
            Side::Practice,
            today(),
        );
        assert_eq!(lines(&p), [2, 3]);
        assert_adds_up(&p);
    }

    #[test]
    fn a_byte_order_mark_says_what_the_file_is() {
        // Excel's "CSV UTF-8" of a Windows-1252 file: the mark is not text.
        let p = parse_bytes(
            b"\xEF\xBB\xBFID,Last,DOB,Phone\r\nE1,M\xC3\xBCller,01/02/1970,\r\n",
            &schema("windows-1252"),
            Side::Ehr,
            today(),
        );
        assert_eq!(p.records[0].patient.ehr_id.as_deref(), Some("E1"));
        assert_eq!(p.records[0].patient.last_name.as_deref(), Some("Müller"));
        // UTF-16 (Notepad's "Unicode"), little- and big-endian.
        let text = "HEADER\r\n0001Lëe   19700102\r\n";
        let le: Vec<u8> =
            [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
        let be: Vec<u8> =
            [0xFE, 0xFF].into_iter().chain(text.encode_utf16().flat_map(u16::to_be_bytes)).collect();
        for bytes in [le, be] {
            let p = parse_bytes(&bytes, &fixed_schema(), Side::Practice, today());
            assert_eq!((p.read, p.rejects.len()), (1, 0), "{:?}", p.rejects);
            assert_eq!(p.records[0].patient.last_name.as_deref(), Some("Lëe"));
        }
    }

    #[test]
    fn a_dos_end_of_file_byte_is_no_record() {
        let p = parse(b"ID,Last,DOB,Phone\r\nE1,Smith,01/02/1970,\r\n\x1a");
        assert_eq!((p.read, p.rejects.len()), (1, 0));
        let p =
            parse_bytes(b"HEADER\r\n0001Lee   19700102\r\n\x1a", &fixed_schema(), Side::Practice, today());
        assert_eq!((p.read, p.rejects.len()), (1, 0));
    }

    fn fixed_schema() -> Schema {
        Schema::parse(Path::new("f.toml"), fixed_schema_text()).unwrap()
    }

    fn fixed_schema_text() -> &'static str {
        r#"
format = "fixed_width"
skip_lines = 1
[[columns]]
start = 1
width = 4
field = "practice_mrn"
required = true
[[columns]]
start = 5
width = 6
field = "last_name"
required = true
[[columns]]
start = 11
width = 8
field = "birth_date"
formats = ["%Y%m%d"]
"#
    }

    #[test]
    fn normalize_into_writes_what_normalize_value_returns() {
        let cases = [
            (Field::PhoneHome, ["6175550142", "(617) 555-0142", "+44 20 7946 0958", "617555"]),
            (Field::State, ["MA", "ma", "new york", "ZZ"]),
            (Field::Zip, ["02134", "02134-1234", "021341234", "ABCDE"]),
            (
                Field::Email,
                ["jane@example.com", "Jane@Example.COM", " jane@example.com ", "jane.example.com"],
            ),
            (Field::City, ["Boston", "  Boston ", "", "Zoë"]),
            (Field::Language, ["eng", "English", "en-US", "Martian"]),
        ];
        for (field, inputs) in cases {
            for raw in inputs {
                let mut slot = None;
                normalize_into(field, raw, &mut slot);
                assert_eq!(slot, normalize_value(field, raw).ok(), "{field:?} {raw:?}");
            }
        }
    }
}
