//! Byte spans → token labels, through the tokenizer's offsets.
//!
//! A token is trained when its byte range overlaps a trained span. This is
//! what transformers does for `return_assistant_tokens_mask`
//! (`char_to_token(start)` … `char_to_token(end - 1)`), and it keeps a token
//! that straddles a span edge (e.g. a space merged into the first word of
//! the answer) trained rather than silently dropped.

use std::ops::Range;

/// Token ids and which of them carry loss.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokenized {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `true` where the token is trained.
    pub mask: Vec<bool>,
}

impl Tokenized {
    /// Number of trained tokens.
    pub fn trainable(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }

    /// Appends another piece.
    pub fn extend(&mut self, other: Tokenized) {
        self.ids.extend(other.ids);
        self.mask.extend(other.mask);
    }
}

/// Marks tokens (given their byte `offsets`) that overlap any of `spans`.
/// `spans` must be sorted by start.
pub fn mask_from_spans(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut j = 0;
    for &(s, e) in offsets {
        while j < spans.len() && spans[j].end <= s {
            j += 1;
        }
        let hit = e > s
            && spans[j..]
                .iter()
                .take_while(|r| r.start < e)
                .any(|r| r.start < e && s < r.end);
        out.push(hit);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn overlap_rule() {
        // tokens: [0,3) [3,5) [5,9) [9,10) and an empty special (0,0)
        let offs = [(0, 3), (3, 5), (5, 9), (9, 10), (0, 0)];
        assert_eq!(
            mask_from_spans(&offs, &[4..6]),
            [false, true, true, false, false]
        );
        assert_eq!(
            mask_from_spans(&offs, &[0..3, 9..10]),
            [true, false, false, true, false]
        );
        assert_eq!(mask_from_spans(&offs, &[]), [false; 5]);
        assert_eq!(mask_from_spans(&offs, &[5..5]), [false; 5]);
    }
}
