//! One HL7 v2 message read in place. [`Message::parse`] reads the delimiters
//! from MSH-1 and MSH-2, the character set from MSH-18, and where each
//! segment starts and ends; nothing more. Fields, repetitions, components and
//! subcomponents are found when asked for, by scanning that segment's bytes,
//! and text is decoded only by `text()`. This module owns that addressing,
//! MSH's odd field numbering and `SEG-F[R].C.S` paths. Escapes and character
//! sets are in `escape`, finding messages in a file is in `batch`, and what a
//! field means belongs to the callers.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use memchr::{memchr, memchr_iter, memchr2};

use super::error::Hl7Error;
use super::escape::{self, Known};
use super::seg;

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// MSH fields read here. MSH numbering: MSH-1 is the field separator itself.
pub(crate) const MSH_TIMESTAMP: usize = 7;
pub(crate) const MSH_TYPE: usize = 9;
pub(crate) const MSH_CONTROL_ID: usize = 10;
pub(crate) const MSH_CHARSET: usize = 18;

/// Segments whose first two fields are their own delimiters, numbered so
/// that the separator is field 1.
pub(crate) fn is_header_id(id: &[u8]) -> bool {
    id == seg::MSH.as_bytes() || id == seg::FHS.as_bytes() || id == seg::BHS.as_bytes()
}

/// The separators and escape character of one message, read from its MSH-1
/// and MSH-2 (or a batch's FHS/BHS), never assumed. Every one is an ASCII
/// punctuation character: that keeps splitting UTF-8 bytes on them safe, as
/// no byte of a multi-byte character is ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// MSH-1, usually `|`.
    pub field: u8,
    /// First MSH-2 character, usually `^`.
    pub component: u8,
    /// Second MSH-2 character, usually `~`.
    pub repetition: u8,
    /// Third MSH-2 character, usually `\`. `None` when MSH-2 has only two
    /// characters; then nothing is unescaped.
    pub escape: Option<u8>,
    /// Fourth MSH-2 character, usually `&`. HL7 lets a sender that uses no
    /// subcomponents stop MSH-2 before it; then this is the field separator,
    /// which cannot occur inside a field, so nothing is split on it.
    pub subcomponent: u8,
    /// Fifth MSH-2 character (v2.7 and later), usually `#`; `\P\` stands for it.
    pub truncation: Option<u8>,
}

impl Delimiters {
    /// `|^~\&`, what `encode` writes.
    pub const STANDARD: Delimiters = Delimiters {
        field: b'|',
        component: b'^',
        repetition: b'~',
        escape: Some(b'\\'),
        subcomponent: b'&',
        truncation: None,
    };

    /// Reads the delimiters of a header segment (MSH, FHS or BHS) from its
    /// first line: the byte after the ID, then the field up to the next one.
    pub(crate) fn from_header(line: &[u8], id: &'static str) -> Result<Delimiters, Hl7Error> {
        let bad = |reason: String| Hl7Error::BadDelimiters { segment: id, reason };
        let field = match line.get(3) {
            None | Some(&CR) | Some(&LF) => {
                return Err(bad(format!("nothing follows {id}: the field separator ({id}-1) is missing")));
            }
            Some(&b) if !b.is_ascii_punctuation() => {
                return Err(bad(format!(
                    "the field separator ({id}-1) is {}; it must be a punctuation character such as |",
                    show(b)
                )));
            }
            Some(&b) => b,
        };
        let rest = &line[4..];
        let end = rest.iter().position(|&b| b == field || b == CR || b == LF).unwrap_or(rest.len());
        let chars = &rest[..end];
        if !(2..=5).contains(&chars.len()) {
            return Err(bad(format!(
                "{id}-2 has {} encoding characters; it needs the component, repetition, escape and \
                 subcomponent characters, usually ^~\\&",
                chars.len()
            )));
        }
        for (i, &c) in chars.iter().enumerate() {
            if !c.is_ascii_punctuation() {
                return Err(bad(format!(
                    "{id}-2 contains {}, which cannot be a delimiter: delimiters are punctuation characters",
                    show(c)
                )));
            }
            if chars[..i].contains(&c) {
                return Err(bad(format!("{id}-2 uses {} twice; each delimiter must be different", show(c))));
            }
        }
        Ok(Delimiters {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars.get(2).copied(),
            subcomponent: chars.get(3).copied().unwrap_or(field),
            truncation: chars.get(4).copied(),
        })
    }

    /// Delimiters that split nothing and unescape nothing, for MSH-1 and
    /// MSH-2, whose bytes are the delimiters themselves. CR never occurs
    /// inside them (they end at the first line end), so splitting on it
    /// always yields the whole value.
    fn inert() -> Delimiters {
        Delimiters {
            field: CR,
            component: CR,
            repetition: CR,
            escape: None,
            subcomponent: CR,
            truncation: None,
        }
    }
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() { format!("{:?}", b as char) } else { format!("byte 0x{b:02X}") }
}

/// What a pass over a message's bytes, line ends aside, found in them;
/// each kind includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seen {
    /// Printable ASCII only (0x20 to 0x7E).
    Printable,
    /// Also bytes from 0xA0 up but 0xC2: text that is not ASCII, and no
    /// control character in any character set read here.
    Text,
    /// A byte that is, or may decode to, a control character: below 0x20,
    /// 0x7F, 0x80 to 0x9F (ISO-8859-1's C1 controls, and the bytes
    /// Windows-1252 leaves undefined), or 0xC2, which starts UTF-8's C1
    /// controls; or, for the escape character `\`, an escape sequence that
    /// may stand for one (`\X..\`, `\.br\`). Also assumed when nothing is
    /// known, as for another escape character.
    Controls,
}

impl Seen {
    /// What one line's `bytes` hold, one at a time: the splitter finds it
    /// faster.
    pub(crate) fn of(bytes: &[u8]) -> Seen {
        bytes.iter().enumerate().fold(Seen::Printable, |seen, (i, &b)| {
            seen.max(match b {
                b'\\' if matches!(bytes.get(i + 1), Some(b'X' | b'.')) => Seen::Controls,
                0x20..0x7F => Seen::Printable,
                0x00..0x20 | 0x7F..0xA0 | 0xC2 => Seen::Controls,
                _ => Seen::Text,
            })
        })
    }
}

/// The character set of a message's text, from MSH-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// MSH-18 empty or `ASCII`. Strictly that allows only 7-bit bytes, but
    /// senders that leave MSH-18 empty very often write UTF-8, and ASCII is
    /// a subset of it, so valid UTF-8 is accepted and anything else is an
    /// [`Hl7Error::InvalidText`].
    Ascii,
    /// `UNICODE UTF-8`.
    Utf8,
    /// `8859/1`, ISO-8859-1: every byte is a character. Read as
    /// Windows-1252, as browsers read text labelled ISO-8859-1: senders
    /// that say 8859/1 often write Windows-1252's curly quotes and dashes
    /// in 0x80 to 0x9F, which ISO-8859-1 leaves to control codes.
    Latin1,
}

impl Charset {
    /// Reads MSH-18 (its first repetition: later ones name sets switched to
    /// with `\C..\` escapes, which are not supported). Besides the standard
    /// names `ASCII`, `UNICODE UTF-8` and `8859/1`, the spellings `UTF-8`,
    /// `UTF8`, `ISO-8859-1`, `ISO8859-1` and `LATIN1` are seen in the wild
    /// and accepted; case and surrounding spaces are ignored.
    pub fn from_msh18(value: &[u8]) -> Result<Charset, Hl7Error> {
        // The two values nearly every message carries, as they are, before
        // the general comparisons.
        match value {
            b"" => return Ok(Charset::Ascii),
            b"UNICODE UTF-8" => return Ok(Charset::Utf8),
            _ => {}
        }
        let name = value.trim_ascii();
        let is = |names: &[&str]| names.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()));
        if is(&["", "ASCII"]) {
            Ok(Charset::Ascii)
        } else if is(&["UNICODE UTF-8", "UTF-8", "UTF8"]) {
            Ok(Charset::Utf8)
        } else if is(&["8859/1", "ISO-8859-1", "ISO8859-1", "LATIN1"]) {
            Ok(Charset::Latin1)
        } else {
            Err(Hl7Error::UnknownCharset(String::from_utf8_lossy(name).into_owned()))
        }
    }

    /// The standard MSH-18 name.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Latin1 => "8859/1",
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One message, borrowing from the buffer it was found in. Parsing indexes
/// segment boundaries only; fields are split lazily.
///
/// Segment terminators may be CR, LF or CRLF, mixed; blank lines are
/// skipped. A line that does not start like a segment (three capitals or
/// digits, then the field separator or the line end) continues the segment
/// before it, line break included: some senders put raw line breaks inside
/// long text values, and cutting them off would lose the rest of the value.
/// (Splitting a file is stricter and calls most such lines junk: see
/// [`Splitter`](super::Splitter).)
pub struct Message<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    charset: Charset,
    /// Byte ranges of the segments in `raw`, terminators excluded. The first
    /// is always MSH.
    segments: Segments,
    /// `raw` was checked whole and decodes as it is: see `decodes_as_is`.
    valid: bool,
    /// No byte or escape sequence of `raw` may put a control character in a
    /// value: the splitter saw it.
    no_controls: bool,
    /// MSH's bytes, the first segment's, which the header fields are read
    /// from; and where its first fields are: the header alone reads four.
    msh_raw: &'a [u8],
    msh: MshIndex,
}

impl<'a> Message<'a> {
    /// Parses a message starting at `MSH`. Fails if the start is not MSH,
    /// MSH-1/MSH-2 are unusable or MSH-18 names an unknown character set.
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, Hl7Error> {
        let (delimiters, segments) = index(raw)?;
        Message::new(raw, delimiters, None, segments, Seen::Controls)
    }

