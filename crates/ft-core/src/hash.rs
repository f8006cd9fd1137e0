//! Content hashing with BLAKE3.
//!
//! Hashes are lowercase hex strings of the full 256-bit digest. Files are
//! streamed through the hasher (never read whole), and JSON values are hashed
//! in a canonical form (object keys sorted recursively, no whitespace) so two
//! configs that differ only in key order or formatting get the same
//! fingerprint.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result};

/// A hex-encoded BLAKE3 digest.
pub type Digest = String;

/// Hashes a byte slice.
pub fn hash_bytes(bytes: &[u8]) -> Digest {
    blake3::hash(bytes).to_hex().to_string()
}

/// Hashes a file's contents, streaming it in 1 MiB chunks.
pub fn hash_file(path: &Path) -> Result<Digest> {
    let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Writes `value` as canonical JSON: object keys sorted at every depth, no
/// insignificant whitespace. Independent of serde_json's `preserve_order`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Fingerprint of any serialisable value: BLAKE3 of its canonical JSON.
pub fn fingerprint<T: Serialize + ?Sized>(value: &T) -> Result<Digest> {
    let v = serde_json::to_value(value).map_err(|source| Error::Json {
        what: "a config fingerprint",
        source,
    })?;
    Ok(hash_bytes(canonical_json(&v).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a = json!({"lr": 0.0002, "r": 16});
        let b = json!({"r": 16, "lr": 0.0002});
        let c = json!({"r": 8, "lr": 0.0002});
        assert_eq!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
        assert_ne!(fingerprint(&a).unwrap(), fingerprint(&c).unwrap());
    }

    #[test]
    fn file_hash_streams_and_matches_bytes_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        // Larger than one read chunk so the streaming loop runs more than once.
        let data: Vec<u8> = (0..(3usize << 20) + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(hash_file(&p).unwrap(), hash_bytes(&data));
        // The known BLAKE3 digest of the empty input.
        assert_eq!(
            hash_bytes(b""),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
