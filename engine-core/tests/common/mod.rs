//! Helpers shared by the fuzz corpus suites: reading a corpus and checking generated seeds.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

/// `fuzz/corpus/<target>`.
pub(crate) fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every file of a corpus, sorted by name, dot files left out.
pub(crate) fn corpus_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).unwrap())
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    files
}

/// With `RINGCAST_WRITE_SEEDS=1`, writes a generated seed into the corpus; otherwise checks
/// that the checked-in file has exactly these bytes (so the generator and the corpus cannot
/// drift apart unnoticed).
pub(crate) fn seed_file(target: &str, name: &str, bytes: &[u8]) {
    let path = corpus_dir(target).join(name);
    if std::env::var_os("RINGCAST_WRITE_SEEDS").is_some() {
        fs::create_dir_all(corpus_dir(target)).unwrap();
        fs::write(&path, bytes).unwrap();
    } else {
        let on_disk = fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (RINGCAST_WRITE_SEEDS=1 writes it)", path.display())
        });
        assert!(
            on_disk == bytes,
            "{} differs from its generator (RINGCAST_WRITE_SEEDS=1 rewrites it)",
            path.display()
        );
    }
}
