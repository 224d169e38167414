//! `compat-totals` built against `eshost:plugin@0.1.0` (`tests/compat/v0.1.0/projection.wasm`);
//! see `totals.rs`.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "projection-plugin",
    path: "../../../../wit/v0.1.0",
});

const VERSION: &str = "1.0.0";

include!("totals.rs");