    /// [`Message::parse`] for a caller that found the segments already, by
    /// the same rules (the splitter does, as it reads each line), the first
    /// being MSH; `seen` is what the caller saw of its bytes.
    pub(crate) fn parse_with_segments(
        raw: &'a [u8],
        segments: &SegmentIndex,
        seen: Seen,
    ) -> Result<Message<'a>, Hl7Error> {
        let delimiters = header_delimiters(raw)?;
        let segments = Segments::Inline(*segments);
        debug_assert_eq!(
            Ok((delimiters, segments.ranges().collect::<Vec<_>>())),
            index(raw).map(|(d, s)| (d, s.ranges().collect())),
            "the splitter's segments are parse's"
        );
        debug_assert!(
            raw.split(|b| [CR, LF, 0x0B, 0x1C].contains(b)).map(Seen::of).max() <= Some(seen),
            "the caller saw no worse bytes than these"
        );
        Message::new(raw, delimiters, None, segments, seen)
    }

    /// Parses a message but decodes its text as `charset` whatever MSH-18
    /// says: for a source known to mislabel its character set, or to still
    /// read a message whose MSH-18 is unknown.
    pub fn parse_with_charset(raw: &'a [u8], charset: Charset) -> Result<Message<'a>, Hl7Error> {
        let (delimiters, segments) = index(raw)?;
        Message::new(raw, delimiters, Some(charset), segments, Seen::Controls)
    }

    /// Notes where MSH's fields are and reads the character set from MSH-18
    /// unless `charset` is given. `seen`: what is known of the bytes of
    /// `raw`, line ends aside; printable ASCII decodes as itself in every
    /// character set read here.
    fn new(
        raw: &'a [u8],
        delimiters: Delimiters,
        charset: Option<Charset>,
        segments: Segments,
        seen: Seen,
    ) -> Result<Message<'a>, Hl7Error> {
        let (start, end) = segments.first();
        let msh_raw = &raw[start..end];
        let msh = MshIndex::new(msh_raw, delimiters.field);
        let charset = match charset {
            Some(charset) => charset,
            None => {
                let msh18 = msh.field(msh_raw, MSH_CHARSET).unwrap_or_else(|| {
                    Segment::new(msh_raw, delimiters, Charset::Ascii).field(MSH_CHARSET).raw()
                });
                // Its first repetition.
                let first = &msh18[..memchr(delimiters.repetition, msh18).unwrap_or(msh18.len())];
                Charset::from_msh18(first)?
            }
        };
        // A value that ends in the truncation character (HL7 v2.7's `#`, the
        // fifth character of MSH-2, at byte 8) was cut short by the sender:
        // in a message that holds one after MSH-2, each value read is looked
        // at on its own (see `escape::text`).
        let cut_values =
            delimiters.truncation.is_some_and(|t| memchr(t, raw.get(9..).unwrap_or_default()).is_some());
        let valid = (seen == Seen::Printable || decodes_as_is(raw, charset)) && !cut_values;
        let no_controls = seen < Seen::Controls;
        Ok(Message { raw, delimiters, charset, segments, valid, no_controls, msh_raw, msh })
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// Whether a byte or an escape sequence of the message may put a control
    /// character in a value (see `Seen::Controls`). True when not known,
    /// as for a message not split from a batch.
    pub fn may_hold_controls(&self) -> bool {
        !self.no_controls
    }

    /// The bytes the message was parsed from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        self.segments.ranges().map(|(start, end)| self.segment_at(start, end))
    }

    /// The first segment with this ID.
    pub fn segment(&self, id: &str) -> Option<Segment<'a>> {
        self.segments_named(id).next()
    }

    /// Every segment with this ID, in order.
    pub fn segments_named<'s>(&'s self, id: &'s str) -> impl Iterator<Item = Segment<'a>> + 's {
        // IDs are three bytes (see `starts_segment`): compared as such, a
        // segment's is not decoded and the comparison is not a call.
        let id = id.as_bytes().first_chunk::<3>().filter(|_| id.len() == 3);
        self.segments
            .ranges()
            .filter(move |&(start, _)| id.is_some_and(|id| self.raw[start..].first_chunk::<3>() == Some(id)))
            .map(|(start, end)| self.segment_at(start, end))
    }

    /// MSH-9.1 and MSH-9.2, such as `("ADT", "A28")`; empty strings where
    /// absent or not decodable. Where MSH-9.2 is empty the trigger is EVN-1,
    /// where HL7 v2.1 senders put it (MSH-9 was the message type alone).
    pub fn message_type(&self) -> (Cow<'a, str>, Cow<'a, str>) {
        // Indexed: one pass finds both components.
        let field = self.msh_field(MSH_TYPE).indexed();
        // Trimmed: "A28 " is A28.
        let text = |c: Component<'a>| match c.text().unwrap_or_default() {
            Cow::Borrowed(t) => Cow::Borrowed(super::map::trim(t)),
            Cow::Owned(t) => Cow::Owned(super::map::trim(&t).to_string()),
        };
        let (code, trigger) = (text(field.component(1)), text(field.component(2)));
        if !trigger.is_empty() || code.is_empty() {
            return (code, trigger);
        }
        let evn1 = self.segment(seg::EVN).map(|evn| text(evn.field(1).component(1)));
        (code, evn1.unwrap_or_default())
    }

    /// MSH-10, the message control ID; `None` when empty or not decodable.
    pub fn control_id(&self) -> Option<CompactString> {
        non_empty(self.msh_field(MSH_CONTROL_ID).text()).map(|t| crate::model::compact(&t))
    }

    /// MSH-7 as written (its first component, the DTM, such as
    /// `20260102153000-0500`); not interpreted, as the callers know which
    /// time zone a sender that omits the offset means.
    pub fn timestamp(&self) -> Option<String> {
        non_empty(self.msh_field(MSH_TIMESTAMP).component(1).text()).map(String::from)
    }

    /// The text at a path `SEG-F[R].C.S` in the first segment with that ID:
    /// field `F`, repetition `R` (default 1), component `C` and subcomponent
    /// `S` (both optional; without them the whole field or component), all
    /// 1-based, with MSH numbered as the standard does (MSH-9.1 is the
    /// message code). Examples: `PID-5.1.1`, `PID-3[2].4.1`, `MSH-10`.
    ///
    /// `None` when the segment or value is absent or empty, and also when
    /// the path is malformed or the text cannot be decoded: use
    /// [`Message::try_value`] where those must be reported.
    pub fn value(&self, path: &str) -> Option<Cow<'a, str>> {
        self.try_value(path).ok().flatten()
    }

    /// [`Message::value`], with malformed paths and undecodable text as errors.
    pub fn try_value(&self, path: &str) -> Result<Option<Cow<'a, str>>, Hl7Error> {
        let p = Path::parse(path)?;
        let Some(segment) = self.segment(p.segment) else { return Ok(None) };
        let field = segment.field(p.field).repetition(p.repetition);
        let text = match (p.component, p.subcomponent) {
            (None, _) => field.text()?,
            (Some(c), None) => field.component(c).text()?,
            (Some(c), Some(s)) => field.component(c).subcomponent(s).text()?,
        };
        Ok(Some(text).filter(|t| !t.is_empty()))
    }

    /// The first segment, MSH. Its fields up to MSH-18 are quicker to read
    /// with [`Message::msh_field`].
    pub(crate) fn msh(&self) -> Segment<'a> {
        Segment { valid: self.valid, ..Segment::new(self.msh_raw, self.delimiters, self.charset) }
    }

    /// The same field as `self.msh().field(n)`, found without scanning for
    /// MSH-3 to MSH-18.
    pub(crate) fn msh_field(&self, n: usize) -> Field<'a> {
        match self.msh.field(self.msh_raw, n) {
            Some(raw) => Field {
                raw,
                delimiters: self.delimiters,
                charset: self.charset,
                known: Known::valid(self.valid),
            },
            None => self.msh().field(n),
        }
    }

    fn segment_at(&self, start: usize, end: usize) -> Segment<'a> {
        Segment { valid: self.valid, ..Segment::new(&self.raw[start..end], self.delimiters, self.charset) }
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.raw.len())
            .field("segments", &self.segments.ranges().count())
            .field("delimiters", &self.delimiters)
            .field("charset", &self.charset)
            .finish()
    }
}

/// Whether every value of a message decodes without a check of its own:
/// the whole message is valid UTF-8 (for ASCII and UTF-8; see
/// [`Charset::Ascii`]) or, for ISO-8859-1, 7-bit ASCII. One pass over the
/// message costs less than a check per value read, and a value split from
/// it is valid too, because it starts and ends next to a delimiter, a line
/// end or the message's ends, all ASCII bytes, which never fall inside a
/// multi-byte character.
fn decodes_as_is(raw: &[u8], charset: Charset) -> bool {
    match charset {
        Charset::Latin1 => raw.is_ascii(),
        Charset::Ascii | Charset::Utf8 => simdutf8::basic::from_utf8(raw).is_ok(),
    }
}

/// The text; `None` when empty or not decodable.
fn non_empty(text: Result<Cow<'_, str>, Hl7Error>) -> Option<Cow<'_, str>> {
    text.ok().filter(|t| !t.is_empty())
}

/// Reads the delimiters and finds the segments. See [`Message`] for the rules.
fn index(raw: &[u8]) -> Result<(Delimiters, Segments), Hl7Error> {
    let delimiters = header_delimiters(raw)?;
    let mut segments = Segments::Inline(SegmentIndex::EMPTY);
    let mut pos = 0;
    while pos < raw.len() {
        let end = memchr2(CR, LF, &raw[pos..]).map_or(raw.len(), |i| pos + i);
        let line = &raw[pos..end];
        if starts_segment(line, delimiters.field) {
            segments.push(pos, end);
        } else if !is_blank(line) {
            segments.extend_last(end);
        }
        pos = end + 1;
    }
    Ok((delimiters, segments))
}

/// Segments a [`SegmentIndex`] holds; a typical ADT or SIU message has
/// fewer.
const NOTED_SEGMENTS: usize = 16;

/// The byte ranges of a message's segments, from its start, terminators
/// excluded, held in place: a message is parsed, mapped and dropped at a
/// rate where an allocation for its list of segments shows. The splitter
/// fills one as it reads a message's lines. Offsets are 16 bits, as nearly
/// every message is shorter than 64 KiB: messages and the items that carry
/// this index are moved, chunk by chunk, and the smaller they are the
/// less that costs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    ranges: [(u16, u16); NOTED_SEGMENTS],
    len: usize,
}

impl SegmentIndex {
    pub(crate) const EMPTY: SegmentIndex = SegmentIndex { ranges: [(0, 0); NOTED_SEGMENTS], len: 0 };

    pub(crate) fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges[..self.len]
    }

    /// Adds a segment at `start..stop`; false, leaving the index as it
    /// was, when there is no room or the offsets do not fit.
    #[inline]
    pub(crate) fn push(&mut self, start: usize, stop: usize) -> bool {
        let (Ok(start), Ok(stop)) = (u16::try_from(start), u16::try_from(stop)) else { return false };
        let Some(range) = self.ranges.get_mut(self.len) else { return false };
        *range = (start, stop);
        self.len += 1;
        true
    }

    /// Makes the last segment, if any, run to `stop`; false, leaving the
    /// index as it was, when `stop` does not fit.
    pub(crate) fn extend_last(&mut self, stop: usize) -> bool {
        let Ok(stop) = u16::try_from(stop) else { return false };
        if let Some(last) = self.ranges[..self.len].last_mut() {
            last.1 = stop;
        }
        true
    }
}

/// A message's segment ranges: in place while they fit, else on the heap.
enum Segments {
    Inline(SegmentIndex),
    Spilled(Vec<(usize, usize)>),
}

impl Segments {
    fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (inline, spilled) = match self {
            Segments::Inline(index) => (index.ranges(), &[][..]),
            Segments::Spilled(ranges) => (&[][..], &ranges[..]),
        };
        inline.iter().map(|&(start, end)| (start as usize, end as usize)).chain(spilled.iter().copied())
    }

    /// The first segment, which a parsed message always has: MSH.
    fn first(&self) -> (usize, usize) {
        self.ranges().next().unwrap_or_default()
    }

    fn push(&mut self, start: usize, stop: usize) {
        if let Segments::Inline(index) = self
            && index.push(start, stop)
        {
            return;
        }
        self.spill().push((start, stop));
    }

    fn extend_last(&mut self, stop: usize) {
        if let Segments::Inline(index) = self
            && index.extend_last(stop)
        {
            return;
        }
        if let Some(last) = self.spill().last_mut() {
            last.1 = stop;
        }
    }

    /// The ranges on the heap, moved there if they were in place.
    fn spill(&mut self) -> &mut Vec<(usize, usize)> {
        if let Segments::Inline(_) = self {
            *self = Segments::Spilled(self.ranges().collect());
        }
        match self {
            Segments::Spilled(ranges) => ranges,
            Segments::Inline(_) => unreachable!("spilled just above"),
        }
    }
}

/// MSH fields [`MshIndex`] notes: up to MSH-18, the character set, which
/// parsing reads.
const MSH_NOTED: usize = 18;

