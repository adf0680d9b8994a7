//! libFuzzer entry for `apigw_request`: the check is status_fuzz_checks::apigw_request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| status_fuzz_checks::apigw_request::check(data));
