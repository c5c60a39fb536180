//! Flat files (CSV and other delimited text, fixed-width) read through a
//! [`Schema`] into canonical patients. This module owns decoding, splitting
//! and per-field normalisation, and decides whether a bad value rejects the
//! record or only empties the field. It does not know where files come from
//! or where records go.

mod normalize;
mod read;
mod schema;

pub use read::{ParsedFile, ParsedRecord, parse_bytes};
pub(crate) use read::{normalize_into, normalize_value};
pub use schema::{Column, EncodingName, Layout, Place, Schema};

pub(crate) use normalize::{
    EARLIEST_YEAR, address_key, code_name, ethnicity, language, name_key, race, text_key, zip_key,
};
