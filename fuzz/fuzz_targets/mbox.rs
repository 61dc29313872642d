//! imsimport input: splitting an mbox never panics and loses no body byte
//! that is not a From line or quoting.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msgs = epistle_store::import::split_mbox(data);
    let total: usize = msgs.iter().map(|m| m.body.len()).sum();
    assert!(total <= data.len());
    let _ = epistle_store::import::maildir_flags(&String::from_utf8_lossy(data));
});
