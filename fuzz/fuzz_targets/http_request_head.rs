#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| torsion_fuzz::check_http_request_head(data));
