//! Owned messages and writing them as bytes. [`MessageTree`] is a message
//! as plain unescaped strings, built by [`Message::to_tree`] or by hand;
//! [`encode`] writes one with the standard delimiters `|^~\&`, CR segment
//! terminators and UTF-8, and says so in MSH-18. This module owns that
//! normal form. It does not decide what goes in a message (that is the
//! callers') or frame it for MLLP.
//!
//! Normalising: delimiters and the character set describe bytes, not
//! content, so a tree does not carry them. `to_tree` puts the standard
//! delimiters in MSH-1 and MSH-2 and `UNICODE UTF-8` in MSH-18 (adding empty
//! fields up to it), which is exactly what `encode` writes, so
//! `Message::parse(&encode(&tree))?.to_tree()? == tree` for every tree that
//! `to_tree` returns. A tree built by hand is written the same way: its
//! MSH-1, MSH-2 and MSH-18 are ignored.

use super::error::Hl7Error;
use super::escape;
use super::parse::{Charset, Delimiters, MSH_CHARSET, Message, is_header_id};
use super::seg;

/// The subcomponents of one component.
pub type ComponentTree = Vec<String>;
/// The components of one repetition.
pub type RepetitionTree = Vec<ComponentTree>;
/// The repetitions of one field; empty for an empty field.
pub type FieldTree = Vec<RepetitionTree>;

/// One segment as unescaped text. `fields[0]` is field 1 (for MSH, MSH-1).
/// `id` must be a segment ID (three capitals or digits); `encode` does not
/// check it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentTree {
    pub id: String,
    pub fields: Vec<FieldTree>,
}

/// A whole message as unescaped text. Its `Debug` prints every value: it
/// is for tests, never for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageTree {
    pub segments: Vec<SegmentTree>,
}

/// What `encode` writes in MSH-1, MSH-2 and MSH-18, as tree fields.
fn normal_header_field(n: usize) -> FieldTree {
    let text = match n {
        1 => "|",
        2 => "^~\\&",
        _ => Charset::Utf8.name(),
    };
    vec![vec![vec![text.to_string()]]]
}

impl Message<'_> {
    /// The whole message as unescaped text, normalised as the module doc
    /// says. Fails on the first value that cannot be decoded.
    pub fn to_tree(&self) -> Result<MessageTree, Hl7Error> {
        let d = *self.delimiters();
        let charset = self.charset();
        let text =
            |raw: &[u8]| escape::text(raw, &d, charset, escape::Known::default()).map(|t| t.into_owned());
        let mut segments = Vec::new();
        for segment in self.segments() {
            let header = is_header_id(segment.id().as_bytes());
            let mut fields = Vec::with_capacity(segment.field_count());
            for (i, field) in segment.fields().enumerate() {
                let n = i + 1;
                if header && n <= 2 {
                    fields.push(normal_header_field(n));
                    continue;
                }
                // Split on every separator (not the public iterators, which
                // skip empty values) so that `a~` keeps its empty second
                // repetition and `a^` its empty second component.
                let mut reps = Vec::new();
                if !field.is_empty() {
                    for rep in field.raw().split(|&b| b == d.repetition) {
                        let mut components = Vec::new();
                        for component in rep.split(|&b| b == d.component) {
                            let subs = component.split(|&b| b == d.subcomponent).map(text);
                            components.push(subs.collect::<Result<ComponentTree, _>>()?);
                        }
                        reps.push(components);
                    }
                }
                // A value that unescapes to nothing (`\H\`) is written back
                // as an empty field, which reads as no repetitions.
                if reps.len() == 1 && reps[0].len() == 1 && reps[0][0] == [""] {
                    reps.clear();
                }
                fields.push(reps);
            }
            if segment.id() == seg::MSH {
                if fields.len() < MSH_CHARSET {
                    fields.resize(MSH_CHARSET, Vec::new());
                }
                fields[MSH_CHARSET - 1] = normal_header_field(MSH_CHARSET);
            }
            segments.push(SegmentTree { id: segment.id().to_string(), fields });
        }
        Ok(MessageTree { segments })
    }
}

