//! Escape sequences and character sets: a value's raw bytes to text
//! ([`text`]) and text back to raw bytes ([`escape_into`]). This module owns
//! the choices HL7 leaves to a receiver; it does not split values, which is
//! `parse`'s job, and it is handed one value at a time.
//!
//! Reading a value:
//!
//! 1. Escape sequences are replaced by the bytes they stand for: `\F\`,
//!    `\S\`, `\T\`, `\R\`, `\E\` and `\P\` by the message's field,
//!    component, subcomponent, repetition, escape and truncation characters
//!    (written here with `\`, but always the message's own escape
//!    character), and `\Xhh..\` by the bytes `hh..`.
//! 2. The bytes are decoded by the message's character set; bytes from
//!    `\X..\` are decoded the same way, so `\XC3A9\` is "é" in a UTF-8
//!    message and `\XE9\` is "é" in an ISO-8859-1 one. ISO-8859-1 is read
//!    as Windows-1252, which differs only in 0x80 to 0x9F (see [`decode`]).
//!
//! Formatting escapes, meant for display, become plain text: `\.br\` and
//! `\.sp\` (with or without a count) a line break `\n`; `\H\` and `\N\`
//! (highlighting on and off) and every other `\.xx\` (`.in`, `.ti`, `.sk`,
//! `.ce`, `.fi`, `.nf`) nothing. Data values rarely carry them, and a
//! receiver storing names and identifiers has no display to format.
//!
//! Leniency, because senders that never escape a backslash are common:
//! an escape character with no closing one is kept as text (`C:\temp`), and
//! so is a sequence this layer does not know (`\Zxx\` local escapes, `\P\`
//! when MSH-2 has no truncation character, `\temp\`), escape characters
//! included. Errors ([`Hl7Error::BadEscape`]) are kept for sequences that
//! are clearly meant as escapes but cannot be honoured: `\X..\` that is not
//! an even number of hex digits, and `\Cxxyy\`/`\Mxxyyzz\` character-set
//! switches, whose text would otherwise be decoded in the wrong character
//! set without a word.

use std::borrow::Cow;

use super::error::Hl7Error;
use super::parse::{Charset, Delimiters, Hits};

/// What is known of a value's bytes from a pass over more of them, so
/// that [`text`] need not look again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Known {
    /// The bytes decode as they are: see [`text`].
    pub(crate) valid: bool,
    /// There is no escape character among them.
    pub(crate) plain: bool,
}

impl Known {
    /// Only whether the bytes decode as they are is known.
    pub(crate) fn valid(valid: bool) -> Known {
        Known { valid, plain: false }
    }
}

/// Decodes and unescapes one value. Borrowed when there is no escape
/// character in it and the bytes are valid as they are.
///
/// `known.valid` says the caller knows `raw` decodes as it is: it is a
/// value split from a message that was checked whole (see `parse`). Then
/// only unescaped bytes, which `\X..\` can make anything, are checked here.
/// `known.plain` says the caller found no escape character in it.
///
/// The common case, a value to borrow as it is, is kept small enough to be
/// inlined into the callers; the rest is in [`text_slow`]. Always inlined:
/// left to its own judgement, the plain release build stopped inlining it
/// into the patient mapping once that grew a little, for 4% more
/// instructions (callgrind, 20,000 messages).
#[inline(always)]
pub(crate) fn text<'a>(
    raw: &'a [u8],
    d: &Delimiters,
    charset: Charset,
    known: Known,
) -> Result<Cow<'a, str>, Hl7Error> {
    let Known { valid, plain } = known;
    debug_assert!(!plain || d.escape.is_none_or(|esc| !raw.contains(&esc)), "a plain value holds an escape");
    let escaped = !plain && d.escape.is_some_and(|esc| Hits::new(raw, [esc]).next().is_some());
    if valid && !escaped {
        debug_assert!(match charset {
            Charset::Latin1 => raw.is_ascii(),
            Charset::Ascii | Charset::Utf8 => std::str::from_utf8(raw).is_ok(),
        });
        // SAFETY: `valid` is set only for values of a message whose bytes
        // were all found to be valid UTF-8 (7-bit ASCII for ISO-8859-1), and
        // a value starts and ends next to ASCII bytes (delimiters, line ends)
        // or at the message's ends, so never inside a multi-byte character:
        // its bytes are valid UTF-8 too. The debug assertion above checks it
        // in every test, the property tests' arbitrary bytes included.
        return Ok(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(raw) }));
    }
    text_slow(raw, d, charset, escaped)
}

