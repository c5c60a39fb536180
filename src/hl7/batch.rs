//! Finding the messages in a file of HL7. [`Splitter`] walks a buffer
//! (usually a memory-mapped file) once, a line at a time, and yields each
//! message's bytes as an [`Item`] and each oddity as a [`BatchProblem`],
//! holding no more than the current message's position, so memory does not
//! grow with the file. [`split`] collects it. This module owns the file
//! shapes and their checks (counts in BTS-1 and FTS-1, truncation, junk); it
//! does not parse messages, nor decide what to do with a bad one: a
//! truncated message is still yielded, marked, so the caller can queue it.
//!
//! Shapes read, alone or mixed:
//! - plain concatenated messages, with CR, LF or CRLF terminators and blank
//!   lines anywhere;
//! - a batch file, `FHS`, `BHS`, messages, `BTS`, ..., `FTS`;
//! - MLLP frames saved as they came off the wire: `0x0B` message `0x1C 0x0D`;
//! - a UTF-8 byte order mark at the start.
//!
//! The heuristics:
//! - A message starts at `MSH` followed by a punctuation character at the
//!   start of a line or right after `0x0B`. It runs to the next line that
//!   starts a message or is an FHS, BHS, BTS or FTS, to `0x1C` or `0x0B`, or
//!   to the end of the input. Its bytes run from the `M` to the end of its
//!   last non-blank line, including that line's terminator (CR, LF or CRLF)
//!   when it has one; framing bytes and trailing blank lines are left out.
//! - Inside a message, a line that does not start like a segment (three
//!   capitals or digits, then the message's field separator) also ends it,
//!   and is junk: separators, log lines and a DOS end-of-file byte must not
//!   end up in the last field. The one exception is a line after a bare LF
//!   in a message whose MSH line ends in a bare CR: there LF cannot be a
//!   segment terminator, so it is a line break some senders leave inside
//!   a text value, and the line stays in the message (`Message::parse`
//!   reads it as part of the segment before it).
//! - Junk that such a line starts ends the message only if no segment of
//!   the message follows it (before the next message, envelope line,
//!   framing byte or the end): a segment after it shows the junk stood
//!   inside the message, which is then yielded whole, junk included, as
//!   cut (truncated), never as a message missing the segments after it.
//! - Non-blank lines outside every message are junk, reported once per run
//!   of them. Whitespace-only lines are blank, never junk.
//! - A message is truncated when its last line has no terminator and
//!   either it sits in an MLLP frame that never got its `0x1C` (the file
//!   ended, or a new frame started mid-line), or the file ends while an FHS
//!   or BHS still waits for its trailer. A last line without a terminator is
//!   otherwise normal: plenty of files lack a final newline.
//! - A framed message whose frame never gets its `0x1C` is truncated even
//!   when cut at a segment end, once an earlier frame of the file ended with
//!   one: that sender ends its frames, so segments after the cut may be
//!   lost. In a file whose frames never end (a saver that drops `0x1C`),
//!   there is nothing to tell a whole message from a cut one.
//! - BTS-1 is checked against the messages since the batch began (its BHS,
//!   the previous BTS, the FHS or the start of the file); FTS-1 against the
//!   batches since the FHS, where a file with messages but no BHS or BTS
//!   counts as one batch. An empty count is not checked.
//! - Line numbers count CR, LF and CRLF each as one line end, as editors
//!   do; `0x0B` and `0x1C` do not end lines.

use std::collections::VecDeque;
use std::fmt;

use memchr::memchr;

use super::error::Hl7Error;
use super::parse::{Charset, Delimiters, Message, Seen, Segment, SegmentIndex, is_blank, starts_segment};
use super::seg;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// MLLP start of block.
const VT: u8 = 0x0B;
/// MLLP end of block.
const FS: u8 = 0x1C;
const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// One message found in a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    /// 1-based, in file order, counting truncated messages too.
    pub number: usize,
    /// From `MSH` to the end of the last segment's terminator, framing left out.
    pub raw: &'a [u8],
    /// Byte offset of `MSH` in the buffer.
    pub offset: usize,
    /// 1-based line on which `MSH` stands.
    pub line: usize,
    /// Inside an MLLP frame (`0x0B` before it).
    pub framed: bool,
    /// Cut off, and why: see the module doc. Also reported as
    /// [`BatchProblem::Truncated`].
    pub truncated: Option<&'static str>,
    /// Where its segments are, found while splitting, so that parsing need
    /// not look for line ends again; `None` for a message with more
    /// segments than are noted.
    pub(crate) segments: Option<SegmentIndex>,
    /// What its bytes between line ends are, seen while splitting: parsing
    /// need not check that printable ASCII decodes, and mapping need not
    /// look for control characters in values no byte can put one in.
    pub(crate) seen: Seen,
}

impl<'a> Item<'a> {
    pub fn parse(&self) -> Result<Message<'a>, Hl7Error> {
        match &self.segments {
            Some(index) => Message::parse_with_segments(self.raw, index, self.seen),
            None => Message::parse(self.raw),
        }
    }
}

/// Notes a line of a message in its segment index, `start..stop` from the
/// message's start, as `Message::parse` reads it: a segment when it starts
/// like one, else the continuation of the one before when it is not blank.
/// Gives up (`None`) when there is no room left or the offsets do not fit,
/// and parsing then finds the segments itself.
fn note(slot: &mut Option<SegmentIndex>, line: &[u8], start: usize, stop: usize, field: u8) {
    let Some(index) = slot else { return };
    let noted = if starts_segment(line, field) {
        index.push(start, stop)
    } else {
        is_blank(line) || index.extend_last(stop)
    };
    if !noted {
        *slot = None;
    }
}

impl fmt::Debug for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Item")
            .field("number", &self.number)
            .field("len", &self.raw.len())
            .field("offset", &self.offset)
            .field("line", &self.line)
            .field("framed", &self.framed)
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// An FHS or BHS line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The segment, terminator excluded.
    pub raw: &'a [u8],
    pub offset: usize,
    pub line: usize,
}

impl<'a> Header<'a> {
    /// `FHS` or `BHS`.
    pub fn id(&self) -> &'a str {
        self.raw.get(..3).and_then(|id| std::str::from_utf8(id).ok()).unwrap_or_default()
    }

    /// The segment, to read fields such as FHS-9 (file name) or BHS-7
    /// (date); its delimiters are its own FHS-1/FHS-2. Its text is read as
    /// [`Charset::Ascii`], since no header field names a character set.
    pub fn segment(&self) -> Result<Segment<'a>, Hl7Error> {
        let id = if self.id() == seg::FHS { seg::FHS } else { seg::BHS };
        let delimiters = Delimiters::from_header(self.raw, id)?;
        Ok(Segment::new(self.raw, delimiters, Charset::Ascii))
    }
}

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("id", &self.id())
            .field("len", &self.raw.len())
            .field("offset", &self.offset)
            .field("line", &self.line)
            .finish()
    }
}

/// Something wrong with a file's shape. None of these stop the walk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchProblem {
    /// BTS-1 or FTS-1 does not match what the file holds.
    #[error("line {line}: {trailer}-1 says {declared} {}, but the file holds {found}", unit(trailer))]
    CountMismatch { trailer: &'static str, declared: usize, found: usize, line: usize },
    /// BTS-1 or FTS-1 is not a number.
    #[error("line {line}: {trailer}-1 should be a count, but is {value:?}")]
    BadCount {
        trailer: &'static str,
        /// Cut to a few characters.
        value: String,
        line: usize,
    },
    /// The message was cut off; it is yielded anyway, with `truncated` set.
    #[error("line {line}: message {number} is cut off: {reason}")]
    Truncated { number: usize, offset: usize, line: usize, reason: &'static str },
    /// Bytes outside every message.
    #[error("line {line}: {len} bytes at offset {offset} are not part of any message")]
    Junk { offset: usize, line: usize, len: usize },
    /// An FHS or BHS that no FTS or BTS closed before the file (or, for a
    /// BHS, the next BHS or FHS or the FTS) ended.
    #[error(
        "line {header_line}: the {} here has no {trailer}; the file may be incomplete",
        header_of(trailer)
    )]
    MissingTrailer { trailer: &'static str, header_line: usize },
}

