//! Embeds the frozen WIT contracts the SDK targets into hidden `macro_rules!` macros:
//! `wit/v0.1.0/plugin.wit` (aggregates, upcasters, projections) and `wit/v0.2.0/plugin.wit`
//! (reactors, the world 0.2 added); both are never edited again, see `wit/README.md`. The
//! export macros call them in the plugin's own crate, so the `wit_bindgen::generate!` call and
//! its component-type section exist only for the one world that plugin targets. `generate!`
//! takes inline WIT only as a string literal, hence this.

use std::path::{Path, PathBuf};
use std::{env, fs};

/// The hidden macro named `macro_name` that generates the bindings of a world of the contract
/// in `wit/{version}/plugin.wit`.
fn bindgen_macro(manifest: &Path, version: &str, macro_name: &str) -> String {
    let wit_path = manifest.join(format!("../wit/{version}/plugin.wit"));
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

    format!(
        r#"/// Generates the wit-bindgen bindings for one world of `eshost:plugin` ({version}) in the
/// calling module. Used by the export macros only.
#[doc(hidden)]
#[macro_export]
macro_rules! {macro_name} {{
    ($world:tt) => {{
        $crate::__private::wit_bindgen::generate!({{
            inline: r{hashes}"{wit}"{hashes},
            world: $world,
            runtime_path: "::eshost_sdk::__private::wit_bindgen::rt",
        }});
    }};
}}
"#
    )
}

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let code = [
        bindgen_macro(&manifest, "v0.1.0", "__eshost_wit_bindgen"),
        bindgen_macro(&manifest, "v0.2.0", "__eshost_wit_bindgen_v0_2"),
    ]
    .concat();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("wit_bindgen_macro.rs");
    fs::write(&out, code).expect("write the generated macro");
}
