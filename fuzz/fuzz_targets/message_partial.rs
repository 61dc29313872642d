#![no_main]
//! message/partial: recognising a part never panics, a part it accepts
//! has a number within its total, and reassembling any pieces never
//! panics nor grows beyond the pieces given.
use epistle_mta::partial::{MAX_PARTS, part_of, reassemble};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = part_of(data) {
        assert!(p.number >= 1 && p.number <= MAX_PARTS);
        assert!(p.total.is_none_or(|t| p.number <= t));
    }
    let mid = data.len() / 2;
    let whole = reassemble(&[&data[..mid], &data[mid..]]);
    assert!(whole.len() <= data.len() + 2);
});