fn unit(trailer: &str) -> &'static str {
    if trailer == seg::BTS { "messages in the batch" } else { "batches in the file" }
}

fn header_of(trailer: &str) -> &'static str {
    if trailer == seg::BTS { seg::BHS } else { seg::FHS }
}

/// Everything [`split`] found in a buffer.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub items: Vec<Item<'a>>,
    /// In file order.
    pub problems: Vec<BatchProblem>,
    /// The first FHS, if any.
    pub file_header: Option<Header<'a>>,
    /// Every BHS, in order.
    pub batch_headers: Vec<Header<'a>>,
}

/// Splits a whole buffer, collecting what [`Splitter`] yields.
pub fn split(buf: &[u8]) -> Batch<'_> {
    let mut splitter = Splitter::new(buf);
    splitter.kept = Some(Vec::new());
    let mut batch = Batch::default();
    for found in splitter.by_ref() {
        match found {
            Ok(item) => batch.items.push(item),
            Err(problem) => batch.problems.push(problem),
        }
    }
    for header in splitter.kept.take().unwrap_or_default() {
        if header.id() == seg::BHS {
            batch.batch_headers.push(header);
        } else if batch.file_header.is_none() {
            batch.file_header = Some(header);
        }
    }
    batch
}

/// Yields the messages and problems in a buffer, in file order. See the
/// module doc for the rules.
pub struct Splitter<'a> {
    buf: &'a [u8],
    /// Start of the next line (or framing byte) to read.
    pos: usize,
    /// Line number at `pos`.
    line: usize,
    in_frame: bool,
    /// An MLLP frame of the file has ended with its `0x1C`: the sender
    /// ends them, so one that never gets it was cut short.
    frames_end: bool,
    /// The line before ended in LF without CR.
    after_bare_lf: bool,
    current: Option<Open>,
    /// A message followed by junk, kept aside (not `current`, so that its
    /// segments' fast path need not look for it) until a segment of it
    /// shows that the junk stood inside it, or anything else ends it.
    suspended: Option<Open>,
    junk: Option<Junk>,
    /// The message the current line ended, waiting to be yielded before
    /// `pending`: it always comes first of what a line produces, as a
    /// message ends before anything after it is read. Apart from the
    /// queue, as it is the one thing produced for nearly every message.
    closed: Option<Item<'a>>,
    /// What else the current line produced, waiting to be yielded; a few
    /// at most.
    pending: VecDeque<Result<Item<'a>, BatchProblem>>,
    /// Messages so far.
    number: usize,
    file_header: Option<Header<'a>>,
    batch_header: Option<Header<'a>>,
    /// Line of an FHS (BHS) whose FTS (BTS) has not come yet.
    file_open: Option<usize>,
    batch_open: Option<usize>,
    /// Messages since the batch began, and since the file began.
    in_batch: usize,
    in_file: usize,
    /// Batches since the file began.
    batches: usize,
    /// Every header, for `split` only, so a caller streaming a huge file
    /// does not pay for them.
    kept: Option<Vec<Header<'a>>>,
    done: bool,
    ends: LineEnds,
}

/// Bytes [`LineEnds`] classifies at a time.
const BLOCK: usize = 64;

/// The bytes that end a line, as bits: CR, LF and the MLLP framing bytes.
const LINE_ENDS: u32 = 1 << CR | 1 << LF | 1 << VT | 1 << FS;

/// Finds where lines end, in one pass over the buffer a block at a time:
/// at CR, LF or an MLLP framing byte (`0x0B`, `0x1C`, which end a line
/// too: a frame can start mid-line when the one before was cut off). A
/// search per line (for CR or LF, then for framing bytes) cost more in
/// set-up than in searching, as segments are short; here one block's
/// classification serves every line in it. On the way it notes whether a
/// line holds a byte that is not printable ASCII, and whether one may be a
/// control character (see [`Seen`]).
struct LineEnds {
    /// Offset in the buffer of the block `mask` describes.
    base: usize,
    /// One bit per byte of that block, lowest first, for the bytes not yet
    /// passed that may matter: control bytes (below 0x20, as CR, LF, 0x0B
    /// and 0x1C all are, and DEL), bytes that are not ASCII (0x80 and up)
    /// and `\`, which may start an escape sequence that stands for a
    /// control character. Other control bytes, such as tabs, are rare, and
    /// escape sequences a few a message: they are passed one at a time.
    mask: u64,
    /// The processor has AVX2, which classifies a block in half the
    /// instructions SSE2 takes.
    avx2: bool,
}

impl LineEnds {
    fn new(buf: &[u8], at: usize) -> LineEnds {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        LineEnds { base: at, mask: block_mask::<false>(buf, at), avx2 }
    }

    /// Where the line starting at `start` ends (its first CR, LF, `0x0B` or
    /// `0x1C`, else the end of `buf`), and whether its bytes before that
    /// are, as [`Seen`]. `start` must not be before the end of the line found
    /// last, whose bytes are forgotten as they are passed; the splitter
    /// only moves forward. `AVX2` only where `self.avx2` says the processor
    /// has it.
    #[inline(always)]
    fn find<const AVX2: bool>(&mut self, buf: &[u8], start: usize) -> (usize, Seen) {
        let skip = start.wrapping_sub(self.base);
        if skip < BLOCK {
            self.mask &= u64::MAX << skip;
        } else {
            self.base = start;
            self.mask = block_mask::<AVX2>(buf, start);
        }
        let mut seen = Seen::Printable;
        loop {
            if self.mask == 0 {
                self.base += BLOCK;
                if self.base >= buf.len() {
                    return (buf.len(), seen);
                }
                self.mask = block_mask::<AVX2>(buf, self.base);
                continue;
            }
            let at = self.base + self.mask.trailing_zeros() as usize;
            let b = buf[at];
            if b < 0x20 && LINE_ENDS >> b & 1 == 1 {
                return (at, seen);
            }
            seen = seen.max(match b {
                b'\\' if matches!(buf.get(at + 1), Some(b'X' | b'.')) => Seen::Controls,
                b'\\' => Seen::Printable,
                0xA0.. if b != 0xC2 => Seen::Text,
                _ => Seen::Controls,
            });
            self.mask &= self.mask - 1;
        }
    }
}

/// [`LineEnds::mask`] for the block of `buf` at `at`; bytes past the end
/// of `buf` are left out.
#[inline(always)]
fn block_mask<const AVX2: bool>(buf: &[u8], at: usize) -> u64 {
    let rest = &buf[at.min(buf.len())..];
    let padded;
    let block = match rest.first_chunk::<BLOCK>() {
        Some(block) => block,
        None => {
            // Padded with a printable byte.
            let mut block = [b' '; BLOCK];
            block[..rest.len()].copy_from_slice(rest);
            padded = block;
            &padded
        }
    };
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: `AVX2` is set only where the processor has AVX2.
        return unsafe { special_avx2(block) };
    }
    special(block)
}

