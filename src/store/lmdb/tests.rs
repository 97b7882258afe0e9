//! The store conformance suite on LMDB, and a damaged data file.

mod conformance {
    kvs_sync::store_conformance_tests!(|options| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::LmdbStore::open(dir.path(), options).expect("open store");
        (dir, store)
    });
}

mod damaged_file {
    use kvs_sync::{Store, StoreOptions};

    #[test]
    fn a_truncated_data_file_is_refused_at_open_instead_of_ending_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::LmdbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let value = format!("\"{}\"", "v".repeat(3_000));
        let ops: Vec<_> = (0..500)
            .map(|i| kvs_sync::conformance::put(&format!("k{i}"), &value))
            .collect();
        store.write_batch(&ops, 1).unwrap();
        drop(store);
        let file = dir.path().join("data.mdb");
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let refused = crate::store::LmdbStore::open(dir.path(), StoreOptions::default());
        let error = refused.err().expect("refused").to_string();
        assert!(error.contains("truncated"), "{error}");
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            len / 2,
            "left as it was"
        );
    }
}
