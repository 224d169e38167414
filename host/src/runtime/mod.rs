//! The wasmtime runtime that loads and sandboxes plugins.
