//! The mappings file and its lookups: parsing any text and probing the
//! tables with any string never panics and always ends.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, probe) = text.split_once('\u{1}').unwrap_or((text, "TCP|1.2.3.4|25|10.0.0.1|5000"));
    if let Ok(m) = epistle_mta::Mappings::parse(file) {
        let names: Vec<String> = m.names().map(str::to_string).collect();
        for n in names {
            let _ = m.lookup(&n, probe);
        }
    }
});
