//! Schema files (`schemas/*.toml`): the layout of one kind of flat file and
//! how each column maps to a canonical [`Field`]. Read raw with serde, then
//! checked into a [`Schema`] that the reader trusts.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;

use crate::model::{Field, FieldType, Sex, Side};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    name: Option<String>,
    description: Option<String>,
    format: FormatName,
    /// Delimited only: one ASCII character (default ",").
    delimiter: Option<String>,
    /// Delimited only: the quote character (default '"').
    quote: Option<String>,
    /// Delimited only: whether the first row names the columns (default true).
    header: Option<bool>,
    /// Fixed-width only: lines to skip before the data (default 0).
    skip_lines: Option<usize>,
    /// Fixed-width only: how many characters a line holds; text beyond is
    /// a value that ran over its columns, and the line is rejected.
    line_width: Option<usize>,
    #[serde(default)]
    encoding: EncodingName,
    /// Region for phone numbers without a country code (default "US").
    phone_country: Option<String>,
    columns: Vec<ColumnFile>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FormatName {
    Delimited,
    FixedWidth,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
pub enum EncodingName {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8", alias = "UTF-8")]
    Utf8,
    #[serde(rename = "windows-1252", alias = "cp1252", alias = "Windows-1252")]
    Windows1252,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnFile {
    /// The header's name for the column (delimited with a header).
    name: Option<String>,
    /// 1-based position (delimited without a header).
    index: Option<usize>,
    /// 1-based first character (fixed-width).
    start: Option<usize>,
    /// Width in characters (fixed-width).
    width: Option<usize>,
    field: Field,
    /// Optional, as documentation; must agree with the field's type.
    #[serde(rename = "type")]
    field_type: Option<FieldType>,
    #[serde(default)]
    required: bool,
    /// The column may be absent from the file's header.
    #[serde(default)]
    optional_column: bool,
    /// Date formats (chrono strftime), tried in order.
    formats: Option<Vec<String>>,
    /// Extra sex codes, e.g. { "1" = "M", "2" = "F" }.
    map: Option<BTreeMap<String, String>>,
}

/// A checked schema.
#[derive(Debug, Clone)]
pub struct Schema {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub layout: Layout,
    pub encoding: EncodingName,
    pub phone_country: String,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Delimited { delimiter: u8, quote: u8, header: bool },
    FixedWidth { skip_lines: usize, line_width: Option<usize> },
}

#[derive(Debug, Clone)]
pub struct Column {
    /// How reports name the column: the header name, `#3`, or `chars 1-10`.
    pub label: String,
    pub place: Place,
    pub field: Field,
    pub field_type: FieldType,
    pub required: bool,
    pub optional_column: bool,
    pub formats: Vec<String>,
    pub sex_map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Named(String),
    /// 0-based field index.
    Index(usize),
    /// 0-based character range.
    Span {
        start: usize,
        end: usize,
    },
}

impl Schema {
    pub fn load(path: &Path) -> Result<Schema, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Schema::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Schema, String> {
        let raw: SchemaFile = toml::from_str(text).map_err(|e| {
            format!("{}: {}{}", path.display(), crate::job::toml_location(text, e.span()), e.message())
        })?;
        raw.build(path).map_err(|problems| format!("{}: {}", path.display(), problems.join("; ")))
    }

    /// The column that holds `field`, if the schema maps it.
    pub fn column_for(&self, field: Field) -> Option<&Column> {
        self.columns.iter().find(|c| c.field == field)
    }

    /// Check that this schema can feed `side`: it must map the side's own key.
    pub fn check_side(&self, side: Side) -> Result<(), String> {
        let own = match side {
            Side::Ehr => Field::EhrId,
            Side::Practice => Field::PracticeMrn,
        };
        match self.column_for(own) {
            Some(c) if c.required => Ok(()),
            Some(_) => Err(format!(
                "schema {:?} reads {side} records, so its {own} column (the record's own key) must be required",
                self.name
            )),
            None => Err(format!(
                "schema {:?} reads {side} records but has no column for {own}, the record's own key",
                self.name
            )),
        }
    }
}

impl SchemaFile {
    fn build(self, path: &Path) -> Result<Schema, Vec<String>> {
        let mut problems = Vec::new();
        let name = self.name.unwrap_or_else(|| {
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        });
        let layout = match self.format {
            FormatName::Delimited => {
                if self.skip_lines.is_some() || self.line_width.is_some() {
                    problems.push(
                        "skip_lines and line_width are for fixed_width files; a delimited file uses header"
                            .into(),
                    );
                }
                let delimiter =
                    one_byte(self.delimiter.as_deref().unwrap_or(","), "delimiter", &mut problems);
                let quote = one_byte(self.quote.as_deref().unwrap_or("\""), "quote", &mut problems);
                Layout::Delimited { delimiter, quote, header: self.header.unwrap_or(true) }
            }
            FormatName::FixedWidth => {
                if self.delimiter.is_some() || self.quote.is_some() || self.header.is_some() {
                    problems.push("delimiter, quote and header are for delimited files".into());
                }
                let end = self
                    .columns
                    .iter()
                    .filter_map(|c| Some(c.start?.saturating_sub(1) + c.width?))
                    .max()
                    .unwrap_or(0);
                if let Some(w) = self.line_width
                    && w < end
                {
                    problems.push(format!(
                        "line_width = {w} ends inside a column, which runs to character {end}"
                    ));
                }
                Layout::FixedWidth { skip_lines: self.skip_lines.unwrap_or(0), line_width: self.line_width }
            }
        };
        let phone_country = self.phone_country.unwrap_or_else(|| "US".to_string());
        if !matches!(phone_country.as_str(), "US" | "CA") {
            problems.push(format!("phone_country: {phone_country:?} is not supported (US or CA)"));
        }
        if self.columns.is_empty() {
            problems.push("columns: the schema maps no columns".into());
        }

        let mut seen_fields = HashSet::new();
        let mut columns = Vec::new();
        for (i, c) in self.columns.into_iter().enumerate() {
            let at = format!("columns[{i}] ({})", c.field);
            if !seen_fields.insert(c.field) {
                problems.push(format!("{at}: field {} is mapped twice", c.field));
            }
            let place = match (&layout, &c.name, c.index, c.start, c.width) {
                (Layout::Delimited { header: true, .. }, Some(n), None, None, None) => {
                    Place::Named(n.clone())
                }
                (Layout::Delimited { header: false, .. }, _, Some(ix), None, None) if ix >= 1 => {
                    Place::Index(ix - 1)
                }
                (Layout::FixedWidth { .. }, _, None, Some(s), Some(w)) if s >= 1 && w >= 1 => {
                    Place::Span { start: s - 1, end: s - 1 + w }
                }
                (Layout::Delimited { header: true, .. }, ..) => {
                    problems.push(format!(
                        "{at}: a file with a header names each column with `name` (and nothing else)"
                    ));
                    continue;
                }
                (Layout::Delimited { header: false, .. }, ..) => {
                    problems.push(format!(
                        "{at}: a file without a header places each column with `index` (1-based)"
                    ));
                    continue;
                }
                (Layout::FixedWidth { .. }, ..) => {
                    problems.push(format!(
                        "{at}: a fixed-width column needs `start` (1-based) and `width`, both at least 1"
                    ));
                    continue;
                }
            };
            let label = match (&place, &c.name) {
                (_, Some(n)) => n.clone(),
                (Place::Index(ix), None) => format!("#{}", ix + 1),
                (Place::Span { start, end }, None) => format!("chars {}-{}", start + 1, end),
                (Place::Named(n), None) => n.clone(),
            };
            let field_type = c.field.field_type();
            if let Some(t) = c.field_type
                && t != field_type
            {
                problems.push(format!(
                    "{at}: type {} does not fit field {}, which is read as {}",
                    t.as_str(),
                    c.field,
                    field_type.as_str()
                ));
            }
            if c.optional_column && c.required {
                problems.push(format!("{at}: a required column cannot be optional_column"));
            }
            if c.optional_column && !matches!(place, Place::Named(_)) {
                problems.push(format!("{at}: optional_column only applies to columns found by header name"));
            }
            let formats = match (field_type, c.formats) {
                (FieldType::Date, Some(f)) if f.is_empty() => {
                    problems.push(format!("{at}: formats is empty"));
                    Vec::new()
                }
                (FieldType::Date, Some(f)) => f,
                (FieldType::Date, None) => vec!["%Y-%m-%d".to_string()],
                (_, Some(_)) => {
                    problems.push(format!("{at}: formats only applies to date fields"));
                    Vec::new()
                }
                (_, None) => Vec::new(),
            };
            for f in &formats {
                if StrftimeItems::new(f).any(|item| matches!(item, Item::Error)) || !f.contains('%') {
                    problems.push(format!(
                        "{at}: {f:?} is not a valid date format (chrono strftime, e.g. \"%m/%d/%Y\")"
                    ));
                }
            }
            let sex_map = c.map.unwrap_or_default();
            if !sex_map.is_empty() && field_type != FieldType::Sex {
                problems.push(format!("{at}: map only applies to the sex field"));
            }
            for (code, to) in &sex_map {
                if Sex::parse(to).is_none() {
                    problems.push(format!("{at}: map {code:?} = {to:?}: the target must be M, F, O or U"));
                }
            }
            columns.push(Column {
                label,
                place,
                field: c.field,
                field_type,
                required: c.required,
                optional_column: c.optional_column,
                formats,
                sex_map,
            });
        }
        check_overlaps(&columns, &mut problems);

        if problems.is_empty() {
            Ok(Schema {
                name,
                description: self.description,
                path: path.to_path_buf(),
                layout,
                encoding: self.encoding,
                phone_country,
                columns,
            })
        } else {
            Err(problems)
        }
    }
}

fn one_byte(s: &str, key: &str, problems: &mut Vec<String>) -> u8 {
    let s = if s == "\\t" { "\t" } else { s };
    match s.as_bytes() {
        [b] if b.is_ascii() => *b,
        _ => {
            problems.push(format!("{key}: {s:?} must be a single ASCII character"));
            b','
        }
    }
}

fn check_overlaps(columns: &[Column], problems: &mut Vec<String>) {
    let mut spans: Vec<(usize, usize, &str)> = columns
        .iter()
        .filter_map(|c| match c.place {
            Place::Span { start, end } => Some((start, end, c.label.as_str())),
            _ => None,
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            problems.push(format!("columns {} and {} overlap", w[0].2, w[1].2));
        }
    }
    let mut names = HashSet::new();
    for c in columns {
        if let Place::Named(n) = &c.place
            && !names.insert(n.to_ascii_lowercase())
        {
            problems.push(format!("column {n:?} is listed twice"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schema, String> {
        Schema::parse(Path::new("schemas/t.toml"), text)
    }

    #[test]
    fn shipped_schemas_load() {
        for name in ["ehr_patients", "practice_roster", "practice_roster_fixed"] {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{name}.toml"));
            let s = Schema::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!s.columns.is_empty());
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            parse("format = \"delimited\"\n[[columns]]\nname = \"A\"\nfield = \"ehr_id\"\nrequird = true\n")
                .unwrap_err();
        assert!(err.contains("requird"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let err =
            parse("format = \"delimited\"\n[[columns]]\nname = \"A\"\nfield = \"shoe_size\"\n").unwrap_err();
        assert!(err.contains("shoe_size"), "{err}");
    }

    #[test]
    fn bad_date_format_is_refused() {
        let err = parse(
            "format = \"delimited\"\n[[columns]]\nname = \"D\"\nfield = \"birth_date\"\nformats = [\"%Q\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("not a valid date format"), "{err}");
    }

    #[test]
    fn type_must_fit_field() {
        let err = parse(
            "format = \"delimited\"\n[[columns]]\nname = \"D\"\nfield = \"birth_date\"\ntype = \"phone\"\n",
        )
        .unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn fixed_width_overlap_is_refused() {
        let err = parse(
            "format = \"fixed_width\"\n[[columns]]\nstart = 1\nwidth = 5\nfield = \"ehr_id\"\n\
             [[columns]]\nstart = 4\nwidth = 3\nfield = \"last_name\"\n",
        )
        .unwrap_err();
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn sex_map_targets_checked() {
        let err = parse("format = \"delimited\"\n[[columns]]\nname = \"S\"\nfield = \"sex\"\nmap = { \"1\" = \"Male\" }\n")
            .unwrap_err();
        assert!(err.contains("must be M, F, O or U"), "{err}");
    }

    #[test]
    fn own_key_required_for_side() {
        let s =
            parse("format = \"delimited\"\n[[columns]]\nname = \"A\"\nfield = \"ehr_id\"\nrequired = true\n")
                .unwrap();
        assert!(s.check_side(Side::Ehr).is_ok());
        assert!(s.check_side(Side::Practice).unwrap_err().contains("practice_mrn"));
    }
}
