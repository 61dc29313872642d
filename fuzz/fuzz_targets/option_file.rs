//! dispatcher.cnf, job_controller.cnf, option.dat: parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(f) = epistle_mta::OptionFile::parse(text) {
        let _ = f.channel_section("tcp_local");
        for (_, v) in &f.global {
            let _ = epistle_mta::optionfile::int(v);
        }
    }
});
