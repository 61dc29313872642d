#![no_main]
//! Header address rewriting: walking any message (enclosed messages
//! too) never panics, changes nothing when nothing is rewritten, and
//! when every address gains a mark, only the marks are added.
use epistle_mta::header_addresses::rewrite_addresses;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(rewrite_addresses(data, true, &mut |_, _| None).is_none());
    if data.contains(&b'~') {
        return; // `~` is the mark below
    }
    if let Some(out) = rewrite_addresses(data, true, &mut |_, a| Some(format!("{a}~"))) {
        let unmarked: Vec<u8> = out.into_iter().filter(|&b| b != b'~').collect();
        assert_eq!(unmarked, data, "only marks were added");
    }
});
