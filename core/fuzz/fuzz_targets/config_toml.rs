//! The config file loader: any text is loaded or refused with an error naming the problem, never a panic.

#![no_main]

use ferrocable::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut config = Config::default();
    if config.set_from_toml(text).is_ok() {
        let _ = config.finalize();
    }
});
