//! The byte-level BPE pre-tokenizer without a regex engine.
//!
//! GPT-2-style tokenizers (SmolLM2, GPT-2, StarCoder, …) split text with
//! `ByteLevel { use_regex: true }`, whose pattern
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! has a look-ahead, so the `tokenizers` crate runs it on `fancy-regex`'s
//! backtracking VM: a quarter of `ft preprocess`'s CPU time. [`Gpt2Split`]
//! is the same split as a hand-written scanner over a per-code-point class
//! table, and [`FtPreTokenizer`] is the `tokenizers` pre-tokenizer with that
//! one step replaced; everything else (other pre-tokenizers, the byte
//! mapping, offsets, added tokens) is the crate's own.
//!
//! The class table is built from the `regex` crate's own Unicode tables
//! (the ones `fancy-regex` uses for `\p{L}`, `\p{N}` and `\s`), so the two
//! agree on every code point; the tests compare splits and whole encodings
//! against the `tokenizers` crate on generated text.

use std::sync::LazyLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::tokenizer::pattern::Pattern;
use tokenizers::{
    DecoderWrapper, ModelWrapper, NormalizerWrapper, Offsets, PostProcessorWrapper,
    PreTokenizedString, PreTokenizer, SplitDelimiterBehavior, TokenizerImpl,
};

/// The `tokenizers` tokenizer with [`FtPreTokenizer`] as its pre-tokenizer:
/// loads any `tokenizer.json` the crate loads, and encodes identically.
pub type FastTokenizer = TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    FtPreTokenizer,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A `tokenizer.json` pre-tokenizer, with every regex `ByteLevel` replaced
/// by the same split done by [`Gpt2Split`].
#[derive(Debug, Clone)]
pub enum FtPreTokenizer {
    /// `ByteLevel { use_regex: true }`.
    ByteLevel {
        /// Prepend a space to a piece that does not start with one.
        add_prefix_space: bool,
        /// The original, for serialization.
        original: ByteLevel,
    },
    /// A `Sequence` (some of its members may be byte-level).
    Sequence(Vec<FtPreTokenizer>),
    /// Anything else, run by the `tokenizers` crate.
    Other(PreTokenizerWrapper),
}

impl FtPreTokenizer {
    /// The fast form of a `tokenizers` pre-tokenizer.
    pub fn from_wrapper(w: PreTokenizerWrapper) -> Self {
        match w {
            PreTokenizerWrapper::ByteLevel(b) if b.use_regex => Self::ByteLevel {
                add_prefix_space: b.add_prefix_space,
                original: b,
            },
            PreTokenizerWrapper::Sequence(s) => {
                Self::Sequence(s.into_iter().map(Self::from_wrapper).collect())
            }
            other => Self::Other(other),
        }
    }

    /// Back to the `tokenizers` form.
    pub fn to_wrapper(&self) -> PreTokenizerWrapper {
        match self {
            Self::ByteLevel { original, .. } => PreTokenizerWrapper::ByteLevel(*original),
            Self::Sequence(v) => PreTokenizerWrapper::Sequence(Sequence::new(
                v.iter().map(Self::to_wrapper).collect(),
            )),
            Self::Other(w) => w.clone(),
        }
    }

    /// Whether the scanner replaces a regex anywhere in it.
    pub fn is_accelerated(&self) -> bool {
        match self {
            Self::ByteLevel { .. } => true,
            Self::Sequence(v) => v.iter().any(Self::is_accelerated),
            Self::Other(_) => false,
        }
    }
}

impl<'de> Deserialize<'de> for FtPreTokenizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PreTokenizerWrapper::deserialize(d).map(Self::from_wrapper)
    }
}

impl Serialize for FtPreTokenizer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_wrapper().serialize(s)
    }
}

