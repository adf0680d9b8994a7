//! libFuzzer entry for `redis_record`: the check is status_fuzz_checks::redis_record.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| status_fuzz_checks::redis_record::check(data));
