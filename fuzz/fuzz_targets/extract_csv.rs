#![no_main]
//! Any bytes given to the csv reader: an error is fine, a panic, a hang or
//! runaway memory is a finding (libfuzzer-sys aborts on a panic before the
//! entry's catch_unwind sees it).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = extract::extract_with_limits(Some("csv"), data, &extract::ExtractLimits::default());
});