impl PreTokenizer for FtPreTokenizer {
    fn pre_tokenize(&self, pretokenized: &mut PreTokenizedString) -> tokenizers::Result<()> {
        match self {
            Self::ByteLevel {
                add_prefix_space, ..
            } => {
                // As `ByteLevel::pre_tokenize`, with the scanner for the regex
                // and a table for the byte → char map.
                pretokenized.split(|_, mut normalized| {
                    if *add_prefix_space && !normalized.get().starts_with(' ') {
                        normalized.prepend(" ");
                    }
                    normalized.split(Gpt2Split, SplitDelimiterBehavior::Isolated)
                })?;
                pretokenized.normalize(|normalized| {
                    let s = normalized.get();
                    let mut transformations: Vec<(char, isize)> = Vec::with_capacity(s.len());
                    for c in s.chars() {
                        let mut buf = [0u8; 4];
                        for (i, b) in c.encode_utf8(&mut buf).bytes().enumerate() {
                            transformations.push((BYTE_CHAR[usize::from(b)], isize::from(i > 0)));
                        }
                    }
                    normalized.transform(transformations, 0);
                    Ok(())
                })
            }
            Self::Sequence(v) => {
                for p in v {
                    p.pre_tokenize(pretokenized)?;
                }
                Ok(())
            }
            Self::Other(w) => w.pre_tokenize(pretokenized),
        }
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the rest
/// to U+0100 onwards in byte order.
static BYTE_CHAR: LazyLock<[char; 256]> = LazyLock::new(|| {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        table[usize::from(b)] = if printable(b) {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\u{FFFD}')
        };
    }
    table
});

const OTHER: u8 = 0;
const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 3;

/// The class of every code point (`\p{L}`, `\p{N}`, `\s` or other), read off
/// the `regex` crate's Unicode tables by matching each class against a
/// string of all scalar values once.
static CLASS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let all: String = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
    let mut class = vec![OTHER; 0x110000];
    for (re, code) in [(r"\p{L}+", LETTER), (r"\p{N}+", NUMBER), (r"\s+", SPACE)] {
        // The patterns are literals known to compile.
        let Ok(re) = regex::Regex::new(re) else {
            continue;
        };
        for m in re.find_iter(&all) {
            for c in m.as_str().chars() {
                class[c as usize] = code;
            }
        }
    }
    class
});

/// Builds the class table now (it is otherwise built on first use, inside
/// the first encoding).
pub fn warm_up() {
    LazyLock::force(&CLASS);
    LazyLock::force(&BYTE_CHAR);
}

fn class(c: char) -> u8 {
    CLASS[c as usize]
}

/// The split of `ByteLevel`'s regex
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// (leftmost-first alternation, greedy runs), as a scanner.
#[derive(Debug, Clone, Copy)]
pub struct Gpt2Split;

impl Gpt2Split {
    /// The end (byte offset) of the match starting at byte `i` of `s`
    /// (`i < s.len()`; every position starts a match).
    fn match_end(s: &str, i: usize) -> usize {
        let rest = &s[i..];
        if rest.starts_with('\'') {
            for suffix in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
                if rest.starts_with(suffix) {
                    return i + suffix.len();
                }
            }
        }
        let mut chars = rest.char_indices();
        let Some((_, c0)) = chars.next() else {
            return s.len();
        };
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space,
        // then a run of one class.
        let (run_start, first) = if c0 == ' ' {
            match chars.next() {
                Some((j, c1)) => (j, c1),
                None => (rest.len(), ' '),
            }
        } else {
            (0, c0)
        };
        let k = class(first);
        if run_start < rest.len() && k != SPACE {
            let end = rest[run_start..]
                .char_indices()
                .find(|&(_, c)| class(c) != k)
                .map_or(rest.len(), |(j, _)| run_start + j);
            return i + end;
        }
        // `\s+(?!\S)` then `\s+`: a whitespace run, less its last character
        // when a non-space follows and the run has more than one.
        let mut last_start = 0;
        let mut end = rest.len();
        for (j, c) in rest.char_indices() {
            if class(c) != SPACE {
                end = j;
                break;
            }
            last_start = j;
        }
        if end < rest.len() && last_start > 0 {
            i + last_start
        } else {
            i + end
        }
    }
}

