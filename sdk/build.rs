//! Embeds the frozen WIT contract the SDK targets (`wit/v0.1.0/plugin.wit`, never edited again;
//! see `wit/README.md`) into a hidden `macro_rules!` macro. The export macros call it in the
//! plugin's own crate, so the `wit_bindgen::generate!` call and its component-type section
//! exist only for the one world that plugin targets. `generate!` takes inline WIT only as a
//! string literal, hence this.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wit_path = manifest.join("../wit/v0.1.0/plugin.wit");
    println!("cargo::rerun-if-changed={}", wit_path.display());
    let wit = fs::read_to_string(&wit_path).unwrap_or_else(|e| {
        panic!(
            "cannot read the WIT contract at {}: {e}",
            wit_path.display()
        )
    });

    // A raw string literal needs a delimiter that the WIT text does not contain.
    let mut hashes = String::from("#");
    while wit.contains(&format!("\"{hashes}")) {
        hashes.push('#');
    }

    let code = format!(
        r#"/// Generates the wit-bindgen bindings for one world of `eshost:plugin` in the calling
/// module. Used by the export macros only.
#[doc(hidden)]
#[macro_export]
macro_rules! __eshost_wit_bindgen {{
    ($world:tt) => {{
        $crate::__private::wit_bindgen::generate!({{
            inline: r{hashes}"{wit}"{hashes},
            world: $world,
            runtime_path: "::eshost_sdk::__private::wit_bindgen::rt",
        }});
    }};
}}
"#
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("wit_bindgen_macro.rs");
    fs::write(&out, code).expect("write the generated macro");
}
