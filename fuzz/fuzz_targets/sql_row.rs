//! libFuzzer entry for `sql_row`: the check is status_fuzz_checks::sql_row.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| status_fuzz_checks::sql_row::check(data));
