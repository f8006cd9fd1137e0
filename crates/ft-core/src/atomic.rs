//! Atomic writes: write to a temporary sibling, flush to disk, then rename.
//!
//! Every writer in `ft` (checkpoints, adapters, merged models, GGUF files,
//! caches, manifests) goes through [`write_file`] / [`AtomicFile`] for single
//! files or [`AtomicDir`] for directories. A crash or Ctrl-C at any point
//! leaves either the previous complete output or none at all, plus at worst a
//! hidden `.ft-tmp-*` sibling that the next run ignores.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Prefix of every temporary file or directory `ft` creates next to an output.
pub const TMP_PREFIX: &str = ".ft-tmp-";

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) {
    // Persist the rename itself. Not every platform allows opening a
    // directory for sync; failing to do so is not fatal to correctness of
    // the written bytes, so it is ignored.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A file being written atomically. Dropping it without [`commit`](Self::commit)
/// discards the temporary file and leaves the target untouched.
pub struct AtomicFile {
    target: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Starts writing `target`; creates missing parent directories.
    pub fn create(target: impl AsRef<Path>) -> Result<Self> {
        let target = target.as_ref().to_path_buf();
        let parent = parent_of(&target).to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::io("creating directory", &parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&parent)
            .map_err(|e| Error::io("creating a temporary file in", &parent, e))?;
        Ok(Self { target, tmp })
    }

    /// A buffered writer over the temporary file.
    pub fn writer(&mut self) -> BufWriter<&mut File> {
        BufWriter::with_capacity(1 << 20, self.tmp.as_file_mut())
    }

    /// The underlying temporary file, for writers that need `Seek`.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes to disk and renames over the target.
    pub fn commit(self) -> Result<PathBuf> {
        let Self { target, tmp } = self;
        // tempfile creates 0600 files; outputs are meant to be shared like
        // any file the user's tools write (the umask still applies via
        // the directory's default on most systems).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| Error::io("setting permissions of", tmp.path(), e))?;
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("flushing", tmp.path(), e))?;
        tmp.persist(&target)
            .map_err(|e| Error::io("renaming into place", &target, e.error))?;
        sync_dir(parent_of(&target));
        Ok(target)
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_file(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let mut f = AtomicFile::create(path)?;
    {
        let mut w = f.writer();
        w.write_all(bytes)
            .map_err(|e| Error::io("writing", path, e))?;
        w.flush().map_err(|e| Error::io("writing", path, e))?;
    }
    f.commit()?;
    Ok(())
}

/// A directory being filled atomically: files go into a hidden temporary
/// sibling, and [`commit`](Self::commit) swaps it into place. Dropping it
/// without committing deletes the temporary directory.
pub struct AtomicDir {
    target: PathBuf,
    tmp: tempfile::TempDir,
}

impl AtomicDir {
    /// Starts building `target`; creates missing parent directories.
    pub fn create(target: impl AsRef<Path>) -> Result<Self> {
        let target = target.as_ref().to_path_buf();
        let parent = parent_of(&target).to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::io("creating directory", &parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempdir_in(&parent)
            .map_err(|e| Error::io("creating a temporary directory in", &parent, e))?;
        Ok(Self { target, tmp })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Swaps the finished directory into place. An existing target is moved
    /// aside first and removed only after the new one is in place.
    pub fn commit(self) -> Result<PathBuf> {
        let Self { target, tmp } = self;
        let tmp_path = tmp.keep();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(0o755));
        }
        let parent = parent_of(&target).to_path_buf();
        let old = if target.exists() {
            let aside = parent.join(format!(
                "{TMP_PREFIX}old-{}-{}",
                std::process::id(),
                target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            std::fs::rename(&target, &aside)
                .map_err(|e| Error::io("moving the previous output aside", &target, e))?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&tmp_path, &target) {
            // Put the previous output back so nothing is lost.
            if let Some(old) = &old {
                let _ = std::fs::rename(old, &target);
            }
            let _ = std::fs::remove_dir_all(&tmp_path);
            return Err(Error::io("renaming into place", &target, e));
        }
        sync_dir(&parent);
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.txt");
        write_file(&p, b"one").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode, 0o644,
                "outputs are readable by others like any written file"
            );
        }
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["out.txt".to_string()]);
    }

    #[test]
    fn uncommitted_file_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write_file(&p, b"good").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.writer().write_all(b"half-writ").unwrap();
            // Dropped without commit: simulates a crash mid-write.
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_dir_swaps_whole_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("adapter");
        let d = AtomicDir::create(&target).unwrap();
        std::fs::write(d.path().join("a"), b"1").unwrap();
        d.commit().unwrap();
        let d = AtomicDir::create(&target).unwrap();
        std::fs::write(d.path().join("b"), b"2").unwrap();
        // Before commit the old content is still what readers see.
        assert!(target.join("a").exists());
        d.commit().unwrap();
        assert!(!target.join("a").exists());
        assert_eq!(std::fs::read(target.join("b")).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_dir_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = AtomicDir::create(dir.path().join("x")).unwrap();
            std::fs::write(d.path().join("f"), b"1").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