/// Where MSH's first fields are, noted in the pass over MSH that reading
/// MSH-18 takes anyway, so that the header fields read of nearly every
/// message (MSH-7, MSH-9, MSH-10) are lookups.
#[derive(Clone, Copy)]
struct MshIndex {
    /// Offsets in MSH of its first field separators, the first being MSH-1
    /// itself.
    seps: [u16; MSH_NOTED],
    /// Separators noted: fewer than `MSH_NOTED` when MSH has no more, none
    /// when it is too long for these offsets (and is then scanned).
    count: usize,
}

impl MshIndex {
    /// Notes the separators of `msh`.
    fn new(msh: &[u8], field: u8) -> MshIndex {
        let mut index = MshIndex { seps: [0; MSH_NOTED], count: 0 };
        if u16::try_from(msh.len()).is_err() {
            return index;
        }
        // A block at a time, walking each block's mask of separators.
        let (mut at, mut window) = (0, first_window(msh));
        loop {
            let mut seps = window.matches(&[field]);
            while seps != 0 {
                let Some(slot) = index.seps.get_mut(index.count) else { return index };
                *slot = (at + first(seps)) as u16;
                index.count += 1;
                seps &= seps - 1;
            }
            at += BLOCK;
            if at >= msh.len() {
                return index;
            }
            window = later_window(msh, at);
        }
    }

    /// The bytes of field `n` of `msh` (the segment noted), as
    /// `Segment::field` finds them, if noted: for MSH-3 to MSH-18.
    fn field<'a>(&self, msh: &'a [u8], n: usize) -> Option<&'a [u8]> {
        if !(3..=MSH_NOTED).contains(&n) || self.count == 0 {
            return None;
        }
        // Field n is the (n - 1)th piece after "MSH", counting from 0: it
        // starts after separator n - 2 and ends at separator n - 1, or at
        // the end when that is the last. All MSH_NOTED being noted, a piece
        // past the ones noted does not exist.
        let piece = n - 1;
        if piece > self.count {
            return Some(&[]);
        }
        let start = usize::from(self.seps[piece - 1]) + 1;
        let end = self.seps[..self.count].get(piece).map_or(msh.len(), |&end| usize::from(end));
        Some(&msh[start..end])
    }
}

/// The delimiters of a message, which must start with MSH.
fn header_delimiters(raw: &[u8]) -> Result<Delimiters, Hl7Error> {
    // Nearly every message has the standard ones, and this is what
    // `from_header` would read from them.
    if raw.starts_with(b"MSH|^~\\&|") {
        return Ok(Delimiters::STANDARD);
    }
    if !raw.starts_with(seg::MSH.as_bytes()) {
        return Err(Hl7Error::NotMsh { start: raw[..raw.len().min(8)].escape_ascii().to_string() });
    }
    Delimiters::from_header(raw, seg::MSH)
}

/// Three capitals or digits (the first a capital), then the field separator
/// or the end of the line.
pub(crate) fn starts_segment(line: &[u8], field: u8) -> bool {
    line.len() >= 3
        && line[0].is_ascii_uppercase()
        && line[1..3].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && line.get(3).is_none_or(|&b| b == field)
}

pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b' ' || b == b'\t')
}

/// The `n`th (0-based) piece of `bytes` split on `sep`; empty past the end.
fn nth_piece(bytes: &[u8], sep: u8, n: usize) -> &[u8] {
    nth_piece_until(bytes, sep, None, n)
}

/// The `n`th (0-based) piece, split on `sep`, of the part of `bytes` before
/// the first `stop`, in one pass: component `n + 1` of a field's first
/// repetition without finding the repetition first.
fn nth_piece_before(bytes: &[u8], sep: u8, stop: u8, n: usize) -> &[u8] {
    nth_piece_until(bytes, sep, Some(stop), n)
}

/// [`nth_piece`] and [`nth_piece_before`], a block at a time: the
/// separators of a block are one mask, cut off at the block's first
/// `stop`, and passing one is clearing its bit.
///
/// The first piece, which most reads ask for, has its own loop: inlined
/// where `n` is known to be 0, it is a few instructions.
#[inline(always)]
fn nth_piece_until(bytes: &[u8], sep: u8, stop: Option<u8>, n: usize) -> &[u8] {
    if n == 0 { first_piece(bytes, sep, stop) } else { later_piece(bytes, sep, stop, n) }
}

/// [`nth_piece_until`] for `n` 0.
#[inline(always)]
fn first_piece(bytes: &[u8], sep: u8, stop: Option<u8>) -> &[u8] {
    let mut at = 0;
    let mut window = first_window(bytes);
    loop {
        let ends = match stop {
            Some(stop) => window.matches(&[sep, stop]),
            None => window.matches(&[sep]),
        };
        if ends != 0 {
            return &bytes[..at + first(ends)];
        }
        at += BLOCK;
        if at >= bytes.len() {
            return bytes;
        }
        window = later_window(bytes, at);
    }
}

/// [`nth_piece_until`] for `n` above 0.
fn later_piece(bytes: &[u8], sep: u8, stop: Option<u8>, n: usize) -> &[u8] {
    let (mut left, mut start, mut at) = (n, 0, 0);
    let mut window = first_window(bytes);
    loop {
        let stops = stop.map_or(0, |stop| window.matches(&[stop]));
        let mut seps = window.matches(&[sep]) & below_first(stops);
        while left > 0 && seps != 0 {
            start = at + first(seps) + 1;
            seps &= seps - 1;
            left -= 1;
        }
        // The piece ends at the next separator or the stop, whichever is first.
        let ends = if left == 0 { seps | stops } else { stops };
        if ends != 0 {
            return if left == 0 { &bytes[start..at + first(ends)] } else { &[] };
        }
        at += BLOCK;
        if at >= bytes.len() {
            return if left == 0 { &bytes[start..] } else { &[] };
        }
        window = later_window(bytes, at);
    }
}

/// The mask bits below the lowest one set in `mask`; all when none is.
#[inline]
fn below_first(mask: u64) -> u64 {
    mask.wrapping_sub(1) & !mask
}

/// The byte the lowest bit set in `mask` (not 0) stands for.
#[inline]
fn first(mask: u64) -> usize {
    (mask.trailing_zeros() / STRIDE) as usize
}

/// Where any of the bytes `needles` occur in `bytes`, in order, found a
/// block of bytes at a time: 32 with SSE2 (part of every x86_64 CPU),
/// else eight in a `u64` (SWAR). Values are short and delimiters dense (a
/// separator every few bytes), where memchr's per-call set-up costs more
/// than it saves and a byte-at-a-time loop takes a branch per byte.
pub(crate) struct Hits<'b, const N: usize> {
    bytes: &'b [u8],
    needles: [u8; N],
    /// Offset of the block `mask` was taken from.
    base: usize,
    /// One bit per byte of that block (every `STRIDE`th bit) equal to a
    /// needle, not yet yielded.
    mask: u64,
}

#[cfg(target_arch = "x86_64")]
mod block {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8, _mm_setzero_si128,
    };

    /// Bytes compared at a time: two SSE2 registers. Measured against 16
    /// and 64, 32 takes the fewest instructions: segments and long values
    /// are scanned in half the steps of 16, and the many short values do
    /// not pay for four compares where one would do.
    pub(super) const BLOCK: usize = 32;
    /// Bits of a mask per byte.
    pub(super) const STRIDE: u32 = 1;

    /// A block of bytes of a value, to take masks from: see [`first_window`]
    /// and [`later_window`].
    ///
    /// Held in registers and loaded from the value's own bytes, never
    /// copied to a padded block first: a load that spans several stores
    /// made just before it cannot take its bytes from them, and waits for
    /// them to reach the cache. In the profile-guided build, about 3% of
    /// parse-and-map's time samples (perf, cpu-clock) fell on reading back
    /// such a copy of a 17 to 31 byte value: a cost no instruction count
    /// shows.
    #[derive(Clone, Copy)]
    pub(super) struct Window {
        low: __m128i,
        high: __m128i,
        /// Where the bytes of `high` start in the block: 16, or for a value
        /// of 16 to 31 bytes, its length less 16 (`high` is its last 16).
        high_at: u32,
        /// Mask bits to keep: padding may equal a needle.
        keep: u64,
        /// Mask bits to drop at the bottom: a last block that overlaps the
        /// one before starts before the offset asked for.
        shift: u32,
    }

    impl Window {
        /// One bit per byte equal to one of `needles`.
        #[inline]
        pub(super) fn matches<const N: usize>(&self, needles: &[u8; N]) -> u64 {
            // SAFETY: SSE2 is part of every x86_64 CPU (the build enables it
            // for the whole crate); these work on registers only.
            unsafe {
                let (low, high) =
                    needles.iter().fold((_mm_setzero_si128(), _mm_setzero_si128()), |(l, h), &n| {
                        let n = _mm_set1_epi8(n as i8);
                        (
                            _mm_or_si128(l, _mm_cmpeq_epi8(self.low, n)),
                            _mm_or_si128(h, _mm_cmpeq_epi8(self.high, n)),
                        )
                    });
                let (low, high) =
                    (u64::from(_mm_movemask_epi8(low) as u16), u64::from(_mm_movemask_epi8(high) as u16));
                ((low | high << self.high_at) & self.keep) >> self.shift
            }
        }
    }

    /// Sixteen bytes from `bytes` at `at`, which must have that many.
    #[inline]
    fn load(bytes: &[u8], at: usize) -> __m128i {
        let bytes: &[u8; 16] = bytes[at..].first_chunk().expect("sixteen bytes from `at`");
        // SAFETY: `bytes` is 16 readable bytes, and `loadu` reads them from
        // any alignment.
        unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
    }

    /// The first block of `bytes`. A value of 16 to 31 bytes is read as its
    /// first 16 and its last 16, which overlap; a shorter one is padded
    /// with zeros in registers.
    #[inline]
    pub(super) fn first_window(bytes: &[u8]) -> Window {
        let len = bytes.len();
        if len >= 16 {
            let high_at = len.min(BLOCK) - 16;
            return Window {
                low: load(bytes, 0),
                high: load(bytes, high_at),
                high_at: high_at as u32,
                keep: u64::MAX,
                shift: 0,
            };
        }
        let (low, high) = super::short(bytes);
        // SAFETY: SSE2, as above; registers only.
        let low = unsafe { _mm_set_epi64x(high as i64, low as i64) };
        // SAFETY: as above.
        let high = unsafe { _mm_setzero_si128() };
        Window { low, high, high_at: 16, keep: (1 << len) - 1, shift: 0 }
    }

    /// The block at `at` (below `bytes.len()`), or where fewer bytes are
    /// left, the last block, its mask shifted down. Only for `bytes` a
    /// block long at least, whose first block is read by [`first_window`].
    #[inline]
    pub(super) fn later_window(bytes: &[u8], at: usize) -> Window {
        let from = at.min(bytes.len().saturating_sub(BLOCK));
        Window {
            low: load(bytes, from),
            high: load(bytes, from + 16),
            high_at: 16,
            keep: u64::MAX,
            shift: (at - from) as u32,
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod block {
    /// Bytes compared at a time.
    pub(super) const BLOCK: usize = 8;
    /// Bits of a mask per byte: the high bit of each.
    pub(super) const STRIDE: u32 = 8;

    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

    /// A block of bytes of a value, as a word, to take masks from: see
    /// [`first_window`] and [`later_window`].
    #[derive(Clone, Copy)]
    pub(super) struct Window {
        word: u64,
        /// Mask bits to keep: padding may equal a needle.
        keep: u64,
        /// Mask bits to drop at the bottom: a last block that overlaps the
        /// one before starts before the offset asked for.
        shift: u32,
    }

    impl Window {
        /// The high bit of each byte equal to one of `needles`.
        #[inline]
        pub(super) fn matches<const N: usize>(&self, needles: &[u8; N]) -> u64 {
            let mut mask = 0;
            for &needle in needles {
                // Exact (no false positives): the high bit of a byte of `x` is
                // set by the addition when its low seven bits are not all zero,
                // and by `x` itself when its high bit is.
                let x = self.word ^ (ONES * u64::from(needle));
                mask |= !(((x & LOW7) + LOW7) | x | LOW7);
            }
            (mask & self.keep) >> self.shift
        }
    }

    /// The first block of `bytes`: a value shorter than a block is padded
    /// with zeros (see [`short`](super::short)).
    #[inline]
    pub(super) fn first_window(bytes: &[u8]) -> Window {
        if let Some(block) = bytes.first_chunk::<BLOCK>() {
            return Window { word: u64::from_le_bytes(*block), keep: u64::MAX, shift: 0 };
        }
        // Shorter than a block, the value is all in the first word.
        let (word, _) = super::short(bytes);
        Window { word, keep: (1 << (STRIDE as usize * bytes.len())) - 1, shift: 0 }
    }

    /// The block at `at` (below `bytes.len()`), or where fewer bytes are
    /// left, the last block, its mask shifted down. Only for `bytes` a
    /// block long at least, whose first block is read by [`first_window`].
    #[inline]
    pub(super) fn later_window(bytes: &[u8], at: usize) -> Window {
        let from = at.min(bytes.len().saturating_sub(BLOCK));
        let block = bytes[from..].first_chunk().expect("a block from `from`");
        Window { word: u64::from_le_bytes(*block), keep: u64::MAX, shift: STRIDE * (at - from) as u32 }
    }
}

use block::{BLOCK, STRIDE, first_window, later_window};

/// `bytes`, shorter than 16, followed by zeros, as two little-endian
/// words. Read as its first and last `w` bytes, for the smallest power
/// of two `w` with `len <= 2w`: two loads where copying a byte at a time
/// takes a branch per byte.
#[inline]
fn short(bytes: &[u8]) -> (u64, u64) {
    fn ends<const W: usize>(bytes: &[u8]) -> (u64, u64) {
        let word = |piece: Option<&[u8; W]>| {
            let mut word = [0; 8];
            word[..W].copy_from_slice(piece.map_or(&[0; W], |p| p));
            u64::from_le_bytes(word)
        };
        (word(bytes.first_chunk()), word(bytes.last_chunk()))
    }
    let len = bytes.len();
    let (w, (first, last)) = match len {
        0 => return (0, 0),
        1..=2 => (1, ends::<1>(bytes)),
        3..=4 => (2, ends::<2>(bytes)),
        5..=8 => (4, ends::<4>(bytes)),
        _ => (8, ends::<8>(bytes)),
    };
    // `last` holds bytes `len - w..len`; shifted down by `2w - len` bytes
    // it holds bytes `w..len` and then zeros, which go right after `first`.
    let last = last >> (8 * (2 * w - len));
    if w == 8 { (first, last) } else { (first | last << (8 * w), 0) }
}

impl<'b, const N: usize> Hits<'b, N> {
    pub(crate) fn new(bytes: &'b [u8], needles: [u8; N]) -> Hits<'b, N> {
        Hits { bytes, needles, base: 0, mask: first_window(bytes).matches(&needles) }
    }
}

impl<const N: usize> Iterator for Hits<'_, N> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += BLOCK;
            if self.base >= self.bytes.len() {
                return None;
            }
            self.mask = later_window(self.bytes, self.base).matches(&self.needles);
        }
        let at = self.base + first(self.mask);
        self.mask &= self.mask - 1;
        Some(at)
    }
}