impl Pattern for Gpt2Split {
    fn find_matches(&self, inside: &str) -> tokenizers::Result<Vec<(Offsets, bool)>> {
        if inside.is_empty() {
            return Ok(vec![((0, 0), false)]);
        }
        let mut out = Vec::with_capacity(inside.len() / 4 + 1);
        let mut i = 0;
        while i < inside.len() {
            let end = Self::match_end(inside, i);
            out.push(((i, end), true));
            i = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::tokenizer::pattern::Pattern;

    /// The regex the scanner replaces, run by the same engine as the
    /// `tokenizers` crate uses (fancy-regex).
    fn reference(s: &str) -> Vec<(usize, usize)> {
        static RE: LazyLock<fancy_regex::Regex> = LazyLock::new(|| {
            fancy_regex::Regex::new(
                r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
            )
            .unwrap()
        });
        RE.find_iter(s)
            .map(|m| {
                let m = m.unwrap();
                (m.start(), m.end())
            })
            .collect()
    }

    fn ours(s: &str) -> Vec<(usize, usize)> {
        Gpt2Split
            .find_matches(s)
            .unwrap()
            .into_iter()
            .filter(|(_, m)| *m)
            .map(|(o, _)| o)
            .collect()
    }

    /// Generated strings over an alphabet chosen to hit every branch:
    /// contractions, spaces before each class, whitespace runs of every
    /// kind before and after text, letters/digits/marks/symbols of several
    /// scripts, at the ends and in the middle.
    fn generated(n: usize, seed: u64) -> Vec<String> {
        let alphabet: Vec<&str> = vec![
            " ", " ", "  ", "\n", "\t", "\r\n", "\u{a0}", "\u{3000}", "\u{2028}", "'", "'s", "'t",
            "'re", "'ve", "'m", "'ll", "'d", "'S", "a", "Z", "é", "ß", "語", "ı", "ǅ", "ʰ", "7",
            "٣", "Ⅻ", "½", "²", ".", ",", "!", "?", "-", "_", "(", "\"", "€", "😀", "\u{301}",
            "\u{94d}", "\u{200d}", "\u{0}", "\u{7f}", "x", "hello", "world", "123", "don", "I",
        ];
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as usize
        };
        (0..n)
            .map(|_| {
                let len = next() % 24;
                (0..len)
                    .map(|_| alphabet[next() % alphabet.len()])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn scanner_splits_like_the_regex() {
        for s in generated(20_000, 1) {
            assert_eq!(ours(&s), reference(&s), "{s:?}");
        }
        for s in [
            "",
            " ",
            "   ",
            "a  ",
            "  a",
            "a  b",
            "a \n b",
            "I'm here, you're there; it's 2024!",
            "\t\tdef f(x):\n    return x  \n",
            "''s",
            "x.'s",
            " 'll",
            "  \u{3000}語",
        ] {
            assert_eq!(ours(s), reference(s), "{s:?}");
        }
    }

    /// Every code point's class equals the regex engine's.
    #[test]
    fn class_table_matches_the_regex_classes_on_every_code_point() {
        let all: String = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
        for (re, code) in [(r"^\p{L}$", LETTER), (r"^\p{N}$", NUMBER), (r"^\s$", SPACE)] {
            let re = regex::Regex::new(re).unwrap();
            // Sample every 7th code point plus all of ASCII and Latin-1 (a
            // full sweep is the table's own construction).
            for c in all
                .chars()
                .filter(|&c| (c as u32) < 0x100 || (c as u32).is_multiple_of(7))
            {
                let mut b = [0u8; 4];
                let is = re.is_match(c.encode_utf8(&mut b));
                assert_eq!(class(c) == code, is, "U+{:04X}", c as u32);
            }
        }
    }

    /// Whole encodings (ids, offsets, special-token masks) equal the
    /// `tokenizers` crate's own on every byte-level tokenizer in the
    /// fixtures, for generated text and text with special tokens.
    #[test]
    fn encodings_equal_the_tokenizers_crate() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let mut files = vec![root.join("tokenizers/smollm2/tokenizer.json")];
        for arch in ["llama", "qwen2", "mistral"] {
            files.push(root.join("export").join(arch).join("tokenizer.json"));
        }
        let mut texts = generated(3_000, 2);
        texts.push(
            "<|im_start|>user\nWhat's 2+2? I'd say 4.<|im_end|>\n<|im_start|>assistant\n  It's 4!\n\n<|im_end|>"
                .into(),
        );
        let mut checked = 0;
        for f in files {
            let reference = tokenizers::Tokenizer::from_file(&f).unwrap();
            let fast = FastTokenizer::from_file(&f).unwrap();
            let Some(pt) = fast.get_pre_tokenizer() else {
                continue;
            };
            if !pt.is_accelerated() {
                continue;
            }
            checked += 1;
            for t in &texts {
                for special in [false, true] {
                    let a = reference.encode(t.as_str(), special).unwrap();
                    let b = fast.encode(t.as_str(), special).unwrap();
                    assert_eq!(a.get_ids(), b.get_ids(), "{f:?} {t:?}");
                    assert_eq!(a.get_offsets(), b.get_offsets(), "{f:?} {t:?}");
                    assert_eq!(a.get_special_tokens_mask(), b.get_special_tokens_mask());
                }
            }
            // The file round-trips: the pre-tokenizer serializes as it came.
            let back = serde_json::to_value(fast.get_pre_tokenizer()).unwrap();
            let orig = serde_json::to_value(reference.get_pre_tokenizer()).unwrap();
            assert_eq!(back, orig);
        }
        eprintln!("{checked} byte-level tokenizers compared");
        assert!(checked >= 1, "no byte-level fixture tokenizer");
    }

    #[test]
    fn byte_table_is_gpt2_bytes_to_unicode() {
        assert_eq!(BYTE_CHAR[usize::from(b' ')], 'Ġ');
        assert_eq!(BYTE_CHAR[usize::from(b'\n')], 'Ċ');
        assert_eq!(BYTE_CHAR[usize::from(b'a')], 'a');
        assert_eq!(BYTE_CHAR[0], 'Ā');
        assert_eq!(BYTE_CHAR[0xAD], 'Ń');
    }
}
