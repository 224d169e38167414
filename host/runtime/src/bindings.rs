//! The one place `bindgen!` runs: Rust bindings for the three worlds of `eshost:plugin@0.1.0`.
//!
//! The `types` interface is generated once, with the aggregate world, and shared by the other
//! two through `with`, so an [`Event`](types::Event) is the same Rust type for every world.
//!
//! The generated code calls `TypedFunc::new_unchecked` (after it has type-checked the export
//! itself) and has no `Debug` impls, so the workspace lints are relaxed for it here, and only
//! here.

/// Bindings for the `aggregate-plugin` world.
#[allow(unsafe_code, missing_debug_implementations, unused_qualifications)]
pub mod aggregate {
    wasmtime::component::bindgen!({
        world: "aggregate-plugin",
        path: "../../wit/v0.1.0",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
    });
}

/// Bindings for the `upcaster-plugin` world.
#[allow(unsafe_code, missing_debug_implementations, unused_qualifications)]
pub mod upcaster {
    wasmtime::component::bindgen!({
        world: "upcaster-plugin",
        path: "../../wit/v0.1.0",
        with: { "eshost:plugin/types": super::aggregate::eshost::plugin::types },
    });
}

/// Bindings for the `projection-plugin` world.
#[allow(unsafe_code, missing_debug_implementations, unused_qualifications)]
pub mod projection {
    wasmtime::component::bindgen!({
        world: "projection-plugin",
        path: "../../wit/v0.1.0",
        with: { "eshost:plugin/types": super::aggregate::eshost::plugin::types },
        imports: { default: trappable },
    });
}

pub use aggregate::eshost::plugin::types;
