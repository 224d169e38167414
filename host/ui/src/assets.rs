//! The static files, embedded in the binary: a pinned htmx and its SSE extension (vendored
//! under `assets/`, see `assets/README.md`), the stylesheet and the small script of the UI.
//! Nothing is fetched at run time; no CDN, no web font.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::BASE;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

pub const HTMX: &Asset = &Asset {
    name: "htmx-2.0.11.min.js",
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!("../assets/htmx-2.0.11.min.js"),
};

pub const HTMX_SSE: &Asset = &Asset {
    name: "htmx-ext-sse-2.2.4.js",
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!("../assets/htmx-ext-sse-2.2.4.js"),
};

pub const CSS: &Asset = &Asset {
    name: "ui.css",
    content_type: "text/css; charset=utf-8",
    bytes: include_bytes!("../assets/ui.css"),
};

pub const SCRIPT: &Asset = &Asset {
    name: "ui.js",
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!("../assets/ui.js"),
};

const ALL: [&Asset; 4] = [HTMX, HTMX_SSE, CSS, SCRIPT];

/// The content hash of every file, so that links change when a file does and browsers may
/// cache each version for good.
fn version(asset: &Asset) -> &'static str {
    static VERSIONS: OnceLock<Vec<String>> = OnceLock::new();
    let versions = VERSIONS.get_or_init(|| {
        ALL.iter()
            .map(|a| blake3::hash(a.bytes).to_hex()[..16].to_owned())
            .collect()
    });
    let index = ALL
        .iter()
        .position(|a| a.name == asset.name)
        .expect("an asset of the list");
    &versions[index]
}

/// The link to an asset.
pub fn href(asset: &Asset) -> String {
    format!("{BASE}/assets/{}?v={}", asset.name, version(asset))
}

/// `GET /ui/assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ALL.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