/// 1-based piece; piece 0 is empty.
fn piece(bytes: &[u8], sep: u8, n: usize) -> &[u8] {
    n.checked_sub(1).map_or(&[][..], |i| nth_piece(bytes, sep, i))
}

/// Every piece of `bytes` split on `sep`: none for empty bytes, the bytes
/// themselves when there is no separator. The separators are found a block
/// at a time, by [`Hits`].
fn pieces(bytes: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut seps = Hits::new(bytes, [sep]);
    // Where the next piece starts; `None` once the last was given.
    let mut start = (!bytes.is_empty()).then_some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let end = seps.next();
        start = end.map(|end| end + 1);
        Some(&bytes[from..end.unwrap_or(bytes.len())])
    })
}

/// One segment of a message.
#[derive(Clone, Copy)]
pub struct Segment<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    charset: Charset,
    /// MSH, FHS or BHS: fields 1 and 2 are the delimiters.
    header: bool,
    /// The message this segment is part of decodes as it is (checked whole
    /// by `Message::parse`: see `decodes_as_is`), so values split from it
    /// skip their own check.
    valid: bool,
}

impl<'a> Segment<'a> {
    /// `raw` must start with a segment ID, as [`starts_segment`] checks.
    pub(crate) fn new(raw: &'a [u8], delimiters: Delimiters, charset: Charset) -> Segment<'a> {
        let header = raw.get(3) == Some(&delimiters.field) && is_header_id(&raw[..3]);
        Segment { raw, delimiters, charset, header, valid: false }
    }

    /// The three-character ID, such as `PID`.
    pub fn id(&self) -> &'a str {
        // The ID was checked to be ASCII when the segment was found.
        std::str::from_utf8(&self.raw[..self.raw.len().min(3)]).unwrap_or_default()
    }

    /// The segment's bytes, ID included, terminator excluded.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Field `n`, numbered as HL7 does: `field(3)` of a PID is PID-3. In MSH
    /// (and FHS, BHS) field 1 is the field separator and field 2 the
    /// encoding characters, both read literally. Field 0 and fields past
    /// the end are empty.
    pub fn field(&self, n: usize) -> Field<'a> {
        let sep = self.delimiters.field;
        let (raw, delimiters) = match (self.header, n) {
            (_, 0) => (&[][..], self.delimiters),
            (true, 1) => (&self.raw[3..4], Delimiters::inert()),
            (true, 2) => (nth_piece(self.raw, sep, 1), Delimiters::inert()),
            (true, n) => (nth_piece(self.raw, sep, n - 1), self.delimiters),
            (false, n) => (nth_piece(self.raw, sep, n), self.delimiters),
        };
        Field { raw, delimiters, charset: self.charset, known: Known::valid(self.valid) }
    }

    /// This segment with its field boundaries indexed.
    ///
    /// Only field separators (and escape characters) are noted. Noting the
    /// component and repetition separators of the first 512 bytes too, so
    /// that `Field::indexed` need not pass over a PID field's bytes again,
    /// took more instructions than it saved: 340.1M against 324.4M for
    /// 20,000 messages (callgrind, plain release build). Two more masks a
    /// block cost about 300 instructions a PID, and building an
    /// `IndexedField` from them hardly less than from its own bytes.
    pub fn indexed(&self) -> IndexedSegment<'a> {
        let mut index = IndexedSegment {
            segment: *self,
            bounds: [(0, 0); INDEXED],
            count: 0,
            scanned: INDEXED,
            escaped: u64::MAX,
        };
        // Segments longer than u32 offsets allow are left to scanning.
        if u32::try_from(self.raw.len()).is_err() {
            index.scanned = 0;
            return index;
        }
        // A block at a time, field separators one mask and escape characters
        // another, so that values of a field without one are not searched
        // for it when read. Without an escape character that mask is empty.
        let d = self.delimiters;
        let raw = self.raw;
        let (esc, esc_bits) = match d.escape {
            Some(esc) => (esc, u64::MAX),
            None => (d.field, 0),
        };
        let (mut at, mut window) = (0, first_window(raw));
        let mut seps = window.matches(&[d.field]);
        while seps == 0 {
            at += BLOCK;
            if at >= raw.len() {
                return index;
            }
            window = later_window(raw, at);
            seps = window.matches(&[d.field]);
        }
        // Fields start after the first separator; escape characters before
        // it, in the segment ID, count for nothing.
        let mut from = at + first(seps) + 1;
        let mut escapes = window.matches(&[esc]) & esc_bits & !below_first(seps);
        seps &= seps - 1;
        let (mut count, mut escaped) = (0, 0u64);
        loop {
            // Rare: the field each escape character is in, counted by the
            // separators before it in this block.
            while escapes != 0 {
                let piece = count + (seps & below_first(escapes)).count_ones() as usize;
                if piece < INDEXED {
                    escaped |= 1 << piece;
                }
                escapes &= escapes - 1;
            }
            while seps != 0 {
                let end = at + first(seps);
                index.bounds[count] = (from as u32, end as u32);
                count += 1;
                if count == INDEXED {
                    index.count = count;
                    index.escaped = escaped;
                    return index;
                }
                from = end + 1;
                seps &= seps - 1;
            }
            at += BLOCK;
            if at >= raw.len() {
                break;
            }
            window = later_window(raw, at);
            seps = window.matches(&[d.field]);
            escapes = window.matches(&[esc]) & esc_bits;
        }
        index.bounds[count] = (from as u32, raw.len() as u32);
        index.count = count + 1;
        index.escaped = escaped;
        index
    }

    /// How many fields the segment has (the last may be empty, as in `PID|1|`).
    pub fn field_count(&self) -> usize {
        let separators = memchr_iter(self.delimiters.field, self.raw).count();
        // In a header the first separator is itself MSH-1.
        if self.header { separators + 1 } else { separators }
    }

    /// Fields 1 to [`Segment::field_count`], in one pass.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + use<'a> {
        let Segment { raw, delimiters, charset, header, valid } = *self;
        let mut rest = raw.split(move |&b| b == delimiters.field).skip(1);
        let mut head = [None, None];
        if header {
            let known = Known::valid(valid);
            let literal = |raw| Field { raw, delimiters: Delimiters::inert(), charset, known };
            head = [Some(literal(&raw[3..4])), Some(literal(rest.next().unwrap_or_default()))];
        }
        let known = Known::valid(valid);
        head.into_iter().flatten().chain(rest.map(move |raw| Field { raw, delimiters, charset, known }))
    }
}

/// Fields a [`Segment::indexed`] records; later ones are found by scanning.
const INDEXED: usize = 48;

/// A segment whose field boundaries were found in one pass, for a caller
/// that reads many of its fields: [`IndexedSegment::field`] is then a
/// lookup where [`Segment::field`] scans from the segment's start.
#[derive(Clone, Copy)]
pub struct IndexedSegment<'a> {
    segment: Segment<'a>,
    /// `bounds[i]` is the byte range in the segment of the `i + 1`th piece
    /// split on the field separator (`i + 1`th field, but see `field`).
    bounds: [(u32, u32); INDEXED],
    /// Fields recorded; `INDEXED` when there may be more.
    count: usize,
    /// Pieces from this one on are found by scanning: `INDEXED`, or 0 when
    /// the segment was too long to index.
    scanned: usize,
    /// Bit `i`: piece `i` may hold the escape character.
    escaped: u64,
}

