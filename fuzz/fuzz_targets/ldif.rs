//! The embedded directory file: parsing (DNs included) never panics, and
//! what parses is written and read back to the same entries.
#![no_main]
use epistle_directory::ldif;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(entries) = ldif::parse(text) {
        let again = ldif::parse(&ldif::write(&entries)).expect("written LDIF parses");
        assert_eq!(again, entries);
    }
});
