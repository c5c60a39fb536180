//! The one error type of the HL7 layer. Messages name the HL7 field and the
//! fix, and never quote a value beyond a few bytes, because these errors end
//! up in logs and reports and values are patient data. Callers add where the
//! value was (file, message number, `PID-5`): a `Field` does not know.

use super::parse::Charset;

/// Why bytes could not be read as HL7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    /// The bytes do not start with `MSH` (a message) where one was expected.
    #[error(
        "not an HL7 message: it should start with \"MSH\" and the field separator, but starts with \"{start}\""
    )]
    NotMsh {
        /// The first few bytes, escaped.
        start: String,
    },
    /// MSH-1/MSH-2 (or FHS/BHS-1/2) do not give a usable set of delimiters.
    #[error("bad delimiters in {segment}: {reason}")]
    BadDelimiters { segment: &'static str, reason: String },
    /// MSH-18 names a character set this layer does not decode.
    #[error(
        "MSH-18 names the character set {0:?}, which ferry cannot read; it reads ASCII (MSH-18 empty), \
         UNICODE UTF-8 and 8859/1 (ISO-8859-1): ask the sender to use one of these"
    )]
    UnknownCharset(String),
    /// A value holds bytes that are not valid in the message's character set.
    #[error("byte 0x{byte:02X} at position {position} of the value is not valid {}", invalid_hint(*.charset))]
    InvalidText {
        charset: Charset,
        byte: u8,
        /// 0-based, in the value after unescaping.
        position: usize,
    },
    /// An escape sequence that looks like one this layer knows but is malformed,
    /// or one it knows and cannot honour (a character-set switch).
    #[error("escape sequence \"{sequence}\" at byte {offset} of the value: {reason}")]
    BadEscape {
        /// The kind of sequence with its escape characters (`\X..\`), not what it holds.
        sequence: String,
        /// 0-based, in the value's raw bytes.
        offset: usize,
        reason: &'static str,
    },
    /// A value ends in MSH-2's truncation character (HL7 v2.7 on): the
    /// sender cut it short to fit its own field length.
    #[error(
        "the sender cut the value short (it ends in the truncation character {character:?} of MSH-2), so \
         the rest of it is lost; ask the sender to send the whole value"
    )]
    Truncated { character: char },
    /// A `SEG-F[R].C.S` path given to `Message::value` is not well formed.
    #[error("bad HL7 path {path:?}: {reason} (expected the form SEG-F[R].C.S, such as PID-3[2].4.1)")]
    BadPath { path: String, reason: &'static str },
}

fn invalid_hint(charset: Charset) -> &'static str {
    match charset {
        Charset::Utf8 => {
            "UTF-8, though MSH-18 says UNICODE UTF-8; a sender writing ISO-8859-1 should put 8859/1 in MSH-18"
        }
        Charset::Ascii => {
            "ASCII or UTF-8, and MSH-18 names no character set; the sender should fill MSH-18 \
             (8859/1 for ISO-8859-1, UNICODE UTF-8 for UTF-8)"
        }
        // Every byte is a Latin-1 character; kept for completeness.
        Charset::Latin1 => "ISO-8859-1",
    }
}
