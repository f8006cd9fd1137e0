//! The prepared-data directory: `meta.json` plus binary shards.
//!
//! Shard layout (little-endian): magic `FTROWS01`, `u64` row count, then per
//! row `u32` tokens, `u32` samples, `u32 × samples` sample lengths,
//! `u32 × tokens` ids, `u8 × tokens` mask (0/1). `meta.json` lists every
//! shard with its row count and BLAKE3 digest, checked when loading; the
//! whole directory is committed atomically by `ft_core::stage::run_cached`.

use std::io::Write;
use std::path::Path;

use ft_core::atomic::AtomicFile;
use serde::{Deserialize, Serialize};

use crate::error::TokenizeError;
use crate::pack::PackedRow;

/// Magic bytes of a shard.
pub const MAGIC: &[u8; 8] = b"FTROWS01";
/// Rows per shard.
pub const ROWS_PER_SHARD: usize = 4096;
/// Name of the metadata file.
pub const META_FILE: &str = "meta.json";

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the prepared directory.
    pub file: String,
    /// Rows in it.
    pub rows: usize,
    /// BLAKE3 of its bytes.
    pub digest: String,
}

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedMeta {
    /// Row length the data was prepared for.
    pub sequence_len: usize,
    /// Id used for padding.
    pub pad_id: u32,
    /// Whether rows hold several samples.
    pub sample_packing: bool,
    /// Training shards.
    pub train: Vec<ShardInfo>,
    /// Evaluation shards.
    pub eval: Vec<ShardInfo>,
    /// The preprocessing report.
    pub stats: serde_json::Value,
}

fn corrupt(path: &Path, dir: &Path, message: impl Into<String>) -> TokenizeError {
    TokenizeError::CorruptCache {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        message: message.into(),
    }
}

/// Encodes rows into shard bytes.
pub fn encode_shard(rows: &[PackedRow]) -> Vec<u8> {
    let mut b = Vec::with_capacity(
        16 + rows
            .iter()
            .map(|r| 8 + 4 * r.seq_lens.len() + 5 * r.ids.len())
            .sum::<usize>(),
    );
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    for r in rows {
        b.extend_from_slice(&(r.ids.len() as u32).to_le_bytes());
        b.extend_from_slice(&(r.seq_lens.len() as u32).to_le_bytes());
        for l in &r.seq_lens {
            b.extend_from_slice(&l.to_le_bytes());
        }
        for id in &r.ids {
            b.extend_from_slice(&id.to_le_bytes());
        }
        b.extend(r.mask.iter().map(|&m| u8::from(m)));
    }
    b
}

/// Decodes shard bytes, validating every length.
pub fn decode_shard(bytes: &[u8]) -> Result<Vec<PackedRow>, String> {
    struct Cur<'a>(&'a [u8]);
    impl Cur<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            if self.0.len() < n {
                return Err(format!(
                    "truncated: wanted {n} more bytes, {} left",
                    self.0.len()
                ));
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Ok(a)
        }
        fn u32(&mut self) -> Result<u32, String> {
            let b = self.take(4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    let mut c = Cur(bytes);
    if c.take(8)? != MAGIC {
        return Err("bad magic".into());
    }
    let n = c.take(8)?;
    let n = u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]) as usize;
    let mut rows = Vec::with_capacity(n.min(ROWS_PER_SHARD));
    for _ in 0..n {
        let tokens = c.u32()? as usize;
        let seqs = c.u32()? as usize;
        if seqs > tokens.max(1) || tokens * 5 > c.0.len() {
            return Err("row header exceeds the file".into());
        }
        let seq_lens = (0..seqs).map(|_| c.u32()).collect::<Result<Vec<_>, _>>()?;
        if seq_lens.iter().map(|&l| l as usize).sum::<usize>() != tokens {
            return Err("sample lengths do not add up to the row length".into());
        }
        let ids = (0..tokens)
            .map(|_| c.u32())
            .collect::<Result<Vec<_>, _>>()?;
        let mask = c.take(tokens)?.iter().map(|&b| b != 0).collect();
        rows.push(PackedRow {
            ids,
            mask,
            seq_lens,
        });
    }
    if !c.0.is_empty() {
        return Err(format!("{} trailing bytes", c.0.len()));
    }
    Ok(rows)
}

/// Writes `rows` as `{prefix}-NNNNN.bin` shards into `dir`.
pub fn write_shards(
    dir: &Path,
    prefix: &str,
    rows: &[PackedRow],
) -> Result<Vec<ShardInfo>, TokenizeError> {
    let mut out = Vec::new();
    for (i, chunk) in rows.chunks(ROWS_PER_SHARD).enumerate() {
        let file = format!("{prefix}-{i:05}.bin");
        let path = dir.join(&file);
        let bytes = encode_shard(chunk);
        let mut f = AtomicFile::create(&path)?;
        {
            let mut w = f.writer();
            w.write_all(&bytes)
                .map_err(|e| ft_core::Error::io("writing", &path, e))?;
            w.flush()
                .map_err(|e| ft_core::Error::io("writing", &path, e))?;
        }
        f.commit()?;
        out.push(ShardInfo {
            file,
            rows: chunk.len(),
            digest: ft_core::hash::hash_bytes(&bytes),
        });
    }
    Ok(out)
}

/// Reads the shards listed in `infos`, checking digests.
pub fn read_shards(dir: &Path, infos: &[ShardInfo]) -> Result<Vec<PackedRow>, TokenizeError> {
    let mut rows = Vec::new();
    for s in infos {
        let path = dir.join(&s.file);
        let bytes = std::fs::read(&path).map_err(|e| corrupt(&path, dir, e.to_string()))?;
        if ft_core::hash::hash_bytes(&bytes) != s.digest {
            return Err(corrupt(&path, dir, "checksum mismatch"));
        }
        let part = decode_shard(&bytes).map_err(|m| corrupt(&path, dir, m))?;
        if part.len() != s.rows {
            return Err(corrupt(
                &path,
                dir,
                format!("{} rows, meta.json says {}", part.len(), s.rows),
            ));
        }
        rows.extend(part);
    }
    Ok(rows)
}

/// Reads `meta.json`.
pub fn read_meta(dir: &Path) -> Result<PreparedMeta, TokenizeError> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(|e| corrupt(&path, dir, e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, dir, e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shard_roundtrip_and_hostile_bytes() {
        let rows = vec![
            PackedRow {
                ids: vec![1, 2, 3],
                mask: vec![false, true, true],
                seq_lens: vec![2, 1],
            },
            PackedRow {
                ids: vec![],
                mask: vec![],
                seq_lens: vec![],
            },
        ];
        let b = encode_shard(&rows);
        assert_eq!(decode_shard(&b).unwrap(), rows);
        assert!(decode_shard(&b[..b.len() - 1]).is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode_shard(&extra).is_err());
        let mut huge = b.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_shard(&huge).is_err());
        let mut bad_lens = b;
        bad_lens[24..28].copy_from_slice(&5u32.to_le_bytes());
        assert!(decode_shard(&bad_lens).is_err());
    }
}