/// Writes a message with delimiters `|^~\&`, every delimiter and control
/// character in a value escaped, a CR after each segment, UTF-8 text, and
/// `UNICODE UTF-8` in MSH-18 (empty fields are added to reach it). MSH-1
/// and MSH-2 (and FHS-1/2, BHS-1/2) in the tree are ignored.
pub fn encode(tree: &MessageTree) -> Vec<u8> {
    let d = Delimiters::STANDARD;
    let mut out = Vec::with_capacity(256 * tree.segments.len());
    for segment in &tree.segments {
        out.extend_from_slice(segment.id.as_bytes());
        let header = is_header_id(segment.id.as_bytes());
        let is_msh = segment.id == seg::MSH;
        let mut written = 0;
        if header {
            out.extend_from_slice(b"|^~\\&");
            written = 2;
        }
        for (i, field) in segment.fields.iter().enumerate().skip(written) {
            out.push(d.field);
            if is_msh && i + 1 == MSH_CHARSET {
                out.extend_from_slice(Charset::Utf8.name().as_bytes());
            } else {
                write_field(&mut out, field, &d);
            }
            written = i + 1;
        }
        if is_msh && written < MSH_CHARSET {
            out.resize(out.len() + MSH_CHARSET - written, d.field);
            out.extend_from_slice(Charset::Utf8.name().as_bytes());
        }
        out.push(b'\r');
    }
    out
}

