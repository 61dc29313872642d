//! configure -state input: reading and checking answers never panics, and
//! accepted answers round-trip through a written saveState.
#![no_main]
use configure::state::Answers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(a) = Answers::from_state(text) {
        let _ = a.validate();
        let back = Answers::from_state(&a.to_state("fuzz")).expect("written state reads back");
        assert_eq!(back.hostname, a.hostname);
    }
});