/// The bytes of a block that are not printable ASCII (below 0x20, or 0x7F
/// and up), and `\`. The first are, one added to each, as signed bytes,
/// exactly those below 0x21 (0xFF wraps to 0). Sixteen at a time with
/// SSE2, which every x86-64 processor has (LLVM does not vectorise the byte
/// loop well).
#[cfg(target_arch = "x86_64")]
#[inline]
fn special(block: &[u8; BLOCK]) -> u64 {
    use std::arch::x86_64::{
        _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut mask = 0;
    for (i, chunk) in block.as_chunks::<16>().0.iter().enumerate() {
        // SAFETY: SSE2 is part of x86-64 itself, so every processor that
        // runs this has these instructions; the load reads the 16 bytes of
        // `chunk`, at any alignment.
        let found = unsafe {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
            let unprintable = _mm_cmplt_epi8(_mm_add_epi8(bytes, _mm_set1_epi8(1)), _mm_set1_epi8(0x21));
            _mm_movemask_epi8(_mm_or_si128(unprintable, _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8))))
        };
        mask |= u64::from(found as u16) << (16 * i);
    }
    mask
}

/// [`special`] thirty-two bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn special_avx2(block: &[u8; BLOCK]) -> u64 {
    use std::arch::x86_64::{
        _mm256_add_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };
    let mut mask = 0;
    for (i, chunk) in block.as_chunks::<32>().0.iter().enumerate() {
        // SAFETY: reads the 32 bytes of `chunk`, at any alignment.
        let bytes = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) };
        let plus_one = _mm256_add_epi8(bytes, _mm256_set1_epi8(1));
        let unprintable = _mm256_cmpgt_epi8(_mm256_set1_epi8(0x21), plus_one);
        let backslash = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b'\\' as i8));
        let found = _mm256_movemask_epi8(_mm256_or_si256(unprintable, backslash));
        mask |= u64::from(found as u32) << (32 * i);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
fn special(block: &[u8; BLOCK]) -> u64 {
    special_bytewise(block)
}

/// [`special`] a byte at a time: elsewhere than x86-64, and to test it.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn special_bytewise(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &b)| mask | u64::from(!(0x20..0x7F).contains(&b) || b == b'\\') << i)
}

/// The message being read.
struct Open {
    number: usize,
    start: usize,
    line: usize,
    /// End of its last non-blank line, terminator included.
    end: usize,
    /// Whether that line had a terminator.
    terminated: bool,
    framed: bool,
    /// Its field separator, to tell its segments from junk.
    field: u8,
    /// Its component separator (MSH-2's first character), to tell the rest
    /// of a segment from junk.
    component: u8,
    /// Its MSH line ends in a bare CR, so a bare LF is not a terminator.
    cr_terminated: bool,
    /// A reason it is cut, found before it ended.
    cut: Option<&'static str>,
    /// What its lines so far hold.
    seen: Seen,
    segments: Option<SegmentIndex>,
}

/// Why a message with junk between its segments is cut.
const JUNK_INSIDE: &str = "a line that is not a segment stands between its segments (a line break inside a value, or a line that does not belong), so what it says there is not read";

impl Open {
    /// Adds a line that [`is_plain_segment`], `start..stop` in the buffer
    /// and followed by its terminator up to `next`.
    #[inline]
    fn add_segment(&mut self, start: usize, stop: usize, next: usize, seen: Seen) {
        self.extend(stop, next, seen);
        if let Some(index) = &mut self.segments
            && !index.push(start - self.start, stop - self.start)
        {
            self.segments = None;
        }
    }

    /// Adds a line, `start..stop` in the buffer and followed by its
    /// terminator up to `next`.
    #[inline]
    fn add(&mut self, content: &[u8], start: usize, stop: usize, next: usize, seen: Seen) {
        self.extend(stop, next, seen);
        note(&mut self.segments, content, start - self.start, stop - self.start, self.field);
    }

    /// The message now runs to `next`, past a line that ends at `stop`.
    #[inline]
    fn extend(&mut self, stop: usize, next: usize, seen: Seen) {
        self.end = next;
        self.terminated = next > stop;
        self.seen = self.seen.max(seen);
    }
}

/// A run of junk lines.
struct Junk {
    start: usize,
    line: usize,
    end: usize,
}

/// What ended a message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A line that starts a message, is an FHS, BHS, BTS or FTS, or is junk.
    NextLine,
    /// Something that cannot be part of a message came right after one of
    /// its segments, or inside one: the message may have been cut there, so
    /// it is yielded as truncated, with this reason.
    Cut(&'static str),
    FrameEnd,
    FrameStart,
    Input,
}

/// What a line is, from its first bytes.
enum Line {
    Blank,
    Message,
    /// One of FHS, BHS, BTS, FTS.
    Envelope(&'static str),
    Other,
}

/// Whether a line is a segment of a message whose field separator is
/// `field` that does not end the message: three capitals or digits (the
/// first a capital), then `field`, and none of MSH, FHS, BHS, BTS and FTS.
/// What `classify` and `step` decide for such a line, found with fewer
/// tests, as nearly every line is one. A segment with no fields at all
/// (`PV1` alone) is left to them.
#[inline]
fn is_plain_segment(line: &[u8], field: u8) -> bool {
    let Some(&[a, b, c, separator]) = line.first_chunk::<4>() else { return false };
    let id = ID_CHARS[usize::from(a)] & ID_CHARS[usize::from(b)] >> 1 & ID_CHARS[usize::from(c)] >> 1;
    separator == field
        && id & 1 == 1
        && !(matches!(a, b'M' | b'F' | b'B')
            && matches!(&[a, b, c], b"MSH" | b"FHS" | b"BHS" | b"BTS" | b"FTS"))
}

/// For each byte, bit 0: a capital, which may start a segment ID; bit 1: a
/// capital or a digit, which may follow. One lookup a byte, where the
/// range tests take several.
static ID_CHARS: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            (c.is_ascii_uppercase() as u8) | ((c.is_ascii_uppercase() || c.is_ascii_digit()) as u8) << 1;
        b += 1;
    }
    table
};

fn classify(line: &[u8]) -> Line {
    if line.len() >= 3 {
        let id = &line[..3];
        let separated = line.get(3).is_some_and(u8::is_ascii_punctuation);
        if separated && id == seg::MSH.as_bytes() {
            return Line::Message;
        }
        for header in [seg::FHS, seg::BHS] {
            if separated && id == header.as_bytes() {
                return Line::Envelope(header);
            }
        }
        // A trailer with no fields at all is still a trailer.
        for trailer in [seg::BTS, seg::FTS] {
            if (separated || line.len() == 3) && id == trailer.as_bytes() {
                return Line::Envelope(trailer);
            }
        }
    }
    if is_blank(line) { Line::Blank } else { Line::Other }
}

impl<'a> Splitter<'a> {
    pub fn new(buf: &'a [u8]) -> Splitter<'a> {
        let pos = if buf.starts_with(UTF8_BOM) { UTF8_BOM.len() } else { 0 };
        Splitter {
            buf,
            pos,
            line: 1,
            in_frame: false,
            frames_end: false,
            after_bare_lf: false,
            current: None,
            suspended: None,
            junk: None,
            closed: None,
            pending: VecDeque::new(),
            number: 0,
            file_header: None,
            batch_header: None,
            file_open: None,
            batch_open: None,
            in_batch: 0,
            in_file: 0,
            batches: 0,
            kept: None,
            done: false,
            ends: LineEnds::new(buf, pos),
        }
    }

    /// The latest FHS read so far.
    pub fn file_header(&self) -> Option<&Header<'a>> {
        self.file_header.as_ref()
    }

