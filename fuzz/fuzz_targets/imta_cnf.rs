#![no_main]
//! imta.cnf and aliases: parsing never panics, includes included from themselves stop
//! at the depth limit, and every channel parsed has a name and a tag.
use epistle_mta::aliases::Aliases;
use epistle_mta::imtacnf::ImtaConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let own = text.to_string();
    if let Ok(c) = ImtaConfig::parse("imta.cnf", text, &mut |_| Ok(own.clone())) {
        for ch in &c.channels {
            assert!(!ch.name.is_empty() && !ch.tag.is_empty());
        }
    }
    if let Ok(a) = Aliases::parse("aliases", text, &mut |_| Ok(own.clone())) {
        let _ = a.expand("postmaster@example.com", &["example.com"]);
    }
});
