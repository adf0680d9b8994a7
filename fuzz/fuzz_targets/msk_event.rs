//! libFuzzer entry for `msk_event`: the check is status_fuzz_checks::msk_event.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| status_fuzz_checks::msk_event::check(data));
