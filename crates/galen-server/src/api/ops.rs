//! Health, readiness, metrics, the dead-letter store and the mapping templates in force.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::error::{ApiError, ApiResult};

/// Liveness: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: not shutting down, and the store answers a query.
pub(crate) async fn readyz(State(app): State<App>) -> impl IntoResponse {
    if *app.0.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match app.0.store.dead_letters(i64::MAX, 1).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

pub(crate) async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut body = app.0.metrics.render(&app.0.store.stats());
    app.0.clinical.render_metrics(&mut body);
    app.0.audit.render_metrics(&mut body);
    super::break_glass::render_metrics(&app, &mut body);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

#[derive(Deserialize)]
pub(crate) struct Page {
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/v1/dead-letters?after=&limit=`: refused items, oldest first, paged by id.
pub(crate) async fn dead_letters(
    State(app): State<App>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let letters = app
        .0
        .store
        .dead_letters(page.after.unwrap_or(0), limit)
        .await?;
    let next_after = letters.last().map(|stored| stored.id);
    let items: Vec<Value> = letters
        .into_iter()
        .map(|stored| {
            let letter = stored.letter;
            json!({
                "id": stored.id,
                "received": letter.received.to_rfc3339(),
                "source": letter.source,
                "reason": letter.reason.code(),
                "message": letter.message,
                "device": letter.device,
                "payload": String::from_utf8_lossy(&letter.payload),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_after": next_after })))
}

/// The mapping templates in force.
pub(crate) async fn mapping_templates(State(app): State<App>) -> Json<Value> {
    let templates = app.templates();
    let items: Vec<Value> = templates
        .iter()
        .map(|(source, template)| {
            json!({
                "name": template.name(),
                "version": template.version(),
                "description": template.description(),
                "measurements": template.measurement_count(),
                "source": source,
            })
        })
        .collect();
    Json(json!({ "items": items }))
}

/// Reloads the template directory; on any error the templates in force stay and the answer names
/// the broken file and field.
pub(crate) async fn reload_mapping(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let reloaded = tokio::task::spawn_blocking(move || app.reload_templates())
        .await
        .map_err(|_| ApiError::internal("the reload task failed"))?;
    match reloaded {
        Ok(count) => Ok(Json(json!({ "templates": count }))),
        Err(message) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_template",
            message,
        )),
    }
}