impl<'a> IndexedSegment<'a> {
    pub fn segment(&self) -> Segment<'a> {
        self.segment
    }

    /// The same field as [`Segment::field`] gives.
    pub fn field(&self, n: usize) -> Field<'a> {
        let s = &self.segment;
        // The pieces after the first separator are fields 1, 2, ..., or in
        // a header, where that separator is itself field 1, fields 2, 3, ...
        // Fields 1 and 2 of a header are read literally, as `field` does.
        let piece = match (s.header, n) {
            (_, 0) | (true, 1 | 2) => return s.field(n),
            (true, n) => n - 2,
            (false, n) => n - 1,
        };
        if piece >= self.scanned {
            return s.field(n);
        }
        let raw = match self.bounds[..self.count].get(piece) {
            Some(&(start, end)) => &s.raw[start as usize..end as usize],
            None => &[],
        };
        // A field the indexing pass found no escape character in is read
        // without looking for one again.
        let plain = piece < 64 && self.escaped & (1 << piece) == 0;
        Field { raw, delimiters: s.delimiters, charset: s.charset, known: Known { valid: s.valid, plain } }
    }
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment").field("id", &self.id()).field("len", &self.raw.len()).finish()
    }
}

/// One field: its raw bytes, with what is needed to split and decode them.
#[derive(Clone, Copy)]
pub struct Field<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    charset: Charset,
    /// What is known of its bytes from passes over more of them.
    known: Known,
}

impl<'a> Field<'a> {
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// `""`: HL7's explicit null, which tells the receiver to delete the
    /// value it holds. Not empty, and its text is two quote marks; callers
    /// that update records must check for it.
    pub fn is_null(&self) -> bool {
        self.raw == b"\"\""
    }

    /// The raw bytes of the whole field, all repetitions, still escaped.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the field holds anything but separators, spaces and HL7's
    /// null (`""`): a repetition written `^^^` says nothing.
    pub fn has_value(&self) -> bool {
        let d = &self.delimiters;
        !self.is_null()
            && self.raw.iter().any(|&b| b != d.component && b != d.subcomponent && b != b' ' && b != b'\t')
    }

    /// Whether the field says anything about its value: it holds one, or
    /// HL7's null (`""`), which says the value is gone. An empty field (or
    /// one of separators and spaces) says nothing: HL7 has the receiver keep
    /// what it holds.
    pub fn is_said(&self) -> bool {
        self.is_null() || self.has_value()
    }

    /// Each repetition as a field: none for an empty field, the field itself
    /// when it does not repeat, and empty ones where the sender left a gap.
    pub fn repetitions(&self) -> impl Iterator<Item = Field<'a>> + use<'a> {
        let Field { raw, delimiters, charset, known } = *self;
        pieces(raw, delimiters.repetition).map(move |raw| Field { raw, delimiters, charset, known })
    }

    /// Repetition `n`, 1-based; empty past the end.
    pub fn repetition(&self, n: usize) -> Field<'a> {
        Field { raw: piece(self.raw, self.delimiters.repetition, n), ..*self }
    }

    /// Component `n` (1-based) of the first repetition; empty past the end.
    pub fn component(&self, n: usize) -> Component<'a> {
        let d = self.delimiters;
        let raw =
            n.checked_sub(1).map_or(&[][..], |i| nth_piece_before(self.raw, d.component, d.repetition, i));
        Component { raw, delimiters: d, charset: self.charset, known: self.known }
    }

    /// This field with the component boundaries of its first repetition
    /// found in one pass, for a caller that reads several components:
    /// [`IndexedField::component`] is then a lookup where
    /// [`Field::component`] scans from the field's start.
    ///
    /// Noting here also which components hold a subcomponent separator or
    /// an escape character, so that `subcomponent(1)` and `text()` need
    /// not look, cost more than it saved: 341.8M against 324.4M
    /// instructions for 20,000 messages (callgrind, plain release build).
    pub fn indexed(&self) -> IndexedField<'a> {
        let mut index = IndexedField { field: *self, ends: [0; COMPONENTS], count: 0, complete: false };
        // Fields longer than u16 offsets allow are left to scanning.
        if u16::try_from(self.raw.len()).is_err() {
            return index;
        }
        // A block at a time: its component separators are one mask, cut off
        // at its first repetition separator, where the first repetition ends.
        let d = self.delimiters;
        let raw = self.raw;
        let (mut at, mut window) = (0, first_window(raw));
        loop {
            let reps = window.matches(&[d.repetition]);
            let mut seps = window.matches(&[d.component]) & below_first(reps);
            while seps != 0 {
                if index.count == COMPONENTS {
                    return index;
                }
                index.ends[index.count] = (at + first(seps)) as u16;
                index.count += 1;
                seps &= seps - 1;
            }
            let next = at + BLOCK;
            if reps != 0 || next >= raw.len() {
                if index.count < COMPONENTS {
                    let end = if reps != 0 { at + first(reps) } else { raw.len() };
                    index.ends[index.count] = end as u16;
                    index.count += 1;
                    index.complete = true;
                }
                return index;
            }
            at = next;
            window = later_window(raw, at);
        }
    }

    /// The components of the first repetition: none when it is empty.
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + use<'a> {
        let Field { raw, delimiters, charset, known } = *self;
        let first = nth_piece(raw, delimiters.repetition, 0);
        pieces(first, delimiters.component).map(move |raw| Component { raw, delimiters, charset, known })
    }

    /// The first repetition decoded and unescaped, separators inside it
    /// included as written (`Smith^John`). Borrowed when there is nothing
    /// to unescape and the bytes are valid as they are.
    ///
    /// Escapes become the characters they stand for (`\F\ \S\ \T\ \R\
    /// \E\ \P\`, using this message's delimiters), and `\Xhh..\` the bytes
    /// `hh..`, which are then decoded by the message's character set like
    /// the rest (`\XC3A9\` is "é" in UTF-8, `\XE9\` in ISO-8859-1).
    /// Formatting escapes become plain text: `\.br\` and `\.sp\` a line
    /// break `\n`; `\H\`, `\N\` and other `\.xx\` nothing. An escape
    /// character with no closing one, or a sequence not known (`\Zxx\`),
    /// is kept as written, since senders that never escape a backslash are
    /// common. Errors: bytes invalid in the character set
    /// ([`Hl7Error::InvalidText`]), and `\X..\` that is not hex or a
    /// `\Cxxyy\`/`\Mxxyyzz\` character-set switch ([`Hl7Error::BadEscape`]).
    pub fn text(&self) -> Result<Cow<'a, str>, Hl7Error> {
        let raw = nth_piece(self.raw, self.delimiters.repetition, 0);
        escape::text(raw, &self.delimiters, self.charset, self.known)
    }
}

/// Components a [`Field::indexed`] records; later ones are found by scanning.
const COMPONENTS: usize = 16;

/// A field whose first repetition's component boundaries were found in one
/// pass: see [`Field::indexed`].
#[derive(Clone, Copy)]
pub struct IndexedField<'a> {
    field: Field<'a>,
    /// `ends[n - 1]` is where component `n` ends in the field; it starts
    /// just after the end of the one before, or at 0.
    ends: [u16; COMPONENTS],
    /// Components recorded.
    count: usize,
    /// Whether those are all the first repetition has.
    complete: bool,
}

impl<'a> IndexedField<'a> {
    pub fn field(&self) -> Field<'a> {
        self.field
    }

    /// The same component as [`Field::component`] gives.
    #[inline]
    pub fn component(&self, n: usize) -> Component<'a> {
        let f = &self.field;
        let raw = match n.checked_sub(1) {
            None => &[][..],
            Some(i) if i < self.count => {
                let start = if i == 0 { 0 } else { usize::from(self.ends[i - 1]) + 1 };
                &f.raw[start..usize::from(self.ends[i])]
            }
            Some(_) if self.complete => &[][..],
            Some(_) => return f.component(n),
        };
        Component { raw, delimiters: f.delimiters, charset: f.charset, known: f.known }
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field").field("len", &self.raw.len()).finish_non_exhaustive()
    }
}

/// One component of a field's repetition.
#[derive(Clone, Copy)]
pub struct Component<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    charset: Charset,
    /// What is known of its bytes from passes over more of them.
    known: Known,
}

impl<'a> Component<'a> {
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The raw bytes, still escaped, subcomponent separators included.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Subcomponent `m`, 1-based; empty past the end.
    #[inline]
    pub fn subcomponent(&self, m: usize) -> SubComponent<'a> {
        SubComponent {
            raw: piece(self.raw, self.delimiters.subcomponent, m),
            delimiters: self.delimiters,
            charset: self.charset,
            known: self.known,
        }
    }

    /// The subcomponents: none when the component is empty.
    pub fn subcomponents(&self) -> impl Iterator<Item = SubComponent<'a>> + use<'a> {
        let Component { raw, delimiters, charset, known } = *self;
        pieces(raw, delimiters.subcomponent).map(move |raw| SubComponent { raw, delimiters, charset, known })
    }

    /// The whole component decoded and unescaped, as [`Field::text`].
    #[inline]
    pub fn text(&self) -> Result<Cow<'a, str>, Hl7Error> {
        escape::text(self.raw, &self.delimiters, self.charset, self.known)
    }
}

impl fmt::Debug for Component<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Component").field("len", &self.raw.len()).finish_non_exhaustive()
    }
}

/// One subcomponent of a component.
#[derive(Clone, Copy)]
pub struct SubComponent<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    charset: Charset,
    /// What is known of its bytes from passes over more of them.
    known: Known,
}

impl<'a> SubComponent<'a> {
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The raw bytes, still escaped.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Decoded and unescaped, as [`Field::text`].
    #[inline]
    pub fn text(&self) -> Result<Cow<'a, str>, Hl7Error> {
        escape::text(self.raw, &self.delimiters, self.charset, self.known)
    }
}

impl fmt::Debug for SubComponent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubComponent").field("len", &self.raw.len()).finish_non_exhaustive()
    }
}