/// [`text`] for a value to unescape (`escaped`: it holds the escape
/// character) or to check against the character set.
#[inline(never)]
fn text_slow<'a>(
    raw: &'a [u8],
    d: &Delimiters,
    charset: Charset,
    escaped: bool,
) -> Result<Cow<'a, str>, Hl7Error> {
    // A truncation character is always escaped (`\P\`) where it is part of
    // a value: at the end, unescaped, it says the sender cut the value
    // short. What the value said after the cut is lost.
    if let Some(t) = d.truncation
        && raw.last() == Some(&t)
    {
        return Err(Hl7Error::Truncated { character: t as char });
    }
    match d.escape {
        Some(esc) if escaped => decode(Cow::Owned(unescape(raw, esc, d)?), charset),
        _ => decode(Cow::Borrowed(raw), charset),
    }
}

fn unescape(raw: &[u8], esc: u8, d: &Delimiters) -> Result<Vec<u8>, Hl7Error> {
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    // Each sequence runs from one escape character to the next, which
    // closes it: they pair off in the order they occur.
    let mut escapes = Hits::new(raw, [esc]);
    while let Some(open) = escapes.next() {
        out.extend_from_slice(&raw[pos..open]);
        let Some(close) = escapes.next() else {
            // No closing escape character: the rest is text.
            pos = open;
            break;
        };
        let whole = &raw[open..=close];
        // Named by its kind only (`\X..\`): what it holds is part of the
        // value, and values are patient data. The kinds that can be bad
        // (X, C, M) and the escape character are ASCII.
        let bad = |reason| Hl7Error::BadEscape {
            sequence: format!("{e}{}..{e}", char::from(whole[1]), e = char::from(esc)),
            offset: open,
            reason,
        };
        match &raw[open + 1..close] {
            b"F" => out.push(d.field),
            b"S" => out.push(d.component),
            // A sender whose MSH-2 stops before the subcomponent separator
            // can still escape the `&` it would have been, and `\T\`
            // cannot mean the field separator that stands in for it here.
            b"T" if d.subcomponent == d.field => out.push(b'&'),
            b"T" => out.push(d.subcomponent),
            b"R" => out.push(d.repetition),
            b"E" => out.push(esc),
            b"P" if d.truncation.is_some() => out.extend(d.truncation),
            b"H" | b"N" => {}
            [b'X', hex @ ..] => {
                if hex.is_empty() || hex.len() % 2 != 0 {
                    return Err(bad("\\X..\\ needs an even number of hex digits, two per byte"));
                }
                for pair in hex.chunks_exact(2) {
                    match (hex_digit(pair[0]), hex_digit(pair[1])) {
                        (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                        _ => return Err(bad("\\X..\\ may hold only hex digits 0-9 and A-F")),
                    }
                }
            }
            [b'C', code @ ..] if code.len() == 4 && code.iter().all(u8::is_ascii_hexdigit) => {
                return Err(bad(CHARSET_SWITCH));
            }
            [b'M', code @ ..] if matches!(code.len(), 4 | 6) && code.iter().all(u8::is_ascii_hexdigit) => {
                return Err(bad(CHARSET_SWITCH));
            }
            [b'.', format @ ..] => {
                let name = &format[..format.len().min(2)];
                if name.eq_ignore_ascii_case(b"br") || name.eq_ignore_ascii_case(b"sp") {
                    out.push(b'\n');
                }
            }
            _ => out.extend_from_slice(whole),
        }
        pos = close + 1;
    }
    out.extend_from_slice(&raw[pos..]);
    Ok(out)
}

const CHARSET_SWITCH: &str = "switching character sets inside a value is not supported; \
                              ask the sender for UNICODE UTF-8 in MSH-18";

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode(bytes: Cow<'_, [u8]>, charset: Charset) -> Result<Cow<'_, str>, Hl7Error> {
    if charset == Charset::Latin1 && !bytes.is_ascii() {
        // Read as Windows-1252, as browsers read text labelled ISO-8859-1
        // (the WHATWG Encoding Standard): the same characters, but 0x80 to
        // 0x9F are the curly quotes, dashes and Š, Ž, Œ that senders
        // labelling 8859/1 write there, where ISO-8859-1 has control codes.
        let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&bytes);
        return Ok(Cow::Owned(text.into_owned()));
    }
    // ASCII is accepted as UTF-8: see `Charset::Ascii`.
    let invalid = |bytes: &[u8], e: std::str::Utf8Error| Hl7Error::InvalidText {
        charset,
        byte: bytes[e.valid_up_to()],
        position: e.valid_up_to(),
    };
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed).map_err(|e| invalid(b, e)),
        Cow::Owned(v) => {
            String::from_utf8(v).map(Cow::Owned).map_err(|e| invalid(e.as_bytes(), e.utf8_error()))
        }
    }
}

