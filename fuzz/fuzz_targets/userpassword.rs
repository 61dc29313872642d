//! userPassword values read from a directory: verifying against any value
//! never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (stored, given) = text.split_once('\n').unwrap_or((text, "secret"));
    let _ = epistle_directory::password::verify(stored, given);
});
