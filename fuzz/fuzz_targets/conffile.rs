//! msg.conf / local.conf / configutil -i input: parsing never panics, and
//! what parses renders back to the same entries.
#![no_main]
use epistle_config::conffile::ConfDocument;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(doc) = ConfDocument::parse(text) {
        let again = ConfDocument::parse(&doc.render()).expect("rendered text parses");
        let a: Vec<_> = doc.entries().collect();
        let b: Vec<_> = again.entries().collect();
        assert_eq!(a.len(), b.len());
        for (name, value) in a {
            if let Some(p) = epistle_config::params::lookup(name) {
                let _ = p.validate(name, value);
            }
        }
    }
});
