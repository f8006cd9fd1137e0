//! Golden tests against the format owners' code: gguf-py (`gguf==0.19.0`) for
//! F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 and all dequantizers, ggml's C
//! `quantize_row_q{4,5,6}_K_ref` for the K-quants, and gguf-py's `GGUFWriter`
//! for whole files. Regenerate with `tests/fixtures/gen/gguf_quant.py`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ft_gguf::quant::{dequantize, dequantize_ref, quantize, quantize_ref};
use ft_gguf::{Array, GgmlType, GgufFile, GgufWriter, Metadata, TensorSpec, Value};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf")
}

fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ty(name: &str) -> GgmlType {
    GgmlType::ALL
        .iter()
        .copied()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

/// Manifest lines, split on whitespace, comments dropped.
fn manifest() -> Vec<Vec<String>> {
    String::from_utf8(read("manifest.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Bit equality, except that any NaN equals any NaN (inf·0 in a dequantized
/// block with an overflowed f16 scale; NaN payloads are platform-defined).
fn assert_f32_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn quantizers_match_gguf_py_and_ggml_byte_for_byte() {
    let mut checked = 0;
    for line in manifest() {
        if line[0] != "quant" {
            continue;
        }
        let (case, t) = (&line[1], ty(&line[2]));
        let input = read_f32(&format!("{case}.input.f32"));
        let want = read(&format!("{case}.{}.bin", t.name()));
        let what = format!("{case} {t}");

        let got = quantize(t, &input).unwrap();
        if got != want {
            let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "{what}: quantized bytes differ, first at byte {first} (block {}): got {:?}, want {:?}",
                first / t.type_size(),
                &got[first..(first + 8).min(got.len())],
                &want[first..(first + 8).min(want.len())]
            );
        }
        assert_eq!(
            quantize_ref(t, &input).unwrap(),
            want,
            "{what}: scalar reference"
        );

        let deq_want = read_f32(&format!("{case}.{}.deq.f32", t.name()));
        assert_f32_eq(
            &format!("{what} dequantize"),
            &dequantize(t, &want).unwrap(),
            &deq_want,
        );
        assert_f32_eq(
            &format!("{what} dequantize_ref"),
            &dequantize_ref(t, &want).unwrap(),
            &deq_want,
        );
        checked += 1;
    }
    // 6 cases × 7 gguf-py types + 4 K-compatible cases × 3 K-quants.
    assert_eq!(checked, 54, "fixture count changed: regenerate and update");
}

#[test]
fn dequantizers_match_gguf_py_on_random_blocks() {
    let mut checked = 0;
    for line in manifest() {
        if line[0] != "blocks" {
            continue;
        }
        let t = ty(&line[1]);
        let n: usize = line[2].parse().unwrap();
        let bytes = read(&format!("blocks.{}.bin", t.name()));
        assert_eq!(bytes.len(), n * t.type_size());
        let want = read_f32(&format!("blocks.{}.deq.f32", t.name()));
        assert_f32_eq(
            &format!("random {t} blocks"),
            &dequantize(t, &bytes).unwrap(),
            &want,
        );
        checked += 1;
    }
    assert_eq!(checked, 8);
}

/// The content of `reference.gguf`, mirrored from `write_reference` in the
/// generator (gguf-py puts `general.architecture` first).
fn reference_content(align: Option<u32>) -> (Metadata, Vec<(TensorSpec, Vec<u8>)>) {
    let mut m = Metadata::new();
    m.set("general.architecture", "llama");
    if let Some(a) = align {
        m.set("general.alignment", a);
    }
    m.set("test.u8", 200u8)
        .set("test.i8", -100i8)
        .set("test.u16", 60000u16)
        .set("test.i16", -30000i16)
        .set("test.u32", 4_000_000_000u32)
        .set("test.i32", -2_000_000_000i32)
        .set("test.f32", 0.15625f32)
        .set("test.u64", 18_000_000_000_000_000_000u64)
        .set("test.i64", -9_000_000_000_000_000_000i64)
        .set("test.f64", -1.0e300f64)
        .set("test.bool_true", true)
        .set("test.bool_false", false)
        .set("test.string", "héllo, GGUF ✓")
        .set("test.arr_str", vec!["a", "", "ünïcode", "<|im_start|>"])
        .set("test.arr_i32", vec![1i32, -2, 3, 2147483647])
        .set("test.arr_f32", vec![0.5f32, -1.25, 3.0])
        .set("test.arr_bool", vec![true, false, true])
        .set("test.arr_u8", vec![1u8, 2, 255])
        .set("test.arr_u64", vec![0u64, 1, u64::MAX])
        .set(
            "test.nested",
            Array::Array(vec![Array::I32(vec![1, 2]), Array::I32(vec![3, 4, 5])]),
        )
        .set("general.file_type", 7u32)
        .set("general.quantization_version", 2u32);

    let odd: Vec<u8> = (0..7)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let half: Vec<u8> = (0..96)
        .flat_map(|i| half::f16::from_f32(i as f32 / 8.0 - 6.0).to_le_bytes())
        .collect();
    let q8 = read("ties64.Q8_0.bin");
    let tensors = vec![
        (TensorSpec::new("odd.weight", [7], GgmlType::F32), odd),
        (TensorSpec::new("half.weight", [32, 3], GgmlType::F16), half),
        (TensorSpec::new("q8.weight", [64, 3], GgmlType::Q8_0), q8),
    ];
    (m, tensors)
}

#[test]
fn reads_gguf_written_by_gguf_py() {
    for (file, align) in [
        ("reference.gguf", None),
        ("reference_align64.gguf", Some(64)),
    ] {
        let f = GgufFile::open(dir().join(file)).unwrap();
        let (meta, tensors) = reference_content(align);
        assert_eq!(f.header().version, 3);
        assert_eq!(f.header().alignment, u64::from(align.unwrap_or(32)));
        assert_eq!(f.metadata(), &meta, "{file}: metadata");
        assert_eq!(f.architecture().unwrap(), "llama");
        assert_eq!(
            f.metadata().get("test.u64"),
            Some(&Value::U64(18_000_000_000_000_000_000))
        );
        assert_eq!(f.tensors().len(), tensors.len());
        for (info, (spec, data)) in f.tensors().iter().zip(&tensors) {
            assert_eq!(
                (&info.name, &info.shape, info.ty),
                (&spec.name, &spec.shape, spec.ty)
            );
            assert_eq!(
                f.tensor_data(&spec.name).unwrap(),
                &data[..],
                "{file}: {}",
                spec.name
            );
        }
        let odd = f.dequantize("odd.weight").unwrap();
        assert_eq!(odd, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        let q8 = f.dequantize("q8.weight").unwrap();
        assert_f32_eq("q8.weight", &q8, &read_f32("ties64.Q8_0.deq.f32"));
    }
}

#[test]
fn writer_output_is_byte_identical_to_gguf_py() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, align) in [
        ("reference.gguf", None),
        ("reference_align64.gguf", Some(64)),
    ] {
        let (meta, tensors) = reference_content(align);
        let out = tmp.path().join(file);
        let specs = tensors.iter().map(|(s, _)| s.clone()).collect();
        let mut w = GgufWriter::create(&out, &meta, specs).unwrap();
        for (spec, data) in &tensors {
            w.write_tensor(&spec.name, data).unwrap();
        }
        w.finish().unwrap();
        let ours = std::fs::read(&out).unwrap();
        let theirs = read(file);
        if ours != theirs {
            let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
            panic!(
                "{file}: {} bytes vs gguf-py {} bytes, first difference at {first:?}",
                ours.len(),
                theirs.len()
            );
        }
    }
}
