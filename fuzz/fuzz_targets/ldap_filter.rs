//! LDAP filters (memberURL values, inetDomainSearchFilter templates):
//! parsing never panics, printing parses back to the same filter, and
//! evaluation never panics.
#![no_main]
use epistle_directory::{Entry, Filter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(f) = Filter::parse(text) {
        let printed = f.to_string();
        // Escaping can make the printed form longer than the input limit.
        if printed.len() <= epistle_directory::filter::MAX_FILTER {
            let back = Filter::parse(&printed).expect("printed filter parses");
            assert_eq!(back, f);
        }
        let mut e = Entry::new("uid=joe,o=example.com");
        e.add("uid", "joe");
        e.add("mail", "joe@example.com");
        let _ = f.matches(&e);
    }
});
