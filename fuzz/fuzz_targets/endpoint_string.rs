#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| torsion_fuzz::check_endpoint_string(data));
