//! Flat files (CSV and other delimited text, fixed-width) read through a
//! [`Schema`] into canonical patients. This module owns decoding, splitting
//! and per-field normalisation, and decides whether a bad value rejects the
//! record or only empties the field. It does not know where files come from
//! or where records go.

mod normalize;
mod read;
mod schema;

pub(crate) use read::normalize_value;
pub use read::{ParsedFile, ParsedRecord, parse_bytes};
pub use schema::{Column, EncodingName, Layout, Place, Schema};

pub(crate) use normalize::{
    address_key, email_into, name_key, text_key, us_phone_into, us_state_into, us_zip_into, zip_key,
};
