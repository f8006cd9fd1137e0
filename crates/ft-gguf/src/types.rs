//! The closed sets of the format: ggml tensor types and GGUF metadata value
//! types, with their on-disk ids.
//!
//! Ids and block geometry follow `ggml.h` / gguf-py's `constants.py`
//! (`GGML_QUANT_SIZES`). Every type ggml defines is listed, including ones
//! this crate cannot (de)quantize, so the reader can compute the byte size of
//! any tensor in any file; [`GgmlType::can_quantize`] and
//! [`GgmlType::can_dequantize`] say what the [`quant`](crate::quant) module
//! supports.

use std::fmt;

/// Elements per K-quant super-block (`QK_K` in ggml).
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $name:ident = $id:literal, $block:literal, $size:literal; )*) => {
        /// A ggml tensor element type, as stored in a GGUF tensor info.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType {
            $( $(#[$doc])* $name, )*
        }

        impl GgmlType {
            /// Every type, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$name,)*];

            /// The on-disk id (`enum ggml_type`).
            pub const fn id(self) -> u32 {
                match self { $(GgmlType::$name => $id,)* }
            }

            /// The type with on-disk id `id`, if ggml defines one.
            pub const fn from_id(id: u32) -> Option<Self> {
                match id { $($id => Some(GgmlType::$name),)* _ => None }
            }

            /// Elements per block (1 for plain element types).
            pub const fn block_size(self) -> usize {
                match self { $(GgmlType::$name => $block,)* }
            }

            /// Bytes per block.
            pub const fn type_size(self) -> usize {
                match self { $(GgmlType::$name => $size,)* }
            }

            /// ggml's name for the type (`"Q8_0"`, `"F16"` …).
            pub const fn name(self) -> &'static str {
                match self { $(GgmlType::$name => stringify!($name),)* }
            }
        }
    };
}

ggml_types! {
    /// 32-bit IEEE float.
    F32 = 0, 1, 4;
    /// 16-bit IEEE float.
    F16 = 1, 1, 2;
    /// 32 weights: f16 scale + 16 bytes of 4-bit codes (offset 8).
    Q4_0 = 2, 32, 18;
    /// 32 weights: f16 scale, f16 min + 16 bytes of 4-bit codes.
    Q4_1 = 3, 32, 20;
    /// 32 weights: f16 scale + 32 high bits + 16 bytes of low nibbles (offset 16).
    Q5_0 = 6, 32, 22;
    /// 32 weights: f16 scale, f16 min + 32 high bits + 16 bytes of low nibbles.
    Q5_1 = 7, 32, 24;
    /// 32 weights: f16 scale + 32 int8.
    Q8_0 = 8, 32, 34;
    /// 32 weights: f16 scale, f16 sum + 32 int8 (activation type).
    Q8_1 = 9, 32, 36;
    /// K-quant, 2 bits.
    Q2_K = 10, 256, 84;
    /// K-quant, 3 bits.
    Q3_K = 11, 256, 110;
    /// K-quant, 4 bits: 8 sub-blocks of 32 with 6-bit scales and mins.
    Q4_K = 12, 256, 144;
    /// K-quant, 5 bits.
    Q5_K = 13, 256, 176;
    /// K-quant, 6 bits: 16 sub-blocks of 16 with int8 scales.
    Q6_K = 14, 256, 210;
    /// K-quant, 8 bits (activation type).
    Q8_K = 15, 256, 292;
    /// i-quant.
    IQ2_XXS = 16, 256, 66;
    /// i-quant.
    IQ2_XS = 17, 256, 74;
    /// i-quant.
    IQ3_XXS = 18, 256, 98;
    /// i-quant.
    IQ1_S = 19, 256, 50;
    /// i-quant, non-linear 4-bit.
    IQ4_NL = 20, 32, 18;
    /// i-quant.
    IQ3_S = 21, 256, 110;
    /// i-quant.
    IQ2_S = 22, 256, 82;
    /// i-quant.
    IQ4_XS = 23, 256, 136;
    /// 8-bit integer.
    I8 = 24, 1, 1;
    /// 16-bit integer.
    I16 = 25, 1, 2;
    /// 32-bit integer.
    I32 = 26, 1, 4;
    /// 64-bit integer.
    I64 = 27, 1, 8;
    /// 64-bit IEEE float.
    F64 = 28, 1, 8;
    /// i-quant.
    IQ1_M = 29, 256, 56;
    /// bfloat16.
    BF16 = 30, 1, 2;
    /// Ternary.
    TQ1_0 = 34, 256, 54;
    /// Ternary.
    TQ2_0 = 35, 256, 66;
    /// Microscaling FP4.
    MXFP4 = 39, 32, 17;
    /// NVIDIA FP4.
    NVFP4 = 40, 64, 36;
    /// 1-bit.
    Q1_0 = 41, 128, 18;
}

impl GgmlType {
    /// Bytes taken by `n_elements` elements, or `None` when `n_elements` is
    /// not a whole number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }

    /// Whether [`quant::quantize`](crate::quant::quantize) supports the type.
    pub fn can_quantize(self) -> bool {
        crate::quant::kernels(self).is_some_and(|k| k.quantize.is_some())
    }

    /// Whether [`quant::dequantize`](crate::quant::dequantize) supports the type.
    pub fn can_dequantize(self) -> bool {
        crate::quant::kernels(self).is_some()
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a GGUF metadata value (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `u8`.
    U8,
    /// `i8`.
    I8,
    /// `u16`.
    U16,
    /// `i16`.
    I16,
    /// `u32`.
    U32,
    /// `i32`.
    I32,
    /// `f32`.
    F32,
    /// One byte, 0 or 1.
    Bool,
    /// `u64` length + UTF-8 bytes.
    String,
    /// `u32` element type + `u64` count + elements.
    Array,
    /// `u64`.
    U64,
    /// `i64`.
    I64,
    /// `f64`.
    F64,
}

impl ValueType {
    /// The on-disk id.
    pub const fn id(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::String => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }

    /// The type with on-disk id `id`.
    pub const fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// The smallest encoding of one value of this type, in bytes (a string is
    /// at least its 8-byte length, an array its 4-byte type and 8-byte count).
    /// The reader uses it to reject counts the remaining bytes cannot hold
    /// before allocating.
    pub const fn min_encoded_size(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &t in GgmlType::ALL {
            assert!(seen.insert(t.id()), "duplicate id {}", t.id());
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        // Ids retired by ggml stay unassigned.
        for id in [4, 5, 31, 32, 33, 36, 37, 38] {
            assert_eq!(GgmlType::from_id(id), None);
        }
        for id in 0..13 {
            assert_eq!(ValueType::from_id(id).map(ValueType::id), Some(id));
        }
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
        assert_eq!(GgmlType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
