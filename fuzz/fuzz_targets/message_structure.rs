//! Any bytes a sender can make: the structure parser never panics and its
//! offsets stay inside the message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fn check(b: &epistle_ipc::store::BodyPart, len: u32) {
    assert!(b.offset_header <= b.offset_body || b.offset_body == 0);
    assert!(b.offset_end <= len);
    for p in &b.parts {
        check(p, len);
    }
    if let Some(m) = &b.message {
        check(&m.body, len);
    }
}

fuzz_target!(|data: &[u8]| {
    let s = epistle_store::structure::parse(data);
    check(&s.body, data.len() as u32);
});
