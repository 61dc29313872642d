#![no_main]
//! Queue file envelopes: decoding never panics, and whatever decodes
//! re-encodes to an envelope that decodes to the same value.
use epistle_mta::queuefile::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((env, offset)) = Envelope::decode(data) {
        assert!(offset <= data.len());
        if let Ok(bytes) = env.encode() {
            let (again, end) = Envelope::decode(&bytes).expect("an encoded envelope decodes");
            assert_eq!(again, env);
            assert_eq!(end, bytes.len());
        }
    }
});
