//! The reference against bitsandbytes' own output, byte for byte (see `fixtures.rs` for the
//! files and `tests/fixtures/gen/nf4_golden.py` for how they were made).

use super::fixtures::{self, Golden};
use super::reference::{Absmax, BLOCKSIZE, DYNAMIC_MAP, NF4_TABLE, Nf4Tensor};

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Index and values of the first difference, for a readable failure.
fn first_diff<T: PartialEq + Copy>(a: &[T], b: &[T]) -> Option<(usize, T, T)> {
    if a.len() != b.len() {
        return None;
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .map(|i| (i, a[i], b[i]))
}

fn assert_same<T: PartialEq + Copy + std::fmt::Debug>(
    case: &str,
    what: &str,
    ours: &[T],
    theirs: &[T],
) {
    assert_eq!(ours.len(), theirs.len(), "{case}: {what} length");
    if let Some((i, a, b)) = first_diff(ours, theirs) {
        panic!("{case}: {what} differs first at {i}: ours {a:?}, bitsandbytes {b:?}");
    }
}

fn quantize(g: &Golden) -> Nf4Tensor {
    Nf4Tensor::quantize(&g.input, &g.shape, BLOCKSIZE)
        .unwrap_or_else(|e| panic!("{}: quantize failed: {e}", g.name))
}

#[test]
fn tables_match_bitsandbytes() {
    let dir = fixtures::dir();
    assert_eq!(
        bits(&fixtures::f32s(&dir.join("nf4_table.f32"))),
        bits(&NF4_TABLE)
    );
    assert_eq!(
        bits(&fixtures::f32s(&dir.join("dynamic_map.f32"))),
        bits(&DYNAMIC_MAP)
    );
}

#[test]
fn quantize_matches_codes_and_absmax() {
    for g in fixtures::load_all() {
        let t = quantize(&g);
        assert_same(&g.name, "codes", t.codes(), &g.codes);
        let Absmax::F32(absmax) = t.absmax() else {
            panic!("{}: plain quantization keeps f32 absmax", g.name);
        };
        assert_same(&g.name, "absmax bits", &bits(absmax), &bits(&g.absmax));
    }
}

#[test]
fn dequantize_matches_f32_and_bf16() {
    for g in fixtures::load_all() {
        // From bitsandbytes' own parts, so this holds even if quantization had drifted.
        let t = Nf4Tensor::from_parts(
            g.codes.clone(),
            Absmax::F32(g.absmax.clone()),
            &g.shape,
            BLOCKSIZE,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_same(
            &g.name,
            "dequantized f32 bits",
            &bits(&t.dequantize()),
            &g.dequant,
        );
        let bf16: Vec<u16> = t.dequantize_bf16().iter().map(|v| v.to_bits()).collect();
        assert_same(&g.name, "dequantized bf16 bits", &bf16, &g.dequant_bf16);
    }
}

#[test]
fn double_quant_matches_codes_scales_and_offset() {
    for g in fixtures::load_all() {
        let t = quantize(&g).with_double_quant();
        assert_same(&g.name, "codes", t.codes(), &g.codes);
        let Absmax::DoubleQuant {
            codes,
            scales,
            offset,
        } = t.absmax()
        else {
            panic!("{}: double quantized", g.name);
        };
        assert_eq!(
            offset.to_bits(),
            g.dq_offset.to_bits(),
            "{}: offset {offset} vs {}",
            g.name,
            g.dq_offset
        );
        assert_same(&g.name, "absmax codes", codes, &g.dq_codes);
        assert_same(
            &g.name,
            "absmax scales bits",
            &bits(scales),
            &bits(&g.dq_scales),
        );
        assert_same(
            &g.name,
            "recovered absmax bits",
            &bits(&t.absmax_f32()),
            &bits(&g.dq_absmax),
        );
    }
}

#[test]
fn double_quant_dequantize_matches_f32_and_bf16() {
    for g in fixtures::load_all() {
        let absmax = Absmax::DoubleQuant {
            codes: g.dq_codes.clone(),
            scales: g.dq_scales.clone(),
            offset: g.dq_offset,
        };
        let t = Nf4Tensor::from_parts(g.codes.clone(), absmax, &g.shape, BLOCKSIZE)
            .unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_same(
            &g.name,
            "dq dequantized f32 bits",
            &bits(&t.dequantize()),
            &g.dq_dequant,
        );
        let bf16: Vec<u16> = t.dequantize_bf16().iter().map(|v| v.to_bits()).collect();
        assert_same(
            &g.name,
            "dq dequantized bf16 bits",
            &bf16,
            &g.dq_dequant_bf16,
        );
    }
}

/// The fixtures cover what they claim to: ties, all-zero blocks (full and partial), odd
/// lengths, more than one double-quantization block.
#[test]
fn fixtures_cover_the_edge_cases() {
    let all = fixtures::load_all();
    let names: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
    for expected in [
        "crafted",
        "zero_tail",
        "len1",
        "len63",
        "len65",
        "len257",
        "len1000",
        "w96x64",
    ] {
        assert!(names.contains(&expected), "missing case {expected}");
    }
    assert!(all.iter().any(|g| g.input.len() % 2 == 1), "an odd length");
    assert!(
        all.iter().any(|g| g.absmax.contains(&0.0)),
        "an all-zero full block"
    );
    assert!(
        all.iter().any(|g| g.absmax.last() == Some(&1e-38)),
        "an all-zero partial block"
    );
    assert!(
        all.iter().any(|g| g.dq_scales.len() > 1),
        "several double-quant blocks"
    );
    // The crafted case's second block holds every midpoint tie at absmax 1.
    let crafted = all
        .iter()
        .find(|g| g.name == "crafted")
        .expect("crafted case");
    let ties = crafted.input[64..128]
        .iter()
        .filter(|x| super::reference::NF4_MIDPOINTS.contains(x))
        .count();
    assert_eq!(ties, 15, "crafted block 1 holds all 15 midpoints");
}
