#![no_main]
//! SASL responses from the network (AUTH PLAIN / LOGIN): decoding never
//! panics, and whatever PLAIN accepts has a non-empty login and password
//! without NUL inside them.
use epistle_directory::sasl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = sasl::plain(&text) {
        assert!(!c.login.is_empty() && !c.password.is_empty());
        assert!(!c.login.contains('\0') && !c.password.contains('\0'));
    }
    let _ = sasl::login_step(&text);
    // Any bytes encoded come back the same.
    let encoded = sasl::encode(data);
    if encoded.len() <= sasl::MAX_RESPONSE && !data.is_empty() {
        assert_eq!(sasl::decode(&encoded).unwrap(), data);
    }
});
