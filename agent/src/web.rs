//! HTTP: a landing page and /metrics.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};

use crate::run::{SharedAgent, lock};

pub async fn serve(listener: tokio::net::TcpListener, agent: SharedAgent, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
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

async fn metrics(State(agent): State<SharedAgent>) -> Response {
    // Reading the maps is a burst of syscalls: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let mut a = lock(&agent);
        a.refresh().map(|()| a.render())
    })
    .await;
    match result {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the BPF maps failed: {e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}\n")).into_response(),
    }
}

async fn report(State(agent): State<SharedAgent>) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let mut a = lock(&agent);
        a.refresh()?;
        Ok::<_, anyhow::Error>(serde_json::to_string(&a.report())?)
    })
    .await;
    match result {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("building the report failed: {e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}\n")).into_response(),
    }
}
