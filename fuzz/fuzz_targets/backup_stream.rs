//! imsrestore input: reading a stream never panics or over-allocates.
#![no_main]
use epistle_store::backup::BackupReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = b"EPISTLE-BACKUP 1\n".to_vec();
    input.extend_from_slice(data);
    if let Ok(mut r) = BackupReader::new(&input[..]) {
        while let Ok(Some(_)) = r.next_record() {}
    }
});
