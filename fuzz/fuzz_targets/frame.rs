//! Frames from a local peer: decoding never panics or over-allocates.
#![no_main]
use epistle_ipc::watcher::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = epistle_ipc::frame::decode::<Request>(data);
    let _ = epistle_ipc::frame::read_blocking::<Request>(&mut &data[..]);
});