    /// The latest BHS read so far.
    pub fn batch_header(&self) -> Option<&Header<'a>> {
        self.batch_header.as_ref()
    }

    /// Reads lines until one yields something or may (a line that starts,
    /// ends or interrupts a message, or a framing byte), or finishes at the
    /// end. A segment of the message being read, the common line, yields
    /// nothing, so the next is read at once.
    fn step(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if self.ends.avx2 {
            // SAFETY: the processor has AVX2, as `LineEnds::new` found.
            unsafe { self.step_avx2() };
            return;
        }
        self.step_with::<false>();
    }

    /// [`Splitter::step`] compiled for AVX2, where finding line ends is
    /// inlined with it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn step_avx2(&mut self) {
        self.step_with::<true>();
    }

    #[inline(always)]
    fn step_with<const AVX2: bool>(&mut self) {
        let buf = self.buf;
        loop {
            let start = self.pos;
            let (stop, seen) = self.ends.find::<AVX2>(buf, start);
            // The end of the input, or a framing byte where a line would
            // start.
            if stop == start && !matches!(buf.get(start), Some(&(CR | LF))) {
                self.frame_byte_or_end();
                return;
            }
            // 0x0B, 0x1C or the end after the line is handled by the next step.
            let (next, bare_cr, bare_lf) = match buf.get(stop) {
                Some(&CR) if buf.get(stop + 1) == Some(&LF) => (stop + 2, false, false),
                Some(&CR) => (stop + 1, true, false),
                Some(&LF) => (stop + 1, false, true),
                _ => (stop, false, false),
            };
            let terminated = next > stop;
            let after_bare_lf = std::mem::replace(&mut self.after_bare_lf, bare_lf);
            let line = self.line;
            self.line += usize::from(terminated);
            self.pos = next;
            let mut content = &buf[start..stop];
            if let Some(open) = &mut self.current
                && is_plain_segment(content, open.field)
            {
                open.add_segment(start, stop, next, seen);
                continue;
            }
            // A message after a byte order mark (files joined whole, each
            // with its own): the mark is left out, as at the start.
            let mut start = start;
            if let Some(rest) = content.strip_prefix(UTF8_BOM)
                && matches!(classify(rest), Line::Message)
            {
                (start, content) = (start + UTF8_BOM.len(), rest);
            }
            match classify(content) {
                Line::Blank => {}
                Line::Message => {
                    self.close(Ending::NextLine);
                    self.flush_junk();
                    self.number += 1;
                    let mut segments = Some(SegmentIndex::EMPTY);
                    note(&mut segments, content, 0, stop - start, content[3]);
                    self.current = Some(Open {
                        number: self.number,
                        start,
                        line,
                        end: next,
                        terminated,
                        framed: self.in_frame,
                        field: content[3],
                        component: content.get(4).copied().unwrap_or(content[3]),
                        cr_terminated: bare_cr,
                        cut: None,
                        // The escape sequences that can stand for a control
                        // character are seen for `\` alone, the escape
                        // character nearly every sender uses.
                        seen: if content.get(6) == Some(&b'\\') { seen } else { Seen::Controls },
                        segments,
                    });
                }
                Line::Envelope(id) => {
                    self.close(Ending::NextLine);
                    self.flush_junk();
                    self.envelope(id, content, start, line);
                }
                Line::Other => {
                    if let Some(open) = &mut self.current {
                        // Right after a segment, with no blank line between.
                        let adjacent = start == open.end;
                        // A line break in a value: the message's last line
                        // (before any blank ones) ended in a bare LF too.
                        let in_value = open.cr_terminated
                            && after_bare_lf
                            && buf[..open.end].ends_with(b"\n")
                            && !buf[..open.end].ends_with(b"\r\n");
                        if starts_segment(content, open.field) || in_value {
                            open.add(content, start, stop, next, seen);
                            continue;
                        }
                        // With the message's delimiters in it, the line is
                        // most likely the rest of a segment after a line
                        // break inside a value, or a segment with a bad ID:
                        // the message as read would miss what it says.
                        let delimited = content.contains(&open.field) || content.contains(&open.component);
                        if adjacent && delimited {
                            self.close(Ending::Cut("a line inside it is not a segment (a line break inside a value, or a bad segment ID), so the rest of the message is not read"));
                        } else {
                            // Other junk ends the message only if no
                            // segment of it follows: it waits aside.
                            self.suspended = self.current.take();
                        }
                    } else if let Some(open) = &mut self.suspended
                        && starts_segment(content, open.field)
                        // A header's ID alone is no segment of the message.
                        && !matches!(content.get(..3), Some(b"MSH" | b"FHS" | b"BHS"))
                    {
                        // The junk stood inside the message, so it is part
                        // of it, not junk of its own; the message may miss
                        // what that junk says, so it is cut.
                        open.cut = Some(JUNK_INSIDE);
                        // Parsing reads the junk as it reads any line.
                        open.segments = None;
                        open.add(content, start, stop, next, seen);
                        self.junk = None;
                        self.current = self.suspended.take();
                        continue;
                    }
                    match &mut self.junk {
                        Some(junk) => junk.end = stop,
                        None => self.junk = Some(Junk { start, line, end: stop }),
                    }
                }
            }
            return;
        }
    }

    /// Reads the framing byte at `self.pos`, or finishes at the end.
    fn frame_byte_or_end(&mut self) {
        // Outside a frame, a framing byte in the middle of a segment is a
        // stray byte in a value, not the end of the message.
        let mid_segment = self.current.as_ref().is_some_and(|open| !open.terminated && !open.framed);
        match self.buf.get(self.pos) {
            Some(&VT) if mid_segment => {
                self.close(Ending::Cut("a stray 0x0B byte inside a segment"));
                self.flush_junk();
            }
            Some(_) if mid_segment => {
                self.close(Ending::Cut("a stray 0x1C byte inside a segment"));
                self.flush_junk();
                self.in_frame = false;
            }
            Some(&VT) => {
                self.close(Ending::FrameStart);
                self.flush_junk();
                self.in_frame = true;
            }
            Some(_) => {
                self.close(Ending::FrameEnd);
                self.flush_junk();
                self.in_frame = false;
                self.frames_end = true;
            }
            None => {
                self.finish();
                return;
            }
        }
        self.after_bare_lf = false;
        self.pos += 1;
    }

    /// Yields the message being read, if any, deciding whether it was cut off.
    fn close(&mut self, end: Ending) {
        let Some(open) = self.current.take().or_else(|| self.suspended.take()) else { return };
        let reason = match end {
            Ending::Cut(reason) => Some(reason),
            _ if open.cut.is_some() => open.cut,
            // Cut at a segment end, a frame looks whole; but where the
            // file's frames end with 0x1C, one without it lost its end.
            Ending::Input | Ending::FrameStart if open.framed && open.terminated && self.frames_end => {
                Some("its MLLP frame never got its end (0x1C), which the file's earlier frames have")
            }
            _ if open.terminated => None,
            Ending::Input if open.framed => Some("the file ends inside its MLLP frame, mid-segment"),
            Ending::FrameStart if open.framed => Some("a new MLLP frame starts before this one ended"),
            Ending::Input if self.file_open.is_some() || self.batch_open.is_some() => {
                Some("the file ends mid-segment, before the trailer its header promised")
            }
            _ => None,
        };
        debug_assert!(
            self.closed.is_none() && self.pending.is_empty(),
            "a line ends one message at most, first"
        );
        self.closed = Some(Item {
            number: open.number,
            raw: &self.buf[open.start..open.end],
            offset: open.start,
            line: open.line,
            framed: open.framed,
            truncated: reason,
            segments: open.segments,
            seen: open.seen,
        });
        if let Some(reason) = reason {
            self.pending.push_back(Err(BatchProblem::Truncated {
                number: open.number,
                offset: open.start,
                line: open.line,
                reason,
            }));
        }
        self.in_batch += 1;
        self.in_file += 1;
    }

    fn flush_junk(&mut self) {
        if let Some(junk) = self.junk.take() {
            self.pending.push_back(Err(BatchProblem::Junk {
                offset: junk.start,
                line: junk.line,
                len: junk.end - junk.start,
            }));
        }
    }

    fn envelope(&mut self, id: &'static str, content: &'a [u8], offset: usize, line: usize) {
        let header = Header { raw: content, offset, line };
        match id {
            seg::FHS => {
                self.close_batch();
                if let Some(header_line) = self.file_open.take() {
                    self.missing(seg::FTS, header_line);
                }
                self.file_open = Some(line);
                self.file_header = Some(header);
                (self.in_file, self.in_batch, self.batches) = (0, 0, 0);
            }
            seg::BHS => {
                self.close_batch();
                self.batch_open = Some(line);
                self.batch_header = Some(header);
                self.in_batch = 0;
                self.batches += 1;
            }
            seg::BTS => {
                // A BTS with no BHS still ends a batch.
                if self.batch_open.take().is_none() {
                    self.batches += 1;
                }
                self.check_count(seg::BTS, content, self.in_batch, line);
                self.in_batch = 0;
            }
            _ => {
                self.close_batch();
                let found = if self.batches == 0 && self.in_file > 0 { 1 } else { self.batches };
                self.check_count(seg::FTS, content, found, line);
                self.file_open = None;
                (self.in_file, self.in_batch, self.batches) = (0, 0, 0);
                return;
            }
        }
        if let Some(kept) = &mut self.kept
            && id != seg::BTS
        {
            kept.push(header);
        }
    }

    /// A BHS still open when something else begins lacks its BTS.
    fn close_batch(&mut self) {
        if let Some(header_line) = self.batch_open.take() {
            self.missing(seg::BTS, header_line);
        }
    }

    fn missing(&mut self, trailer: &'static str, header_line: usize) {
        self.pending.push_back(Err(BatchProblem::MissingTrailer { trailer, header_line }));
    }

    /// Checks field 1 of a trailer. Its separator is the byte after the ID,
    /// as in every segment; the count is a plain number, so the header's
    /// other delimiters do not matter.
    fn check_count(&mut self, trailer: &'static str, content: &[u8], found: usize, line: usize) {
        let Some((&sep, rest)) = content.get(3..).and_then(<[u8]>::split_first) else { return };
        let value = rest[..memchr(sep, rest).unwrap_or(rest.len())].trim_ascii();
        if value.is_empty() {
            return;
        }
        let declared = std::str::from_utf8(value).ok().and_then(|v| v.parse::<usize>().ok());
        let problem = match declared {
            Some(declared) if declared == found => return,
            Some(declared) => BatchProblem::CountMismatch { trailer, declared, found, line },
            None => BatchProblem::BadCount {
                trailer,
                value: String::from_utf8_lossy(&value[..value.len().min(20)]).into_owned(),
                line,
            },
        };
        self.pending.push_back(Err(problem));
    }

    fn finish(&mut self) {
        self.close(Ending::Input);
        self.flush_junk();
        self.close_batch();
        if let Some(header_line) = self.file_open.take() {
            self.missing(seg::FTS, header_line);
        }
        self.done = true;
    }
}

