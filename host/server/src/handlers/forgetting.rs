//! Forgetting a data subject.

use axum::extract::State;
use axum::{Extension, Json};
use eshost_api as api;
use eshost_core::privacy::ForgetRequest;

use super::joined;
use crate::extract::{OptionalJsonBody, PathParams};
use crate::{ApiError, AppState, Caller, wire};

pub(crate) async fn forget(
    State(state): State<AppState>,
    PathParams(subject): PathParams<String>,
    caller: Option<Extension<Caller>>,
    OptionalJsonBody(body): OptionalJsonBody<api::ForgetRequest>,
) -> Result<Json<api::ForgetReport>, ApiError> {
    let request = ForgetRequest {
        user: caller.map(|c| c.0.name),
        reason: body.reason,
    };
    let forgetting = state.inner.host.forgetting().clone();
    let report = tokio::task::spawn_blocking(move || forgetting.forget(&subject, &request))
        .await
        .map_err(joined)??;
    Ok(Json(wire::forget_report(report)))
}