/// Appends `value` escaped for delimiters `d`, which must have an escape
/// character. Line ends and other control characters are written as
/// `\Xhh\` (tab excepted), since raw CR, LF and the MLLP bytes would end the
/// segment or the frame; `text` reads them back as the same bytes.
pub(crate) fn escape_into(out: &mut Vec<u8>, value: &str, d: &Delimiters) {
    let esc = d.escape.expect("values are escaped only for delimiters with an escape character");
    for &b in value.as_bytes() {
        let letter = if b == d.field {
            b'F'
        } else if b == d.component {
            b'S'
        } else if b == d.subcomponent {
            b'T'
        } else if b == d.repetition {
            b'R'
        } else if b == esc {
            b'E'
        } else if Some(b) == d.truncation {
            b'P'
        } else if b < 0x20 && b != b'\t' {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[esc, b'X', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xF)], esc]);
            continue;
        } else {
            out.push(b);
            continue;
        };
        out.extend_from_slice(&[esc, letter, esc]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STD: Delimiters = Delimiters::STANDARD;

    fn utf8(raw: &[u8]) -> String {
        text(raw, &STD, Charset::Utf8, Known::default()).unwrap().into_owned()
    }

    fn err(raw: &[u8]) -> Hl7Error {
        text(raw, &STD, Charset::Utf8, Known::default()).unwrap_err()
    }

    #[test]
    fn a_value_ending_in_the_truncation_character_was_cut_short() {
        let d = Delimiters { truncation: Some(b'#'), ..STD };
        let err = text(b"Bost#", &d, Charset::Utf8, Known::default()).unwrap_err();
        assert_eq!(err, Hl7Error::Truncated { character: '#' });
        assert!(err.to_string().contains("cut the value short"), "{err}");
        assert_eq!(text(b"Bost\\P\\", &d, Charset::Utf8, Known::default()).unwrap(), "Bost#");
        assert_eq!(
            text(b"Bost#", &STD, Charset::Utf8, Known::default()).unwrap(),
            "Bost#",
            "no truncation character"
        );
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(utf8(b"\\F\\\\S\\\\T\\\\R\\\\E\\"), "|^&~\\");
        assert_eq!(utf8(b"Smith\\T\\Jones"), "Smith&Jones");
        assert_eq!(utf8(b"\\F\\start and end\\F\\"), "|start and end|");
    }

    #[test]
    fn truncation_escape() {
        let d = Delimiters { truncation: Some(b'#'), ..STD };
        assert_eq!(text(b"a\\P\\b", &d, Charset::Ascii, Known::default()).unwrap(), "a#b");
        // Without a truncation character \P\ means nothing: kept as written.
        assert_eq!(utf8(b"a\\P\\b"), "a\\P\\b");
    }

    #[test]
    fn escapes_follow_the_message_delimiters() {
        let d = Delimiters {
            field: b'#',
            component: b'@',
            repetition: b'*',
            escape: Some(b'$'),
            subcomponent: b'!',
            truncation: Some(b'%'),
        };
        assert_eq!(
            text(b"$F$$S$$T$$R$$E$$P$\\F\\", &d, Charset::Utf8, Known::default()).unwrap(),
            "#@!*$%\\F\\"
        );
        assert_eq!(text(b"$X41$", &d, Charset::Utf8, Known::default()).unwrap(), "A");
    }

    #[test]
    fn hex_escapes() {
        assert_eq!(utf8(b"a\\X0D0A\\b"), "a\r\nb");
        assert_eq!(utf8(b"\\X41\\\\x41\\"), "A\\x41\\", "lower-case x is not an escape");
        assert_eq!(utf8(b"Ren\\XC3A9\\e"), "Renée");
        assert_eq!(utf8(b"Ren\\Xc3a9\\e"), "Renée", "hex digits in either case");
        assert_eq!(text(b"Ren\\XE9\\e", &STD, Charset::Latin1, Known::default()).unwrap(), "Renée");
        // Windows-1252's right single quote, in a message labelled 8859/1.
        assert_eq!(text(b"O\x92Neil", &STD, Charset::Latin1, Known::default()).unwrap(), "O\u{2019}Neil");
        assert_eq!(text(b"O\\X92\\Neil", &STD, Charset::Latin1, Known::default()).unwrap(), "O\u{2019}Neil");
        // Hex bytes are in the message charset: a lone E9 is not UTF-8.
        assert_eq!(
            err(b"Ren\\XE9\\e"),
            Hl7Error::InvalidText { charset: Charset::Utf8, byte: 0xE9, position: 3 }
        );
        // A character split between a hex escape and raw bytes still decodes.
        assert_eq!(utf8(b"\\XC3\\\xA9"), "é");
    }

    #[test]
    fn malformed_hex_escapes_are_errors() {
        for (raw, sequence, offset) in [
            (&b"a\\X\\"[..], "\\X..\\", 1),
            (b"\\X4\\", "\\X..\\", 0),
            (b"ab\\XZZ\\", "\\X..\\", 2),
            (b"\\X4G41\\", "\\X..\\", 0),
        ] {
            match err(raw) {
                Hl7Error::BadEscape { sequence: s, offset: o, .. } => {
                    assert_eq!((s.as_str(), o), (sequence, offset), "{raw:?}")
                }
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        assert!(err(b"\\X4\\").to_string().contains("even number of hex digits"));
        let long = err(b"\\X0123456789ABCDEF0123456789ABCDEFZ\\");
        assert!(matches!(&long, Hl7Error::BadEscape { sequence, .. } if sequence == "\\X..\\"), "{long:?}");
        assert!(!long.to_string().contains("0123"), "the value stays out of the reason: {long}");
    }

    #[test]
    fn charset_switches_are_errors() {
        for raw in [&b"\\C2842\\abc"[..], b"\\M248440\\", b"\\M2484\\"] {
            assert!(err(raw).to_string().contains("switching character sets"), "{raw:?}");
        }
        // Not the shape of a switch: plain text, like any unknown sequence.
        assert_eq!(utf8(b"C:\\Clinic\\notes"), "C:\\Clinic\\notes");
    }

    #[test]
    fn formatting_escapes() {
        assert_eq!(utf8(b"one\\.br\\two\\.sp\\three\\.sp2\\four"), "one\ntwo\nthree\nfour");
        assert_eq!(utf8(b"\\H\\bold\\N\\ plain"), "bold plain");
        assert_eq!(utf8(b"\\.in+4\\a\\.ti-2\\b\\.ce\\c\\.fi\\\\.nf\\\\.sk 3\\"), "abc");
        assert_eq!(utf8(b"x\\.BR\\y"), "x\ny", "case of br ignored");
    }

    #[test]
    fn unclosed_and_unknown_sequences_are_kept() {
        assert_eq!(utf8(b"C:\\temp"), "C:\\temp");
        assert_eq!(utf8(b"trailing\\"), "trailing\\");
        assert_eq!(utf8(b"\\Zlocal\\ \\Q\\ \\\\"), "\\Zlocal\\ \\Q\\ \\\\");
        assert_eq!(utf8(b"a\\F\\b\\c"), "a|b\\c", "known sequence, then an unclosed escape");
        assert_eq!(utf8(b"\\"), "\\");
    }

    /// Sequences are found a block of bytes at a time: ones that cross a
    /// block's end, and many in a long value, pair off as in a short one.
    #[test]
    fn sequences_in_long_values() {
        assert_eq!(utf8(b"0123456789abcde\\F\\xyz"), "0123456789abcde|xyz");
        assert_eq!(
            utf8(b"0123456789abcdef\\Zq\\0123456789\\T\\ C:\\temp"),
            "0123456789abcdef\\Zq\\0123456789& C:\\temp"
        );
        let long = b"a\\S\\".repeat(20);
        assert_eq!(utf8(&long), "a^".repeat(20));
        assert_eq!(utf8(&[&long[..], b"\\"].concat()), "a^".repeat(20) + "\\");
    }

    #[test]
    fn no_escape_character_means_no_unescaping() {
        let d = Delimiters { escape: None, ..STD };
        assert!(matches!(
            text(b"a\\F\\b", &d, Charset::Utf8, Known::default()),
            Ok(Cow::Borrowed("a\\F\\b"))
        ));
    }

    #[test]
    fn borrowed_when_nothing_to_do() {
        assert!(matches!(text(b"plain", &STD, Charset::Utf8, Known::default()), Ok(Cow::Borrowed("plain"))));
        assert!(matches!(
            text("Zoë".as_bytes(), &STD, Charset::Ascii, Known::default()),
            Ok(Cow::Borrowed("Zoë"))
        ));
        assert!(matches!(
            text(b"plain", &STD, Charset::Latin1, Known::default()),
            Ok(Cow::Borrowed("plain"))
        ));
        assert!(
            matches!(text(b"Zo\xEB", &STD, Charset::Latin1, Known::default()), Ok(Cow::Owned(s)) if s == "Zoë")
        );
        assert!(matches!(text(b"a\\T\\b", &STD, Charset::Utf8, Known::default()), Ok(Cow::Owned(_))));
    }

    #[test]
    fn invalid_utf8_position_is_after_unescaping() {
        assert_eq!(
            err(b"\\F\\ok\xFF"),
            Hl7Error::InvalidText { charset: Charset::Utf8, byte: 0xFF, position: 3 }
        );
        assert_eq!(
            text(b"ok\xC3", &STD, Charset::Ascii, Known::default()).unwrap_err(),
            Hl7Error::InvalidText { charset: Charset::Ascii, byte: 0xC3, position: 2 }
        );
    }

    #[test]
    fn escape_into_round_trips() {
        let value = "a|b^c&d~e\\f\r\ng\u{b}\u{1c}\th é 東";
        let mut out = Vec::new();
        escape_into(&mut out, value, &STD);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D\\\\X0A\\g\\X0B\\\\X1C\\\th é 東"
        );
        assert_eq!(text(&out, &STD, Charset::Utf8, Known::default()).unwrap(), value);
    }
}