fn write_field(out: &mut Vec<u8>, field: &FieldTree, d: &Delimiters) {
    for (r, rep) in field.iter().enumerate() {
        if r > 0 {
            out.push(d.repetition);
        }
        for (c, component) in rep.iter().enumerate() {
            if c > 0 {
                out.push(d.component);
            }
            for (s, sub) in component.iter().enumerate() {
                if s > 0 {
                    out.push(d.subcomponent);
                }
                escape::escape_into(out, sub, d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tree_of(raw: &[u8]) -> MessageTree {
        Message::parse(raw).unwrap().to_tree().unwrap()
    }

    fn round_trip(raw: &[u8]) -> (MessageTree, Vec<u8>) {
        let tree = tree_of(raw);
        let bytes = encode(&tree);
        assert_eq!(tree_of(&bytes), tree, "{}", String::from_utf8_lossy(&bytes));
        (tree, bytes)
    }

    fn f(text: &str) -> FieldTree {
        vec![vec![vec![text.to_string()]]]
    }

    #[test]
    fn tree_shape() {
        let tree = tree_of(b"MSH|^~\\&|A\rPID|1||a^b&c~d||\r");
        let pid = &tree.segments[1];
        assert_eq!(pid.id, "PID");
        assert_eq!(pid.fields.len(), 5);
        assert_eq!(pid.fields[0], f("1"));
        assert_eq!(pid.fields[1], FieldTree::new(), "empty field, no repetitions");
        assert_eq!(
            pid.fields[2],
            vec![
                vec![vec!["a".to_string()], vec!["b".to_string(), "c".to_string()]],
                vec![vec!["d".to_string()]]
            ]
        );
        let msh = &tree.segments[0];
        assert_eq!(msh.fields.len(), 18, "padded to MSH-18");
        assert_eq!((&msh.fields[0], &msh.fields[1], &msh.fields[2]), (&f("|"), &f("^~\\&"), &f("A")));
        assert_eq!(msh.fields[17], f("UNICODE UTF-8"));
    }

    #[test]
    fn encodes_standard_form() {
        let (_, bytes) = round_trip(
            b"MSH#@*$!#EHR####20260102##ADT@A08#42#P#2.5######8859/1\nPID#1##X1@@@AU!SUB*X2#O|Brien@J^r\xE9$X0A$x\n",
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "MSH|^~\\&|EHR||||20260102||ADT^A08|42|P|2.5||||||UNICODE UTF-8\r\
             PID|1||X1^^^AU&SUB~X2|O\\F\\Brien^J\\S\\r\u{e9}\\X0A\\x\r"
        );
    }

    #[test]
    fn latin1_becomes_utf8() {
        let (tree, bytes) = round_trip(b"MSH|^~\\&|||||||ADT^A01|1|P|2.3||||||8859/1\rPID|1||||Mu\xF1oz\r");
        assert_eq!(tree.segments[1].fields[4], f("Muñoz"));
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(m.value("PID-5").as_deref(), Some("Muñoz"));
    }

    #[test]
    fn msh18_is_added_or_replaced() {
        // MSH-3 to MSH-17 are fifteen fields, so sixteen separators reach MSH-18.
        let tree = MessageTree {
            segments: vec![SegmentTree { id: "MSH".into(), fields: vec![f("x"), f("y"), f("APP")] }],
        };
        let bytes = encode(&tree);
        assert_eq!(bytes, format!("MSH|^~\\&|APP{}UNICODE UTF-8\r", "|".repeat(15)).as_bytes());
        assert_eq!(Message::parse(&bytes).unwrap().value("MSH-18").as_deref(), Some("UNICODE UTF-8"));
        let mut long = tree_of(format!("MSH|^~\\&{}ASCII|EN\r", "|".repeat(16)).as_bytes());
        long.segments[0].fields[17] = f("8859/1");
        assert_eq!(encode(&long), format!("MSH|^~\\&{}UNICODE UTF-8|EN\r", "|".repeat(16)).as_bytes());
        let bare = MessageTree { segments: vec![SegmentTree { id: "MSH".into(), fields: vec![] }] };
        assert_eq!(encode(&bare), format!("MSH|^~\\&{}UNICODE UTF-8\r", "|".repeat(16)).as_bytes());
    }

    #[test]
    fn values_that_unescape_to_nothing_and_empty_parts_round_trip() {
        round_trip(b"MSH|^~\\&\rNTE|\\H\\|\\H\\~|\\H\\^|a~|~|^|&|a&|\\.in\\~\\.br\\\r");
        let tree = tree_of(b"MSH|^~\\&\rNTE|\\H\\|~\r");
        assert_eq!(tree.segments[1].fields[0], FieldTree::new());
        assert_eq!(tree.segments[1].fields[1], vec![vec![vec![String::new()]], vec![vec![String::new()]]]);
    }

    #[test]
    fn lenient_text_round_trips() {
        round_trip(b"MSH|^~\\&\rNTE|C:\\temp\\x|\\Zloc\\|a\\P\\b|tail\\\r");
    }

    #[test]
    fn batch_header_segments_keep_their_shape() {
        let tree = MessageTree {
            segments: vec![
                SegmentTree { id: "FHS".into(), fields: vec![f("?"), f("?"), f("APP")] },
                SegmentTree { id: "BTS".into(), fields: vec![f("3")] },
            ],
        };
        assert_eq!(encode(&tree), b"FHS|^~\\&|APP\rBTS|3\r");
    }

    const IDS: &[&str] = &["PID", "PD1", "PV1", "NK1", "EVN", "SCH", "AIL", "AIP", "MRG", "ZX1", "OBX"];

    /// Text with delimiters, escape characters, line ends, escape-looking
    /// sequences and letters outside ASCII.
    fn value() -> impl Strategy<Value = String> {
        proptest::string::string_regex("([a-zA-Z0-9 |^~\\\\&#\r\n\t\"éñøßЖ東😀.]|\\\\[FSTREXHN.]\\\\?){0,12}")
            .unwrap()
    }

    fn field() -> impl Strategy<Value = FieldTree> {
        let component = prop::collection::vec(value(), 1..4);
        let rep = prop::collection::vec(component, 1..4);
        prop::collection::vec(rep, 0..3).prop_map(|mut f| {
            // The one form two trees share: a single empty value is an empty field.
            if f.len() == 1 && f[0].len() == 1 && f[0][0] == [""] {
                f.clear();
            }
            f
        })
    }

    fn message() -> impl Strategy<Value = MessageTree> {
        let msh_fields = prop::collection::vec(field(), 0..20);
        let segment = (prop::sample::select(IDS), prop::collection::vec(field(), 0..8))
            .prop_map(|(id, fields)| SegmentTree { id: id.to_string(), fields });
        (msh_fields, prop::collection::vec(segment, 0..6)).prop_map(|(mut msh, rest)| {
            // What `to_tree` puts in MSH-1, MSH-2 and MSH-18.
            if msh.len() < MSH_CHARSET {
                msh.resize(MSH_CHARSET, Vec::new());
            }
            msh[0] = normal_header_field(1);
            msh[1] = normal_header_field(2);
            msh[MSH_CHARSET - 1] = normal_header_field(MSH_CHARSET);
            let mut segments = vec![SegmentTree { id: "MSH".into(), fields: msh }];
            segments.extend(rest);
            MessageTree { segments }
        })
    }

    proptest! {
        #[test]
        fn generated_trees_round_trip(tree in message()) {
            let bytes = encode(&tree);
            let parsed = Message::parse(&bytes).unwrap();
            prop_assert_eq!(parsed.charset(), Charset::Utf8);
            prop_assert_eq!(parsed.to_tree().unwrap(), tree);
        }

        /// Any message that parses and decodes round-trips, whatever its
        /// delimiters, terminators and escapes.
        #[test]
        fn parsed_messages_round_trip(
            delims in prop::sample::select(vec!["|^~\\&", "#@*$!", "|^~\\&#", "!@#$%"]),
            body in prop::collection::vec(
                prop::sample::select(vec![
                    "a", "Z", "9", " ", "é", "|", "^", "~", "\\", "&", "#", "@", "*", "$", "!", "%",
                    "\r", "\n", "\r\n", "\rPID", "\nNTE", "\\F\\", "\\X41\\", "$E$", "\\.br\\", "\"\"",
                ]),
                0..60,
            ),
        ) {
            let raw = format!("MSH{}{}{}", &delims[..1], &delims[1..], body.concat());
            if let Ok(m) = Message::parse(raw.as_bytes()) && let Ok(tree) = m.to_tree() {
                let again = encode(&tree);
                prop_assert_eq!(tree_of(&again), tree);
            }
        }
    }
}
