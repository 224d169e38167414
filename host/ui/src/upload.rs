//! A file upload form (multipart): its text fields and its one file, read whole, and its CSRF
//! field checked against the session before the handler sees anything. The gate leaves
//! multipart bodies to this extractor (see [`crate::session`]).

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;

use crate::markup::UiError;
use crate::session::Viewer;

/// The fields of an upload form.
#[derive(Debug)]
pub struct Upload {
    /// Text fields by name.
    pub fields: HashMap<String, String>,
    /// The file's bytes (empty when none was chosen).
    pub file: Vec<u8>,
    /// The file's name as the browser gave it.
    pub file_name: Option<String>,
}

impl Upload {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = UiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, UiError> {
        let viewer = request
            .extensions()
            .get::<Viewer>()
            .cloned()
            .ok_or_else(|| UiError::internal("an upload outside the gate"))?;
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| UiError::bad_request(format!("not a file upload form: {e}")))?;
        let mut upload = Upload {
            fields: HashMap::new(),
            file: Vec::new(),
            file_name: None,
        };
        let read_error = |e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the file is too large")
            } else {
                UiError::bad_request(format!("cannot read the upload: {e}"))
            }
        };
        while let Some(field) = multipart.next_field().await.map_err(read_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            if field.file_name().is_some() {
                // The CSRF field comes first in every form: nothing is read without it.
                viewer.check_csrf(upload.field("csrf"))?;
                upload.file_name = field.file_name().map(str::to_owned);
                upload.file = field.bytes().await.map_err(read_error)?.to_vec();
            } else {
                let text = field.text().await.map_err(read_error)?;
                upload.fields.insert(name, text);
            }
        }
        viewer.check_csrf(upload.field("csrf"))?;
        Ok(upload)
    }
}
