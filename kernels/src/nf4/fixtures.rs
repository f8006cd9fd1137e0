//! Reads the golden vectors `tests/fixtures/gen/nf4_golden.py` writes to `tests/fixtures/nf4/`
//! (layout documented at the top of that script): raw little-endian arrays, one directory per
//! case, listed in `manifest.json`.

use std::path::{Path, PathBuf};

/// One golden case: an input tensor and everything bitsandbytes made of it.
pub(crate) struct Golden {
    /// Directory name, for messages.
    pub name: String,
    /// The input's shape.
    pub shape: Vec<usize>,
    /// The input, row-major.
    pub input: Vec<f32>,
    /// Packed NF4 codes.
    pub codes: Vec<u8>,
    /// Per-block absmax.
    pub absmax: Vec<f32>,
    /// `dequantize_4bit`, float32, as bits.
    pub dequant: Vec<u32>,
    /// `dequantize_4bit`, bfloat16, as bits.
    pub dequant_bf16: Vec<u16>,
    /// Double quantization: 8-bit absmax codes.
    pub dq_codes: Vec<u8>,
    /// Double quantization: per-256 scales.
    pub dq_scales: Vec<f32>,
    /// Double quantization: the offset.
    pub dq_offset: f32,
    /// Double quantization: absmax as bitsandbytes recovers it.
    pub dq_absmax: Vec<f32>,
    /// Double quantization: `dequantize_4bit`, float32, as bits.
    pub dq_dequant: Vec<u32>,
    /// Double quantization: `dequantize_4bit`, bfloat16, as bits.
    pub dq_dequant_bf16: Vec<u16>,
}

/// `tests/fixtures/nf4/` of the workspace.
pub(crate) fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/nf4")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "golden fixture {} unreadable ({e}); regenerate with `python3 tests/fixtures/gen/nf4_golden.py`",
            path.display()
        )
    })
}

fn words<const N: usize>(path: &Path) -> Vec<[u8; N]> {
    let bytes = read(path);
    assert_eq!(
        bytes.len() % N,
        0,
        "{} is not a whole number of {N}-byte values",
        path.display()
    );
    bytes
        .chunks_exact(N)
        .map(|c| std::array::from_fn(|i| c[i]))
        .collect()
}

/// A file of little-endian `f32`.
pub(crate) fn f32s(path: &Path) -> Vec<f32> {
    words::<4>(path)
        .into_iter()
        .map(f32::from_le_bytes)
        .collect()
}

fn u32s(path: &Path) -> Vec<u32> {
    words::<4>(path)
        .into_iter()
        .map(u32::from_le_bytes)
        .collect()
}

fn u16s(path: &Path) -> Vec<u16> {
    words::<2>(path)
        .into_iter()
        .map(u16::from_le_bytes)
        .collect()
}

/// Every case the manifest lists, loaded.
pub(crate) fn load_all() -> Vec<Golden> {
    let root = dir();
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&root.join("manifest.json"))).expect("manifest.json is JSON");
    let cases = manifest["cases"].as_array().expect("manifest lists cases");
    assert!(!cases.is_empty(), "manifest lists no cases");
    cases
        .iter()
        .map(|case| {
            let name = case["name"].as_str().expect("case name").to_string();
            let shape = case["shape"]
                .as_array()
                .expect("case shape")
                .iter()
                .map(|d| d.as_u64().expect("dimension") as usize)
                .collect();
            let d = root.join(&name);
            let offset = f32s(&d.join("dq_offset.f32"));
            assert_eq!(offset.len(), 1, "{name}: one offset");
            Golden {
                shape,
                input: f32s(&d.join("input.f32")),
                codes: read(&d.join("codes.u8")),
                absmax: f32s(&d.join("absmax.f32")),
                dequant: u32s(&d.join("dequant.f32")),
                dequant_bf16: u16s(&d.join("dequant.bf16")),
                dq_codes: read(&d.join("dq_absmax_codes.u8")),
                dq_scales: f32s(&d.join("dq_scales.f32")),
                dq_offset: offset[0],
                dq_absmax: f32s(&d.join("dq_absmax.f32")),
                dq_dequant: u32s(&d.join("dq_dequant.f32")),
                dq_dequant_bf16: u16s(&d.join("dq_dequant.bf16")),
                name,
            }
        })
        .collect()
}
