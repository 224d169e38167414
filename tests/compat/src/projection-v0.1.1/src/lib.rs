//! `compat-totals` built against `eshost:plugin@0.1.1` (`../wit-v0.1.1`, a copy of 0.1.0 with
//! the next patch version): it exports `eshost:plugin/projection@0.1.1` and imports
//! `read-model@0.1.1`, which a 0.1.0 host must link (`tests/compat/v0.1.1/projection.wasm`).

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "projection-plugin",
    path: "../wit-v0.1.1",
});

const VERSION: &str = "1.0.0+wit-0.1.1";

include!("../../projection/src/totals.rs");