/// A parsed `SEG-F[R].C.S` path.
#[derive(Debug, PartialEq, Eq)]
struct Path<'p> {
    segment: &'p str,
    field: usize,
    repetition: usize,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl<'p> Path<'p> {
    fn parse(path: &'p str) -> Result<Path<'p>, Hl7Error> {
        let bad = |reason| Hl7Error::BadPath { path: path.to_string(), reason };
        let (segment, rest) = path.split_once('-').ok_or_else(|| bad("no '-' after the segment ID"))?;
        if !starts_segment(segment.as_bytes(), b'-') || segment.len() != 3 {
            return Err(bad("the segment ID must be three capital letters or digits"));
        }
        let (field, dotted) = match rest.split_once('.') {
            Some((f, d)) => (f, Some(d)),
            None => (rest, None),
        };
        let (field, repetition) = match field.split_once('[') {
            Some((f, r)) => (f, Some(r.strip_suffix(']').ok_or_else(|| bad("'[' without a closing ']'"))?)),
            None => (field, None),
        };
        let number = |s: &str| match s.parse::<usize>() {
            Ok(0) => Err(bad("numbers start at 1")),
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad("expected a number")),
        };
        let mut parts = dotted.into_iter().flat_map(|d| d.split('.'));
        let component = parts.next().map(number).transpose()?;
        let subcomponent = parts.next().map(number).transpose()?;
        if parts.next().is_some() {
            return Err(bad("more than a component and a subcomponent after the field"));
        }
        Ok(Path {
            segment,
            field: number(field)?,
            repetition: repetition.map(number).transpose()?.unwrap_or(1),
            component,
            subcomponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"MSH|^~\\&|EHR|CLINIC|FERRY|PRACTICE|20260102153000-0500||ADT^A28^ADT_A05|MSG0001|P|2.5.1||||||UNICODE UTF-8\r\
EVN|A28|20260102153000\r\
PID|1||12345^^^EHR^MR~998877^^^SSA^SS||Doe^Jane^Q||19800101|F|||1 Main St^^Springfield^MA^01101\r\
PV1|1|O\r";

    fn parse(raw: &[u8]) -> Message<'_> {
        Message::parse(raw).unwrap()
    }

    fn text(f: Result<Cow<'_, str>, Hl7Error>) -> String {
        f.unwrap().into_owned()
    }

    /// HL7 v2.1 put the trigger event in EVN-1 alone; MSH-9.2 says it where
    /// both are there.
    #[test]
    fn the_trigger_is_evn_1_when_msh_9_has_none() {
        let types = |text: &str| {
            let (code, trigger) = parse(text.as_bytes()).message_type();
            (code.into_owned(), trigger.into_owned())
        };
        let v21 = "MSH|^~\\&|EHR|C|F|P|20260102||ADT|1|P|2.1\rEVN|A08|20260102\rPID|1||E1\r";
        let pair = |code: &str, trigger: &str| (code.to_string(), trigger.to_string());
        assert_eq!(types(v21), pair("ADT", "A08"));
        assert_eq!(types(&v21.replace("ADT|1", "ADT^A31|1")), pair("ADT", "A31"));
        assert_eq!(types(&v21.replace("EVN|A08", "EVN|")), pair("ADT", ""));
        assert_eq!(types(&v21.replace("\rEVN|A08|20260102", "")), pair("ADT", ""));
        assert_eq!(types(&v21.replace("||ADT|1", "|||1")), pair("", ""), "no type, no trigger");
    }

    #[test]
    fn reads_msh_fields_with_msh_numbering() {
        let m = parse(ADT);
        let msh = m.segment("MSH").unwrap();
        assert_eq!(msh.field(1).raw(), b"|");
        assert_eq!(msh.field(2).raw(), b"^~\\&");
        assert_eq!(text(msh.field(2).text()), "^~\\&", "MSH-2 is read literally, not unescaped");
        assert_eq!(msh.field(2).components().count(), 1, "nor split");
        assert_eq!(msh.field(3).raw(), b"EHR");
        assert_eq!(msh.field(7).raw(), b"20260102153000-0500");
        assert_eq!(msh.field(9).raw(), b"ADT^A28^ADT_A05");
        assert_eq!(msh.field(10).raw(), b"MSG0001");
        assert_eq!(msh.field(18).raw(), b"UNICODE UTF-8");
        assert_eq!(msh.field_count(), 18);
        assert_eq!(msh.fields().count(), 18);
        assert_eq!(m.message_type(), ("ADT".into(), "A28".into()));
        assert_eq!(m.control_id().as_deref(), Some("MSG0001"));
        assert_eq!(m.timestamp().as_deref(), Some("20260102153000-0500"));
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(*m.delimiters(), Delimiters::STANDARD);
        assert_eq!(m.value("MSH-12").as_deref(), Some("2.5.1"));
        assert_eq!(m.value("MSH-1").as_deref(), Some("|"));
    }

    #[test]
    fn fields_iterator_matches_field_by_number() {
        let m = parse(ADT);
        for s in m.segments() {
            let by_iter: Vec<&[u8]> = s.fields().map(|f| f.raw()).collect();
            let by_number: Vec<&[u8]> = (1..=s.field_count()).map(|n| s.field(n).raw()).collect();
            assert_eq!(by_iter, by_number, "{}", s.id());
        }
    }

    #[test]
    fn indexed_fields_match_scanned_ones() {
        // 60 fields, past what the index records, some longer than the
        // short-value loop handles.
        let long = "x^".repeat(40);
        let fields: Vec<String> =
            (1..=60).map(|i| if i % 7 == 0 { long.clone() } else { i.to_string() }).collect();
        let text = format!("MSH|^~\\&|A\rZZZ|{}\rPV1\r", fields.join("|"));
        let m = parse(text.as_bytes());
        for s in m.segments() {
            let indexed = s.indexed();
            for n in 0..=s.field_count() + 2 {
                assert_eq!(indexed.field(n).raw(), s.field(n).raw(), "{}-{n}", s.id());
            }
        }
        let zzz = m.segment("ZZZ").unwrap().indexed();
        assert_eq!(zzz.field(59).raw(), b"59");
        assert_eq!(zzz.field(14).component(40).raw(), b"x");
        assert_eq!(zzz.field(14).component(41).raw(), b"");
        assert_eq!(zzz.field(14).component(42).raw(), b"", "past the end");
        assert_eq!(zzz.field(61).raw(), b"");
    }

    #[test]
    fn indexed_components_match_scanned_ones() {
        // 20 components, past what the index records, then a repetition.
        let comps: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
        let text = format!("MSH|^~\\&|A\rZZZ|{}~x^y|^|a^^b||~^c\r", comps.join("^"));
        let m = parse(text.as_bytes());
        let zzz = m.segment("ZZZ").unwrap();
        for f in zzz.fields() {
            let indexed = f.indexed();
            for n in 0..25 {
                assert_eq!(indexed.component(n).raw(), f.component(n).raw(), "{:?} {n}", f.raw());
            }
        }
        assert_eq!(zzz.field(1).indexed().component(20).raw(), b"20");
        assert_eq!(zzz.field(1).indexed().component(21).raw(), b"", "the next repetition is not read");
        assert_eq!(zzz.field(3).indexed().component(3).raw(), b"b");
    }

    proptest::proptest! {
        /// The word-at-a-time search finds what a byte-at-a-time one does.
        #[test]
        fn hits_are_every_needle_in_order(
            bytes in proptest::collection::vec(proptest::sample::select(b"|^~ab\x00\x80\xff".to_vec()), 0..70),
            skip in 0usize..8,
        ) {
            let bytes = &bytes[skip.min(bytes.len())..];
            let naive: Vec<usize> = (0..bytes.len()).filter(|&i| matches!(bytes[i], b'|' | b'^')).collect();
            proptest::prop_assert_eq!(Hits::new(bytes, [b'|', b'^']).collect::<Vec<_>>(), naive);
            let naive: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == 0).collect();
            proptest::prop_assert_eq!(Hits::new(bytes, [0]).collect::<Vec<_>>(), naive);
        }

        /// Pieces found a block at a time are the pieces `split` finds, for
        /// values short and long, separators dense and sparse.
        #[test]
        fn pieces_are_what_split_finds(
            bytes in proptest::collection::vec(proptest::sample::select(b"|^~ab\x00".to_vec()), 0..100),
            n in 0usize..40,
        ) {
            let split = |bytes: &[u8], sep: u8, n: usize| bytes.split(|&b| b == sep).nth(n).unwrap_or_default().to_vec();
            let all: Vec<&[u8]> = if bytes.is_empty() { vec![] } else { bytes.split(|&b| b == b'^').collect() };
            proptest::prop_assert_eq!(pieces(&bytes, b'^').collect::<Vec<_>>(), all);
            proptest::prop_assert_eq!(nth_piece(&bytes, b'^', n), &split(&bytes, b'^', n)[..]);
            proptest::prop_assert_eq!(nth_piece(&bytes, 0, n), &split(&bytes, 0, n)[..]);
            let head = bytes.split(|&b| b == b'~').next().unwrap_or_default();
            proptest::prop_assert_eq!(nth_piece_before(&bytes, b'^', b'~', n), &split(head, b'^', n)[..]);
            proptest::prop_assert_eq!(nth_piece_before(&bytes, 0, b'|', n), &split(bytes.split(|&b| b == b'|').next().unwrap_or_default(), 0, n)[..]);
        }

        /// An indexed segment holds each field's bounds and knows exactly
        /// which hold the escape character; an indexed field holds its first
        /// repetition's components: both as `split` finds them, past what
        /// they record too.
        #[test]
        fn indexes_are_what_split_finds(
            body in proptest::collection::vec(proptest::sample::select(b"||||^^~\\&a".to_vec()), 0..300),
            encoding in proptest::sample::select(vec!["^~\\&", "^~"]),
        ) {
            let text = [format!("MSH|{encoding}|A\rZZZ|").as_bytes(), &body].concat();
            let m = Message::parse(&text).unwrap();
            let s = m.segments().nth(1).unwrap();
            let esc = m.delimiters().escape;
            let indexed = s.indexed();
            let fields: Vec<&[u8]> = s.raw().split(|&b| b == b'|').skip(1).collect();
            for n in 1..fields.len() + 3 {
                let raw = fields.get(n - 1).copied().unwrap_or_default();
                let field = indexed.field(n);
                proptest::prop_assert_eq!(field.raw(), raw, "{}", n);
                let plain = esc.is_none_or(|esc| !raw.contains(&esc));
                proptest::prop_assert_eq!(field.known.plain, plain && n <= INDEXED, "{}", n);
                let first = raw.split(|&b| b == b'~').next().unwrap_or_default();
                let components: Vec<&[u8]> = first.split(|&b| b == b'^').collect();
                let (by_index, by_scan) = (field.indexed(), field);
                for c in 1..components.len() + 3 {
                    let want = components.get(c - 1).copied().unwrap_or_default();
                    proptest::prop_assert_eq!(by_index.component(c).raw(), want, "{}.{}", n, c);
                    proptest::prop_assert_eq!(by_scan.component(c).raw(), want, "{}.{}", n, c);
                }
            }
        }

        /// Values read through an indexed segment, which knows which fields
        /// hold no escape character, are the values read by scanning.
        #[test]
        fn indexed_values_read_as_scanned_ones(
            body in proptest::collection::vec(proptest::sample::select(b"|^~\\&aX1F.\xC3\xA9 ".to_vec()), 0..120),
            encoding in proptest::sample::select(vec!["^~\\&", "^~&"]),
            header in proptest::bool::ANY,
        ) {
            let mut text = format!("MSH|{encoding}|A\r").into_bytes();
            text.extend_from_slice(if header { b"BHS" } else { b"PID" });
            text.extend_from_slice(&body);
            let Ok(m) = Message::parse(&text) else { return Ok(()) };
            let Some(s) = m.segments().nth(1) else { return Ok(()) };
            let indexed = s.indexed();
            for n in 0..=s.field_count() + 1 {
                let (a, b) = (indexed.field(n), s.field(n));
                proptest::prop_assert_eq!(a.text(), b.text(), "{}", n);
                for (ra, rb) in a.repetitions().zip(b.repetitions()) {
                    for c in 1..=4 {
                        let (ca, cb) = (ra.component(c), rb.component(c));
                        proptest::prop_assert_eq!(ca.text(), cb.text(), "{}.{}", n, c);
                        proptest::prop_assert_eq!(ca.subcomponent(2).text(), cb.subcomponent(2).text());
                        proptest::prop_assert_eq!(ra.indexed().component(c).text(), cb.text());
                    }
                }
            }
        }
    }

    #[test]
    fn segments_in_order_and_by_name() {
        let m = parse(ADT);
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "EVN", "PID", "PV1"]);
        assert!(m.segment("NK1").is_none());
        assert!(m.segment("PI").is_none() && m.segment("PIDX").is_none() && m.segment("").is_none());
        assert_eq!(m.segments_named("PID").count(), 1);
        assert_eq!(m.segment("PV1").unwrap().raw(), b"PV1|1|O");
    }

    #[test]
    fn more_segments_than_are_held_in_place() {
        let raw = [&b"MSH|^~\\&|A\r"[..], &b"NTE|1\r\r".repeat(NOTED_SEGMENTS + 4)].concat();
        let m = parse(&raw);
        assert!(matches!(m.segments, Segments::Spilled(_)));
        assert_eq!(m.segments().count(), NOTED_SEGMENTS + 5);
        assert!(m.segments().skip(1).all(|s| s.raw() == b"NTE|1"));
        // A line that continues the segment before it, once spilled.
        let raw = [&raw[..], b"more\rNTE|2"].concat();
        let m = parse(&raw);
        let last: Vec<&[u8]> = m.segments().skip(NOTED_SEGMENTS + 4).map(|s| s.raw()).collect();
        assert_eq!(last, [&b"NTE|1\r\rmore"[..], b"NTE|2"]);
    }

    #[test]
    fn segments_past_what_16_bit_offsets_hold() {
        // An OBX with a 70,000-byte value (an embedded document), a segment
        // after it, and one that continues over a raw line break.
        let value = "A".repeat(70_000);
        let text = format!("MSH|^~\\&|A\rOBX|1|ED|||{value}\rNTE|1|x\rmore\rZZZ|2\r");
        let m = parse(text.as_bytes());
        assert!(matches!(m.segments, Segments::Spilled(_)));
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "OBX", "NTE", "ZZZ"]);
        assert!(m.segment("OBX").unwrap().field(5).raw() == value.as_bytes());
        assert_eq!(m.segment("NTE").unwrap().raw(), b"NTE|1|x\rmore");
        assert_eq!(m.segment("ZZZ").unwrap().field(1).raw(), b"2");
        // The splitter gives up its index for such a message (which it
        // ends before the line it calls junk), and parsing its item finds
        // the segments again.
        let text = text.replace("\rmore", "");
        let items: Vec<_> = crate::hl7::Splitter::new(text.as_bytes()).filter_map(Result::ok).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].segments.is_none());
        let from_item = items[0].parse().unwrap();
        let bounds =
            |m: &Message| m.segments().map(|s| (s.id().to_string(), s.raw().len())).collect::<Vec<_>>();
        assert_eq!(bounds(&from_item), bounds(&parse(text.as_bytes())));
        assert_eq!(bounds(&from_item)[1], ("OBX".to_string(), 70_011));
    }

    /// The fast paths of parsing read what the general ones do.
    #[test]
    fn standard_delimiters_and_msh_fields_as_read_the_long_way() {
        assert_eq!(header_delimiters(ADT), Delimiters::from_header(ADT, seg::MSH));
        let long_msh =
            [&b"MSH|^~\\&"[..], &b"|x".repeat(15), b"|UTF-8", &b"|y".repeat(12), b"\rPID|1"].concat();
        let short_msh = b"MSH|^~\\&|A|B\rPID|1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16|17|18|19|20";
        let custom = b"MSH#@*$!#A#B#C#D#20260102#S#ADT@A28#7#P#2.5######8859/1#x\r";
        for raw in [ADT, &long_msh, short_msh, custom] {
            let m = parse(raw);
            for n in 0..=MSH_NOTED + 3 {
                assert_eq!(m.msh_field(n).raw(), m.msh().field(n).raw(), "MSH-{n}");
            }
        }
        assert_eq!(parse(custom).charset(), Charset::Latin1);
        assert_eq!(parse(custom).message_type(), ("ADT".into(), "A28".into()));
    }

    proptest::proptest! {
        #[test]
        fn msh_index_reads_what_scanning_reads(
            body in proptest::collection::vec(proptest::sample::select(b"||^ab".to_vec()), 0..160),
        ) {
            let raw = [&b"MSH|^~\\&|"[..], &body].concat();
            let m = Message::parse_with_charset(&raw, Charset::Utf8).unwrap();
            for n in 0..=MSH_NOTED + 3 {
                proptest::prop_assert_eq!(m.msh_field(n).raw(), m.msh().field(n).raw(), "MSH-{}", n);
            }
        }
    }

    #[test]
    fn pid3_repetitions_with_authority_and_type() {
        let m = parse(ADT);
        let pid3 = m.segment(seg::PID).unwrap().field(3);
        let ids: Vec<(String, String, String)> = pid3
            .repetitions()
            .map(|r| (text(r.component(1).text()), text(r.component(4).text()), text(r.component(5).text())))
            .collect();
        assert_eq!(
            ids,
            [("12345".into(), "EHR".into(), "MR".into()), ("998877".into(), "SSA".into(), "SS".into())]
        );
        assert_eq!(text(pid3.text()), "12345^^^EHR^MR", "text() is the first repetition");
        assert_eq!(pid3.component(4).raw(), b"EHR", "component() reads the first repetition");
        assert_eq!(m.value("PID-3[2].4").as_deref(), Some("SSA"));
        assert_eq!(m.value("PID-3[2].5.1").as_deref(), Some("SS"));
        assert_eq!(m.value("PID-3.1").as_deref(), Some("12345"));
        assert_eq!(m.value("PID-3[3].1"), None, "no third repetition");
        assert_eq!(m.value("PID-5.2").as_deref(), Some("Jane"));
        assert_eq!(m.value("PID-11.3").as_deref(), Some("Springfield"));
    }

    #[test]
    fn empty_fields_components_and_repetitions() {
        let m = parse(b"MSH|^~\\&|A\rPID|||~x~|^^c^|\"\"|\r");
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.field_count(), 6);
        assert!(pid.field(1).is_empty());
        assert_eq!(pid.field(1).repetitions().count(), 0, "an empty field has no repetitions");
        assert_eq!(pid.field(1).components().count(), 0);
        let reps: Vec<&[u8]> = pid.field(3).repetitions().map(|r| r.raw()).collect();
        assert_eq!(reps, [&b""[..], b"x", b""]);
        assert!(pid.field(3).text().unwrap().is_empty(), "the first repetition is empty");
        let comps: Vec<&[u8]> = pid.field(4).components().map(|c| c.raw()).collect();
        assert_eq!(comps, [&b""[..], b"", b"c", b""]);
        assert!(pid.field(4).component(1).is_empty());
        assert!(pid.field(4).component(9).is_empty(), "past the end");
        assert!(pid.field(4).component(0).is_empty(), "components are 1-based");
        assert!(pid.field(5).is_null());
        assert!(!pid.field(5).is_empty());
        assert!(pid.field(6).is_empty(), "trailing empty field");
        assert!(pid.field(7).is_empty(), "past the end");
        assert!(pid.field(0).is_empty(), "there is no field 0");
        assert_eq!(m.value("PID-4.3").as_deref(), Some("c"));
        assert_eq!(m.value("PID-4.1"), None, "empty reads as None");
        assert_eq!(m.value("PID-4.3.2"), None);
        let sub: Vec<&[u8]> = pid.field(4).component(3).subcomponents().map(|s| s.raw()).collect();
        assert_eq!(sub, [b"c"]);
        assert_eq!(pid.field(4).component(1).subcomponents().count(), 0);
    }

    #[test]
    fn subcomponents() {
        let m = parse(b"MSH|^~\\&\rPID|1||123^^^&1.2.3&ISO^MR\r");
        let auth = m.segment("PID").unwrap().field(3).component(4);
        let subs: Vec<&[u8]> = auth.subcomponents().map(|s| s.raw()).collect();
        assert_eq!(subs, [&b""[..], b"1.2.3", b"ISO"]);
        assert_eq!(text(auth.subcomponent(2).text()), "1.2.3");
        assert!(auth.subcomponent(4).is_empty());
        assert_eq!(text(auth.text()), "&1.2.3&ISO");
        assert_eq!(m.value("PID-3.4.3").as_deref(), Some("ISO"));
    }

    #[test]
    fn custom_delimiters_are_read_from_msh() {
        let m = parse(b"MSH#@*$!#EHR####20260102##ADT@A08#42\rPID#1##X1@@@AUTH!SUB*X2@@@B#$F$ and $S$\r");
        let d = *m.delimiters();
        assert_eq!(
            d,
            Delimiters {
                field: b'#',
                component: b'@',
                repetition: b'*',
                escape: Some(b'$'),
                subcomponent: b'!',
                truncation: None
            }
        );
        assert_eq!(m.message_type(), ("ADT".into(), "A08".into()));
        assert_eq!(m.control_id().as_deref(), Some("42"));
        assert_eq!(m.timestamp().as_deref(), Some("20260102"));
        assert_eq!(m.value("PID-3[2].1").as_deref(), Some("X2"));
        assert_eq!(m.value("PID-3.4.2").as_deref(), Some("SUB"));
        assert_eq!(m.value("PID-4").as_deref(), Some("# and @"), "escapes use the message's delimiters");
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.field(3).raw(), b"X1@@@AUTH!SUB*X2@@@B");
        // A standard delimiter is plain text here.
        let m = parse(b"MSH#@*$!\rNTE#1#a|b^c~d\\e&f\r");
        assert_eq!(m.value("NTE-2").as_deref(), Some("a|b^c~d\\e&f"));
    }

    #[test]
    fn truncation_character_of_v27() {
        let m = parse(b"MSH|^~\\&#|A\rNTE|1|long text#|\\P\\\r");
        let d = m.delimiters();
        assert_eq!((d.subcomponent, d.truncation), (b'&', Some(b'#')));
        assert_eq!(m.value("MSH-2").as_deref(), Some("^~\\&#"));
        assert_eq!(m.value("MSH-3").as_deref(), Some("A"));
        // Unescaped at the end of a value, it says the sender cut the value short.
        assert_eq!(m.try_value("NTE-2"), Err(Hl7Error::Truncated { character: '#' }));
        assert_eq!(m.value("NTE-3").as_deref(), Some("#"));
    }

    #[test]
    fn short_encoding_characters() {
        // No subcomponent separator: '&' is plain text.
        let m = parse(b"MSH|^~\\|A\rPID|1||a&b^c\r");
        let d = *m.delimiters();
        assert_eq!((d.escape, d.subcomponent), (Some(b'\\'), b'|'));
        assert_eq!(m.value("PID-3.1").as_deref(), Some("a&b"));
        assert_eq!(m.value("PID-3.1.1").as_deref(), Some("a&b"));
        // \T\ still stands for the `&` the sender left out, not for the
        // field separator that takes its place.
        let m = parse(b"MSH|^~\\|A\rPID|1||a\\T\\b^c\r");
        assert_eq!(m.value("PID-3.1").as_deref(), Some("a&b"));
        // No escape character either: backslashes are plain text.
        let m = parse(b"MSH|^~|A\rPID|1||a\\F\\b\r");
        assert_eq!(m.delimiters().escape, None);
        assert_eq!(m.value("PID-3").as_deref(), Some("a\\F\\b"));
    }

    #[test]
    fn bad_delimiters_are_reported() {
        let reason = |raw: &[u8]| match Message::parse(raw) {
            Err(Hl7Error::BadDelimiters { segment: "MSH", reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason(b"MSH").contains("field separator (MSH-1) is missing"));
        assert!(reason(b"MSH\rPID|1").contains("field separator (MSH-1) is missing"));
        assert!(reason(b"MSHA^~\\&").contains("\'A\'"));
        assert!(reason(b"MSH||A").contains("has 0 encoding characters"));
        assert!(reason(b"MSH|^|A").contains("has 1 encoding characters"));
        assert!(reason(b"MSH|^~\\&#!|A").contains("has 6 encoding characters"));
        assert!(reason(b"MSH|^^\\&|A").contains("uses '^' twice"));
        assert!(reason(b"MSH|^~a&|A").contains("contains 'a'"));
        assert!(reason(b"MSH|^~ &|A").contains("contains byte 0x20"));
        assert!(reason(b"MSH \xe9~\\&|A").contains("byte 0x20"));
        let e = Message::parse(b"MSH|^^\\&").unwrap_err().to_string();
        assert_eq!(e, "bad delimiters in MSH: MSH-2 uses '^' twice; each delimiter must be different");
    }

    #[test]
    fn not_msh_is_reported_with_its_start() {
        for (raw, start) in [
            (&b"PID|1"[..], "PID|1"),
            (b"", ""),
            (b"\xEF\xBB\xBFMSH|^~\\&", "\\xef\\xbb\\xbfMSH|^"),
            (b" MSH|^~\\&", " MSH|^~\\\\"),
        ] {
            assert_eq!(Message::parse(raw).unwrap_err(), Hl7Error::NotMsh { start: start.to_string() });
        }
        assert!(Message::parse(b"PID|1").unwrap_err().to_string().contains("should start with \"MSH\""));
    }

    #[test]
    fn cr_lf_and_crlf_terminators_read_the_same() {
        let base = b"MSH|^~\\&|A\rPID|1||X\rPV1|1|O";
        let mut seen = Vec::new();
        for terminator in [&b"\r"[..], b"\n", b"\r\n", b"\n\r", b"\r\n\r\n"] {
            let raw: Vec<u8> = base
                .split(|&b| b == b'\r')
                .flat_map(|s| s.iter().copied().chain(terminator.iter().copied()))
                .collect();
            let m = parse(&raw);
            let segs: Vec<(String, Vec<Vec<u8>>)> = m
                .segments()
                .map(|s| (s.id().to_string(), s.fields().map(|f| f.raw().to_vec()).collect()))
                .collect();
            assert_eq!(segs.len(), 3, "{terminator:?}");
            assert_eq!(m.value("PID-3").as_deref(), Some("X"));
            assert_eq!(m.value("PV1-2").as_deref(), Some("O"), "the last field has no terminator in it");
            seen.push(segs);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn mixed_terminators_and_blank_lines_inside_a_message() {
        let m = parse(b"MSH|^~\\&|A\r\n\r\nEVN|A28\n  \nPID|1\rPV1|1\r\n");
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "EVN", "PID", "PV1"]);
    }

    #[test]
    fn a_line_that_is_not_a_segment_continues_the_one_before() {
        // Seen from senders that put raw line breaks in report text.
        let m = parse(b"MSH|^~\\&|A\rOBX|1|TX|||line one\nline two\n\nline four|F\rNTE|1\r");
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "OBX", "NTE"]);
        assert_eq!(m.value("OBX-5").as_deref(), Some("line one\nline two\n\nline four"));
        assert_eq!(m.value("OBX-6").as_deref(), Some("F"));
        // Lower case, or an ID not followed by this message's separator, is not a segment start.
        let m = parse(b"MSH|^~\\&\rNTE|1|a\rpid|2\rPID#3\rZZ9|4\rZZZ\r");
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "NTE", "ZZ9", "ZZZ"]);
        assert_eq!(m.segment("NTE").unwrap().raw(), b"NTE|1|a\rpid|2\rPID#3");
        assert_eq!(m.segment("ZZZ").unwrap().field_count(), 0);
    }

    #[test]
    fn charset_names() {
        for (name, cs) in [
            (&b""[..], Charset::Ascii),
            (b"ASCII", Charset::Ascii),
            (b"UNICODE UTF-8", Charset::Utf8),
            (b" unicode utf-8 ", Charset::Utf8),
            (b"UTF-8", Charset::Utf8),
            (b"8859/1", Charset::Latin1),
            (b"ISO-8859-1", Charset::Latin1),
        ] {
            assert_eq!(Charset::from_msh18(name), Ok(cs), "{name:?}");
        }
        assert_eq!(Charset::from_msh18(b"ISO IR87"), Err(Hl7Error::UnknownCharset("ISO IR87".into())));
        assert_eq!(Charset::Utf8.to_string(), "UNICODE UTF-8");
    }

    #[test]
    fn msh18_selects_the_charset_and_unknown_is_an_error() {
        let m = parse(b"MSH|^~\\&|||||||ADT^A01|1|P|2.3|||||| 8859/1 ~ISO IR87\rPID|1||||Mu\xF1oz\r");
        assert_eq!(m.charset(), Charset::Latin1, "the first repetition of MSH-18 counts");
        assert_eq!(m.value("PID-5").as_deref(), Some("Muñoz"));
        assert_eq!(m.value("MSH-18").as_deref(), Some(" 8859/1 "));
        let raw = b"MSH|^~\\&|||||||ADT^A01|1|P|2.3||||||KOI8-R\rPID|1\r";
        let e = Message::parse(raw).unwrap_err();
        assert_eq!(e, Hl7Error::UnknownCharset("KOI8-R".into()));
        assert!(e.to_string().contains("ask the sender"), "{e}");
        let m = Message::parse_with_charset(raw, Charset::Latin1).unwrap();
        assert_eq!(m.charset(), Charset::Latin1);
        assert_eq!(m.value("PID-1").as_deref(), Some("1"));
    }

    #[test]
    fn latin1_bytes_are_decoded() {
        let m = parse(b"MSH|^~\\&|||||||ADT^A01|1|P|2.3||||||8859/1\rPID|1||||Jos\xE9^Ren\xE9e\r");
        assert_eq!(m.value("PID-5.1").as_deref(), Some("José"));
        assert_eq!(m.value("PID-5").as_deref(), Some("José^Renée"));
        assert!(matches!(m.value("PID-1"), Some(Cow::Borrowed("1"))), "ASCII in Latin-1 is borrowed");
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let m = parse(b"MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||||Jos\xE9\r");
        let e = m.segment("PID").unwrap().field(5).text().unwrap_err();
        assert_eq!(e, Hl7Error::InvalidText { charset: Charset::Utf8, byte: 0xE9, position: 3 });
        assert!(e.to_string().contains("8859/1"), "{e}");
        assert_eq!(m.value("PID-5"), None);
        assert_eq!(m.try_value("PID-5"), Err(e));
        // The same bytes with no MSH-18 get a hint to fill it.
        let m = parse(b"MSH|^~\\&\rPID|1||||Jos\xE9\r");
        let e = m.try_value("PID-5").unwrap_err();
        assert!(matches!(e, Hl7Error::InvalidText { charset: Charset::Ascii, .. }), "{e:?}");
        assert!(e.to_string().contains("MSH-18 names no character set"), "{e}");
    }

    #[test]
    fn ascii_charset_accepts_utf8() {
        let m = parse("MSH|^~\\&\rPID|1||||Jos\u{e9}\r".as_bytes());
        assert_eq!(m.charset(), Charset::Ascii);
        assert!(matches!(m.value("PID-5"), Some(Cow::Borrowed("José"))));
    }

    #[test]
    fn text_is_borrowed_unless_unescaped() {
        let m = parse(b"MSH|^~\\&\rNTE|1|plain|a\\T\\b\r");
        assert!(matches!(m.value("NTE-2"), Some(Cow::Borrowed(_))));
        assert!(matches!(m.value("NTE-3"), Some(Cow::Owned(s)) if s == "a&b"));
    }

    #[test]
    fn escapes_in_values_and_paths() {
        let m = parse(b"MSH|^~\\&\rNTE|1|O\\T\\Brien \\F\\ \\S\\ \\R\\ \\E\\|line\\.br\\two^x\\X0D0A\\y\r");
        assert_eq!(m.value("NTE-2").as_deref(), Some("O&Brien | ^ ~ \\"));
        assert_eq!(m.value("NTE-3.1").as_deref(), Some("line\ntwo"));
        assert_eq!(m.value("NTE-3.2").as_deref(), Some("x\r\ny"));
    }

    #[test]
    fn paths() {
        let p = Path::parse("PID-3[2].4.1").unwrap();
        assert_eq!(
            p,
            Path { segment: "PID", field: 3, repetition: 2, component: Some(4), subcomponent: Some(1) }
        );
        assert_eq!(
            Path::parse("MSH-10").unwrap(),
            Path { segment: "MSH", field: 10, repetition: 1, component: None, subcomponent: None }
        );
        assert_eq!(Path::parse("PD1-4.2").unwrap().component, Some(2));
        for (bad, why) in [
            ("PID", "no '-'"),
            ("pid-3", "three capital"),
            ("PIDX-3", "three capital"),
            ("1ID-3", "three capital"),
            ("PID-", "expected a number"),
            ("PID-0", "start at 1"),
            ("PID-3[0]", "start at 1"),
            ("PID-3[2", "closing"),
            ("PID-3.", "expected a number"),
            ("PID-3.+1", "expected a number"),
            ("PID-3.1.1.1", "more than"),
            ("PID-x", "expected a number"),
        ] {
            let e = Path::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let m = parse(ADT);
        assert!(m.try_value("PID-0").is_err());
        assert_eq!(m.value("PID-0"), None);
        assert_eq!(m.try_value("NK1-2"), Ok(None), "absent segment");
    }

    #[test]
    fn debug_does_not_print_values() {
        let m = parse(ADT);
        let pid = m.segment("PID").unwrap();
        let all = format!(
            "{m:?} {pid:?} {:?} {:?} {:?}",
            pid.field(5),
            pid.field(5).component(1),
            pid.field(5).component(1).subcomponent(1)
        );
        assert!(!all.contains("Doe"), "{all}");
        assert!(all.contains("PID"), "{all}");
    }

    /// A value's raw bytes and its text.
    type Value<'a> = (&'a [u8], Result<Cow<'a, str>, Hl7Error>);

    /// Every value, as text and as raw bytes (the whole field down to
    /// each subcomponent), of every segment.
    fn every_value<'a>(m: &Message<'a>) -> Vec<Value<'a>> {
        let mut out = Vec::new();
        for s in m.segments() {
            for f in s.fields() {
                out.push((f.raw(), f.text()));
                for r in f.repetitions() {
                    for c in r.components() {
                        out.push((c.raw(), c.text()));
                        out.extend(c.subcomponents().map(|sc| (sc.raw(), sc.text())));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_message_is_checked_whole_when_it_can_be() {
        let m = parse(
            "MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||Zo\u{eb}^M\u{fc}ller&\u{6771}~x\r"
                .as_bytes(),
        );
        assert!(m.valid);
        assert!(matches!(m.value("PID-3.2.2").as_deref(), Some("\u{6771}")));
        assert!(!parse(b"MSH|^~\\&\rPID|1||Zo\xEB\r").valid, "not UTF-8: each value is checked");
        assert!(parse(b"MSH|^~\\&|||||||||||||||8859/1\rPID|1||Zoe\r").valid);
        assert!(!parse(b"MSH|^~\\&|||||||||||||||8859/1\rPID|1||Zo\xEB\r").valid);
    }

    proptest::proptest! {
        /// The one check of a whole message stands for a check of each
        /// value (see `decodes_as_is`): values read from a message found
        /// valid decode exactly as when each is checked on its own.
        #[test]
        fn values_decode_the_same_checked_whole_or_one_by_one(
            charset in proptest::sample::select(vec!["", "UNICODE UTF-8", "8859/1"]),
            body in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "Z", " ", "\u{e9}", "\u{6771}", "\u{1f600}", "|", "^", "~", "\\", "&", "\r", "\n",
                    "\rPID|", "\\F\\", "\\XC3A9\\", "\\XE9\\", "\\.br\\", "\"\"",
                ]),
                0..80,
            ),
        ) {
            let raw = format!("MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||{charset}\r{}", body.concat());
            let Ok(m) = Message::parse(raw.as_bytes()) else { return Ok(()) };
            let unchecked = Message { valid: false, ..Message::parse(raw.as_bytes()).unwrap() };
            let (whole, alone) = (every_value(&m), every_value(&unchecked));
            proptest::prop_assert_eq!(whole, alone);
        }
    }
}
