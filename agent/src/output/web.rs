//! HTTP: a landing page, /metrics and /api/v1/report, from whatever state serves them.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse as _, Response},
    routing::get,
};

/// What the endpoints serve, each read fresh for every request. The calls may block (they read
/// the kernel's maps): they run off the async workers.
pub trait Source: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn metrics(&self) -> anyhow::Result<String>;
    /// The report, schema iotwatch.report/v1, as JSON.
    fn report_json(&self) -> anyhow::Result<String>;
}

type Shared = Arc<dyn Source>;

pub async fn serve(
    listener: tokio::net::TcpListener,
    agent: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(landing))
        .route("/metrics", get(metrics))
        .route("/api/v1/report", get(report))
        .with_state(agent);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn landing() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><title>iotwatch</title></head><body><h1>iotwatch</h1>\
         <p>Per-device traffic on this bridge, counted in the kernel.</p>\
         <ul><li><a href=\"/metrics\">/metrics</a></li>\
         <li><a href=\"/api/v1/report\">/api/v1/report</a> (JSON, schema iotwatch.report/v1)</li></ul></body></html>",
    )
}

async fn metrics(State(agent): State<Shared>) -> Response {
    // Reading the maps is a burst of syscalls: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || agent.metrics()).await;
    match result {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the BPF maps failed: {e:#}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}\n")).into_response(),
    }
}

async fn report(State(agent): State<Shared>) -> Response {
    let result = tokio::task::spawn_blocking(move || agent.report_json()).await;
    match result {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("building the report failed: {e:#}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}\n")).into_response(),
    }
}
