//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`)
//! through its target's check, so the ordinary test run, which has no
//! fuzzer, still holds every decoder to the invariants on those inputs.

use std::path::Path;

use status_fuzz_checks::TARGETS;

#[test]
fn every_corpus_file_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for (target, check) in TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>().unwrap(),
            Err(error) => panic!("corpus {} unreadable: {error}", dir.display()),
        };
        files.sort();
        assert!(!files.is_empty(), "corpus {} is empty", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            // Named in the failure, so a broken input is found at once.
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails its check", file.display());
        }
    }
}