impl<'a> Iterator for Splitter<'a> {
    type Item = Result<Item<'a>, BatchProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.closed.take() {
                return Some(Ok(item));
            }
            if let Some(found) = self.pending.pop_front() {
                return Some(found);
            }
            if self.done {
                return None;
            }
            self.step();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// (number, line, offset, raw) of each item.
    fn items<'a>(b: &Batch<'a>) -> Vec<(usize, usize, usize, &'a [u8])> {
        b.items.iter().map(|i| (i.number, i.line, i.offset, i.raw)).collect()
    }

    const M1: &[u8] = b"MSH|^~\\&|A||||||ADT^A28|1|P|2.5\rPID|1||100\r";
    const M2: &[u8] = b"MSH|^~\\&|A||||||ADT^A31|2|P|2.5\rPID|1||200\rPV1|1|O\r";

    /// What may have cut a message short makes it truncated, with the
    /// reason, so that it is queued as ERROR rather than loaded with part
    /// of what it says; what cannot have is only junk.
    #[test]
    fn a_message_that_may_have_been_cut_is_truncated() {
        let cut = |buf: &[u8]| split(buf).items.iter().map(|i| i.truncated).collect::<Vec<_>>();
        // A stray framing byte inside a value, outside any frame; a message
        // after it without a final line end is not taken to be in a frame.
        let stray_fs = [&b"MSH|^~\\&|A\rPID|1||E1||Pa\x1cvid|x\r"[..], M1].concat();
        assert_eq!(cut(&stray_fs), [Some("a stray 0x1C byte inside a segment"), None]);
        let stray_vt = [&b"MSH|^~\\&|A\rPID|1||E1||Pa\x0bvid|x\r"[..], b"MSH|^~\\&|A\rPID|1||200"].concat();
        assert_eq!(cut(&stray_vt), [Some("a stray 0x0B byte inside a segment"), None]);
        // A line break inside a value of a CRLF file: the rest of the segment
        // is a line with the message's delimiters in it.
        let broken = b"MSH|^~\\&|A\r\nPID|1||E1||Lee^Al|||1 Elm St\nRear^^Boston\r\nPV1|1\r\n";
        let b = split(broken);
        assert!(b.items[0].truncated.is_some_and(|r| r.contains("not a segment")), "{:?}", b.items[0]);
        assert!(
            matches!(b.problems[..], [BatchProblem::Truncated { .. }, BatchProblem::Junk { .. }]),
            "{:?}",
            b.problems
        );
        // A line without delimiters after a message (a log line, a DOS
        // end-of-file byte), or any line after a blank one, is only junk.
        for tail in [&b"END OF FILE\r\n"[..], b"\x1a", b"\r\nnote: a|b\r\n"] {
            let buf = [&b"MSH|^~\\&|A\r\nPID|1||E1\r\n"[..], tail].concat();
            assert_eq!(cut(&buf), [None], "{tail:?}");
        }
    }

    /// In a CR-terminated message, a line after a blank line is not the rest
    /// of a value (a line break in a value ends in a bare LF, not in CR LF).
    #[test]
    fn text_after_a_blank_line_is_not_glued_to_a_cr_message() {
        let b = split(b"MSH|^~\\&|A\rPID|1||E1|||||||||^PRN^PH^^^617^5550100\r\n\nend of export\n");
        assert_eq!(b.items[0].raw, b"MSH|^~\\&|A\rPID|1||E1|||||||||^PRN^PH^^^617^5550100\r\n");
        assert!(matches!(b.problems[..], [BatchProblem::Junk { line: 4, .. }]), "{:?}", b.problems);
    }

    /// Files joined whole, each with its byte order mark: the mark before a
    /// later message is left out, as at the start.
    #[test]
    fn a_byte_order_mark_before_a_later_message_is_left_out() {
        let buf = [b"\xEF\xBB\xBF", M1, b"\xEF\xBB\xBF", M2].concat();
        let b = split(&buf);
        assert_eq!(b.problems, []);
        assert_eq!(items(&b), [(1, 1, 3, M1), (2, 3, 6 + M1.len(), M2)]);
    }

    #[test]
    fn plain_concatenation() {
        let buf = [M1, M2].concat();
        let b = split(&buf);
        assert_eq!(b.problems, []);
        assert_eq!(items(&b), [(1, 1, 0, M1), (2, 3, M1.len(), M2)]);
        assert!(b.items.iter().all(|i| !i.framed && i.truncated.is_none()));
        assert_eq!(b.items[1].parse().unwrap().control_id().as_deref(), Some("2"));
        assert!(b.file_header.is_none());
    }

    #[test]
    fn lf_and_crlf_files_and_no_final_newline() {
        let b = split(b"MSH|^~\\&|A\nPID|1\nMSH|^~\\&|B\nPID|2");
        assert_eq!(b.problems, []);
        assert_eq!(
            items(&b),
            [(1, 1, 0, &b"MSH|^~\\&|A\nPID|1\n"[..]), (2, 3, 17, b"MSH|^~\\&|B\nPID|2")],
            "a missing final newline is not truncation"
        );
        assert!(b.items[1].truncated.is_none());
        let b = split(b"MSH|^~\\&|A\r\nPID|1\r\nMSH|^~\\&|B\r\nPID|2\r\n");
        assert_eq!(
            items(&b),
            [(1, 1, 0, &b"MSH|^~\\&|A\r\nPID|1\r\n"[..]), (2, 3, 19, b"MSH|^~\\&|B\r\nPID|2\r\n")]
        );
    }

    #[test]
    fn blank_lines_between_and_inside_messages() {
        let b = split(b"\r\n\r\nMSH|^~\\&|A\r\n\r\nPID|1\r\n\r\n  \r\n\t\r\nMSH|^~\\&|B\rPID|2\r\r\r");
        assert_eq!(b.problems, []);
        assert_eq!(
            items(&b),
            [(1, 3, 4, &b"MSH|^~\\&|A\r\n\r\nPID|1\r\n"[..]), (2, 9, 34, b"MSH|^~\\&|B\rPID|2\r")],
            "blank lines inside stay, trailing ones go"
        );
        let m = b.items[0].parse().unwrap();
        assert_eq!(m.segments().count(), 2);
    }

    #[test]
    fn bom_is_skipped() {
        let buf = [b"\xEF\xBB\xBF", M1, M2].concat();
        let b = split(&buf);
        assert_eq!(b.problems, []);
        assert_eq!(items(&b), [(1, 1, 3, M1), (2, 3, 3 + M1.len(), M2)]);
        // A BOM anywhere else is junk.
        let buf = [M1, b"\xEF\xBB\xBF\r", M2].concat();
        let b = split(&buf);
        assert_eq!(items(&b), [(1, 1, 0, M1), (2, 4, M1.len() + 4, M2)]);
        assert_eq!(b.problems, [BatchProblem::Junk { offset: M1.len(), line: 3, len: 3 }]);
    }

    #[test]
    fn mllp_frames() {
        let buf = [b"\x0b", M1, b"\x1c\r\x0b", M2, b"\x1c\r"].concat();
        let b = split(&buf);
        assert_eq!(b.problems, []);
        assert_eq!(items(&b), [(1, 1, 1, M1), (2, 4, M1.len() + 4, M2)]);
        assert!(b.items.iter().all(|i| i.framed && i.truncated.is_none()));
        // Frames without the final CR in the message, or without CR after 0x1C.
        let b = split(b"\x0bMSH|^~\\&|A\rPID|1\x1c\x0bMSH|^~\\&|B\rPID|2\r\x1c");
        assert_eq!(b.problems, []);
        assert_eq!(items(&b), [(1, 1, 1, &b"MSH|^~\\&|A\rPID|1"[..]), (2, 2, 19, b"MSH|^~\\&|B\rPID|2\r")]);
        assert!(b.items.iter().all(|i| i.truncated.is_none()));
    }

    #[test]
    fn mllp_frame_cut_off_at_the_end() {
        let buf = [b"\x0b", M1, b"\x1c\r\x0bMSH|^~\\&|B\rPID|1||12"].concat();
        let b = split(&buf);
        assert_eq!(items(&b), [(1, 1, 1, M1), (2, 4, M1.len() + 4, &b"MSH|^~\\&|B\rPID|1||12"[..])]);
        assert!(b.items[1].truncated.is_some() && b.items[0].truncated.is_none());
        assert_eq!(
            b.problems,
            [BatchProblem::Truncated {
                number: 2,
                offset: M1.len() + 4,
                line: 4,
                reason: "the file ends inside its MLLP frame, mid-segment"
            }]
        );
        assert!(b.problems[0].to_string().starts_with("line 4: message 2 is cut off"));
        // Cut at a segment end, the message looks whole: not flagged.
        let b = split(b"\x0bMSH|^~\\&|B\rPID|1\r");
        assert_eq!((b.items.len(), b.items[0].truncated.is_some(), b.problems.len()), (1, false, 0));
        // Unless an earlier frame of the file ended: this sender ends them,
        // so a frame without its end, at the file's end or before the next
        // frame, was cut short.
        let unended = "its MLLP frame never got its end (0x1C), which the file's earlier frames have";
        let buf = [b"\x0b", M1, b"\x1c\r\x0bMSH|^~\\&|B\rPID|1\r"].concat();
        let b = split(&buf);
        assert_eq!(b.items.iter().map(|i| i.truncated).collect::<Vec<_>>(), [None, Some(unended)]);
        let buf = [b"\x0b", M1, b"\x1c\r\x0bMSH|^~\\&|B\rPID|1\r\x0b", M2, b"\x1c\r"].concat();
        let b = split(&buf);
        assert_eq!(b.items.iter().map(|i| i.truncated).collect::<Vec<_>>(), [None, Some(unended), None]);
    }

    #[test]
    fn mllp_frame_cut_off_by_the_next_frame() {
        let b = split(b"\x0bMSH|^~\\&|A\rPID|1||1\x0bMSH|^~\\&|B\rPID|2\r\x1c\r");
        assert_eq!(
            items(&b),
            [(1, 1, 1, &b"MSH|^~\\&|A\rPID|1||1"[..]), (2, 2, 21, b"MSH|^~\\&|B\rPID|2\r")]
        );
        assert_eq!((b.items[0].truncated.is_some(), b.items[1].truncated.is_some()), (true, false));
        assert!(matches!(b.problems[..], [BatchProblem::Truncated { number: 1, line: 1, .. }]));
    }

    #[test]
    fn batch_file_with_correct_counts() {
        let buf = [
            &b"FHS|^~\\&|EHR|CLINIC|||20260102||out.hl7\r"[..],
            b"BHS|^~\\&|EHR\r",
            M1,
            M2,
            b"BTS|2\r",
            b"BHS|^~\\&|EHR\r",
            M1,
            b"BTS|1|comment\r",
            b"FTS|2\r",
        ]
        .concat();
        let b = split(&buf);
        assert_eq!(b.problems, []);
        let lines: Vec<(usize, usize)> = b.items.iter().map(|i| (i.number, i.line)).collect();
        assert_eq!(lines, [(1, 3), (2, 5), (3, 10)]);
        assert_eq!(b.items[0].raw, M1, "the BTS is not part of the message before it");
        assert_eq!(b.items[1].raw, M2);
        let fhs = b.file_header.unwrap();
        assert_eq!((fhs.id(), fhs.line, fhs.offset), ("FHS", 1, 0));
        assert_eq!(fhs.segment().unwrap().field(9).text().unwrap(), "out.hl7");
        assert_eq!(fhs.segment().unwrap().field(3).text().unwrap(), "EHR");
        let bhs: Vec<usize> = b.batch_headers.iter().map(|h| h.line).collect();
        assert_eq!(bhs, [2, 9]);
        assert_eq!(b.batch_headers[0].segment().unwrap().id(), "BHS");
    }

    #[test]
    fn batch_header_with_own_delimiters() {
        let b = split(b"FHS#@*$!#EHR######f$T$1\rMSH|^~\\&|A\rPID|1\rFTS#1\r");
        assert_eq!(b.problems, []);
        let fhs = b.file_header.unwrap().segment().unwrap();
        assert_eq!(fhs.field(2).text().unwrap(), "@*$!");
        assert_eq!(fhs.field(9).text().unwrap(), "f!1");
        assert_eq!(b.items[0].raw, b"MSH|^~\\&|A\rPID|1\r");
    }

    #[test]
    fn wrong_counts_are_reported() {
        let buf = [&b"FHS|^~\\&\rBHS|^~\\&\r"[..], M1, M2, b"BTS|3\rFTS|2\r"].concat();
        let b = split(&buf);
        assert_eq!(b.items.len(), 2);
        assert_eq!(
            b.problems,
            [
                BatchProblem::CountMismatch { trailer: "BTS", declared: 3, found: 2, line: 8 },
                BatchProblem::CountMismatch { trailer: "FTS", declared: 2, found: 1, line: 9 },
            ]
        );
        assert_eq!(
            b.problems[0].to_string(),
            "line 8: BTS-1 says 3 messages in the batch, but the file holds 2"
        );
        assert_eq!(
            b.problems[1].to_string(),
            "line 9: FTS-1 says 2 batches in the file, but the file holds 1"
        );
    }

    #[test]
    fn counts_with_no_batch_headers_and_bad_or_empty_counts() {
        // A file with messages but no BHS/BTS counts as one batch.
        let buf = [&b"FHS|^~\\&\r"[..], M1, M2, b"FTS|1\r"].concat();
        assert_eq!(split(&buf).problems, []);
        // A BTS without a BHS counts the messages before it.
        let buf = [M1, M2, b"BTS|2\r", M1, b"BTS|1\rFTS|2"].concat();
        assert_eq!(split(&buf).problems, []);
        // Empty counts are not checked; bad ones are reported.
        let buf = [&b"BHS|^~\\&\r"[..], M1, b"BTS\rFTS||x\r"].concat();
        assert_eq!(split(&buf).problems, []);
        let buf = [&b"BHS|^~\\&\r"[..], M1, b"BTS|two\r"].concat();
        assert_eq!(
            split(&buf).problems,
            [BatchProblem::BadCount { trailer: "BTS", value: "two".into(), line: 4 }]
        );
        let buf = [&b"FHS|^~\\&\r"[..], b"FTS|0\r"].concat();
        assert_eq!(split(&buf).problems, [], "an empty file of batches");
    }

    #[test]
    fn missing_trailers() {
        let buf = [&b"FHS|^~\\&\rBHS|^~\\&\r"[..], M1, b"BHS|^~\\&\r", M2].concat();
        let b = split(&buf);
        assert_eq!(b.items.len(), 2);
        assert!(b.items.iter().all(|i| i.truncated.is_none()), "the last message ends with its terminator");
        assert_eq!(
            b.problems,
            [
                BatchProblem::MissingTrailer { trailer: "BTS", header_line: 2 },
                BatchProblem::MissingTrailer { trailer: "BTS", header_line: 5 },
                BatchProblem::MissingTrailer { trailer: "FTS", header_line: 1 },
            ]
        );
        assert_eq!(b.problems[2].to_string(), "line 1: the FHS here has no FTS; the file may be incomplete");
    }

    #[test]
    fn truncated_last_message_of_a_batch_file() {
        let buf = [&b"FHS|^~\\&\rBHS|^~\\&\r"[..], M1, b"MSH|^~\\&|B\rPID|1||Do"].concat();
        let b = split(&buf);
        assert_eq!(items(&b), [(1, 3, 18, M1), (2, 5, 18 + M1.len(), &b"MSH|^~\\&|B\rPID|1||Do"[..])]);
        assert!(b.items[1].truncated.is_some());
        assert_eq!(
            b.problems,
            [
                BatchProblem::Truncated {
                    number: 2,
                    offset: 18 + M1.len(),
                    line: 5,
                    reason: "the file ends mid-segment, before the trailer its header promised"
                },
                BatchProblem::MissingTrailer { trailer: "BTS", header_line: 2 },
                BatchProblem::MissingTrailer { trailer: "FTS", header_line: 1 },
            ]
        );
    }

    #[test]
    fn junk_between_messages() {
        let buf = [&b"garbage before\r\n"[..], M1, b"\r\n-- cut here --\r\nstill junk\r\n\r\n", M2, b"\x1a"]
            .concat();
        let b = split(&buf);
        assert_eq!(items(&b), [(1, 2, 16, M1), (2, 8, 16 + M1.len() + 32, M2)]);
        assert_eq!(
            b.problems,
            [
                BatchProblem::Junk { offset: 0, line: 1, len: 14 },
                BatchProblem::Junk { offset: 16 + M1.len() + 2, line: 5, len: 26 },
                BatchProblem::Junk { offset: buf.len() - 1, line: 11, len: 1 },
            ]
        );
        // A line that is not a segment, followed by one, stood inside the
        // message: it is cut, and nothing after the line is lost as junk.
        let raw = b"MSH|^~\\&\rPID|1\rnot a segment\r\rZZZ|1\r";
        let b = split(raw);
        assert_eq!(items(&b), [(1, 1, 0, &raw[..])]);
        assert_eq!(b.items[0].truncated, Some(JUNK_INSIDE));
        assert_eq!(
            b.problems,
            [BatchProblem::Truncated { number: 1, offset: 0, line: 1, reason: JUNK_INSIDE }]
        );
        let m = b.items[0].parse().unwrap();
        assert_eq!(m.value("MSH-2").as_deref(), Some("^~\\&"), "parsed without the splitter's index");
        // Followed by nothing of the message, it is junk after it.
        let b = split(b"MSH|^~\\&\rPID|1\rnot a segment\rMSH|^~\\&\r");
        assert_eq!(items(&b)[0], (1, 1, 0, &b"MSH|^~\\&\rPID|1\r"[..]));
        assert_eq!(b.problems, [BatchProblem::Junk { offset: 15, line: 3, len: 13 }]);
        let b = split(b"MSH|^~\\&\nPID|1\nnot a segment\n");
        assert_eq!(b.problems, [BatchProblem::Junk { offset: 15, line: 3, len: 13 }]);
        // A frame with no message in it.
        let b = split(b"\x0bhello\x1c\r");
        assert_eq!(b.problems, [BatchProblem::Junk { offset: 1, line: 1, len: 5 }]);
    }

    #[test]
    fn msh_must_start_a_line_and_have_a_separator() {
        let b = split(b"MSH|^~\\&\rNTE|see MSH|x\rMSHA\rMSH\rMSH|^~\\&\r");
        assert_eq!(items(&b), [(1, 1, 0, &b"MSH|^~\\&\rNTE|see MSH|x\r"[..]), (2, 5, 32, b"MSH|^~\\&\r")]);
        assert_eq!(b.problems, [BatchProblem::Junk { offset: 23, line: 3, len: 8 }]);
    }

    #[test]
    fn line_breaks_inside_values_of_cr_terminated_messages_stay() {
        let raw = b"MSH|^~\\&\rOBX|1|TX|||one\ntwo\n\nfour|F\rNTE|1\r";
        let b = split(raw);
        assert_eq!((items(&b), b.problems), (vec![(1, 1, 0, &raw[..])], vec![]));
        let m = b.items[0].parse().unwrap();
        assert_eq!(m.value("OBX-5").as_deref(), Some("one\ntwo\n\nfour"));
        assert_eq!(m.value("NTE-1").as_deref(), Some("1"));
        // With LF or CRLF terminators a line break cannot be told from a
        // segment end, so the message is cut: loud, where a guess would be
        // silent.
        let b = split(b"MSH|^~\\&\r\nOBX|1|TX|||one\r\ntwo\r\nNTE|1\r\n");
        assert_eq!(b.items.len(), 1);
        assert_eq!(
            b.problems,
            [BatchProblem::Truncated { number: 1, offset: 0, line: 1, reason: JUNK_INSIDE }]
        );
    }

    #[test]
    fn problems_in_file_order_while_streaming() {
        let buf = [&b"junk\r"[..], M1, b"BTS|5\r", M2].concat();
        let found: Vec<String> = Splitter::new(&buf)
            .map(|r| match r {
                Ok(i) => format!("item {}", i.number),
                Err(p) => format!("{p}"),
            })
            .collect();
        assert_eq!(
            found,
            [
                "line 1: 4 bytes at offset 0 are not part of any message",
                "item 1",
                "line 4: BTS-1 says 5 messages in the batch, but the file holds 1",
                "item 2"
            ]
        );
    }

    #[test]
    fn splitter_headers_while_streaming() {
        let buf = [&b"FHS|^~\\&|X\rBHS|^~\\&|Y\r"[..], M1].concat();
        let mut s = Splitter::new(&buf);
        assert!(s.file_header().is_none());
        let first = s.next().unwrap().unwrap();
        assert_eq!(first.number, 1);
        assert_eq!(s.file_header().unwrap().line, 1);
        assert_eq!(s.batch_header().unwrap().line, 2);
        assert!(s.kept.is_none(), "streaming keeps no list of headers");
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for buf in [&b""[..], b"\xEF\xBB\xBF", b"\r\n", b"\x0b", b"\x1c", b"\x0b\x1c\r"] {
            let b = split(buf);
            assert!(b.items.is_empty() && b.problems.is_empty(), "{buf:?}");
        }
        let b = split(b"MSH|");
        assert_eq!(items(&b), [(1, 1, 0, &b"MSH|"[..])]);
        assert!(b.items[0].parse().is_err());
    }

    #[test]
    fn debug_does_not_print_values() {
        let b = split(b"FHS|^~\\&|Secret\rMSH|^~\\&\rPID|1||||Doe\r");
        let all = format!("{b:?}");
        assert!(!all.contains("Doe") && !all.contains("Secret"), "{all}");
    }

    /// Walks everything a message offers, decoding every value.
    fn walk(raw: &[u8]) {
        if let Ok(m) = Message::parse(raw) {
            let _ = (m.message_type(), m.control_id(), m.timestamp(), m.value("PID-3[2].4.1"));
            for n in 0..24 {
                assert_eq!(m.msh_field(n).raw(), m.msh().field(n).raw(), "MSH-{n}");
            }
            let _ = m.to_tree();
            for s in m.segments() {
                let _ = (s.id(), s.field_count(), s.field(0), s.field(s.field_count() + 1).text());
                let indexed = s.indexed();
                for n in 0..=s.field_count() + 1 {
                    assert_eq!(indexed.field(n).raw(), s.field(n).raw(), "{} field {n}", s.id());
                }
                for f in s.fields() {
                    let _ = (f.text(), f.is_null(), f.component(3).subcomponent(2).text());
                    for r in f.repetitions() {
                        let _ = r.text();
                        let indexed = r.indexed();
                        for n in 0..=r.components().count() + 18 {
                            assert_eq!(indexed.component(n).raw(), r.component(n).raw(), "component {n}");
                        }
                        for c in r.components() {
                            let _ = c.text();
                            for sc in c.subcomponents() {
                                let _ = sc.text();
                            }
                        }
                    }
                }
            }
        }
    }

    fn hl7ish() -> impl Strategy<Value = Vec<u8>> {
        // Bytes that matter to the splitter and parser, weighted up.
        let byte = prop_oneof![
            4 => any::<u8>(),
            2 => prop::sample::select(b"\r\n\x0b\x1c|^~\\&# ".to_vec()),
            1 => prop::sample::select(vec![b'M', b'S', b'H', b'F', b'B', b'T', b'X', b'0', b'.']),
        ];
        let chunk = prop_oneof![
            8 => prop::collection::vec(byte, 1..20),
            1 => prop::sample::select(vec![
                b"MSH|^~\\&|".to_vec(), b"\rPID|".to_vec(), b"\nFHS|^~\\&".to_vec(), b"\rBHS|^~\\&".to_vec(),
                b"\rBTS|1".to_vec(), b"\rFTS|".to_vec(), b"\x0bMSH#@*$!".to_vec(), b"\\X".to_vec(), b"\xEF\xBB\xBF".to_vec(),
            ]),
        ];
        prop::collection::vec(chunk, 0..200).prop_map(|c| c.concat())
    }

    proptest! {
        /// Line ends found a block at a time are the first CR, LF, 0x0B or
        /// 0x1C from each start, with or without AVX2, wherever blocks and
        /// lines begin: after the line before, or further on.
        #[test]
        fn line_ends_are_the_first_ending_byte(
            buf in prop::collection::vec(
                prop::sample::select(vec![b'a', b'|', b'\t', b'\r', b'\n', VT, FS, 0x80, 0xC3, 0xFF]),
                0..400,
            ),
            gaps in prop::collection::vec(0usize..80, 1..60),
        ) {
            for avx2 in [false, cfg!(target_arch = "x86_64") && LineEnds::new(&buf, 0).avx2] {
                let mut ends = LineEnds::new(&buf, 0);
                let mut start = 0;
                for &gap in &gaps {
                    if start >= buf.len() {
                        break;
                    }
                    let found = if avx2 { ends.find::<true>(&buf, start) } else { ends.find::<false>(&buf, start) };
                    let stop = buf[start..]
                        .iter()
                        .position(|b| [b'\r', b'\n', VT, FS].contains(b))
                        .map_or(buf.len(), |i| start + i);
                    prop_assert_eq!(found, (stop, Seen::of(&buf[start..stop])));
                    start = stop + gap.max(usize::from(stop == start));
                }
            }
        }

        #[test]
        fn special_bytes_in_a_block(block in prop::array::uniform32(any::<u8>()), other in prop::array::uniform32(any::<u8>())) {
            let block: [u8; BLOCK] = [block, other].concat().try_into().unwrap();
            prop_assert_eq!(special(&block), special_bytewise(&block));
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has AVX2, as just checked.
                prop_assert_eq!(unsafe { special_avx2(&block) }, special_bytewise(&block));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..4096)) {
            let with_header = [&b"MSH|^~\\&|"[..], &buf].concat();
            for buf in [&buf[..], &with_header] {
                for item in &split(buf).items {
                    walk(item.raw);
                }
                walk(buf);
            }
        }

        #[test]
        fn hl7ish_bytes_never_panic_and_items_are_consistent(tail in hl7ish()) {
            let buf = [&b"MSH|^~\\&|"[..], &tail].concat();
            walk(&buf);
            let b = split(&buf);
            let mut previous_end = 0;
            for (i, item) in b.items.iter().enumerate() {
                prop_assert_eq!(item.number, i + 1);
                prop_assert!(item.offset >= previous_end);
                prop_assert_eq!(&buf[item.offset..item.offset + item.raw.len()], item.raw);
                prop_assert!(item.raw.starts_with(b"MSH"));
                // Lines are counted as the buffer's own line ends say.
                let before = &buf[..item.offset];
                let ends = before.iter().enumerate()
                    .filter(|&(j, &c)| c == b'\n' || (c == b'\r' && before.get(j + 1) != Some(&b'\n')))
                    .count();
                prop_assert_eq!(item.line, ends + 1);
                previous_end = item.offset + item.raw.len();
                walk(item.raw);
                // The segments noted while splitting are the ones parsing
                // finds on its own (`parse_with_segments` asserts it).
                let noted = item.parse().map(|m| m.segments().map(|s| s.raw()).collect::<Vec<_>>());
                let found = Message::parse(item.raw).map(|m| m.segments().map(|s| s.raw()).collect::<Vec<_>>());
                prop_assert_eq!(noted, found);
            }
        }
    }
}
