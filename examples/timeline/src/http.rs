//! The HTTP side: ingest, the stats, the stored timeline as JSON and as a
//! page, and the live websocket.
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/event` | `{"success":true}`, 400/413/415 with `{"errors":[…]}`, 503 + `Retry-After` |
//! | `POST /api/event/bulk` | `{"success":true,"accepted":n}`, the same refusals |
//! | `GET /api/create_event` | one random event ingested, `{"success":true}` |
//! | `GET /status` | `{"status":"up"}` |
//! | `GET /api/q/stats` | events accepted and not yet stored, per stage ([`Stats`](crate::Stats)) |
//! | `GET /api/timeline/{message_id}` | `{"message_id","events":{step: time}}`, the stored steps |
//! | `GET /timeline/{message_id}` | an HTML page of the steps, updated live |
//! | `GET /socket/timeline/{message_id}` | a websocket: `{"event","time"}` per step stored from now on |

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Service;
use crate::event::{Event, parse_bulk, parse_event, random_event};
use crate::live::Watch;
use crate::pipeline::PushRefused;

/// The largest body `POST /api/event` accepts.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// The largest body `POST /api/event/bulk` accepts.
pub const MAX_BULK_BYTES: usize = 32 * 1024 * 1024;
/// What `Retry-After` tells a client refused because the pipeline is full,
/// in seconds: about one window, by which the backlog has moved on.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/api/event", post(event))
        .route("/api/event/bulk", post(bulk))
        .route("/api/create_event", get(create_event))
        .route(
            "/status",
            get(|| async { axum::Json(json!({ "status": "up" })) }),
        )
        .route("/api/q/stats", get(stats))
        .route("/api/timeline/{message_id}", get(timeline))
        .route("/timeline/{message_id}", get(page))
        .route("/socket/timeline/{message_id}", get(socket))
        .with_state(service)
}

/// A refused request: its status and the list of what was wrong.
struct Refusal(StatusCode, Vec<String>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "errors": self.1 }))).into_response()
    }
}

fn errors(status: StatusCode, errors: Vec<String>) -> Response {
    Refusal(status, errors).into_response()
}

/// Reads a JSON body of at most `limit` bytes, or says why not.
async fn json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            vec![format!(
                "content-type: expected application/json, got {content_type:?}"
            )],
        ));
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![format!("body: larger than {limit} bytes")],
        )
    })
}

/// Pushes `events` and answers `ok` or the refusal.
fn ingest(service: &Service, events: Vec<Event>, ok: Value) -> Response {
    match service.ingest(events) {
        Ok(()) => axum::Json(ok).into_response(),
        Err(refused @ PushRefused::TooMany { .. }) => {
            errors(StatusCode::PAYLOAD_TOO_LARGE, vec![refused.to_string()])
        }
        Err(refused) => {
            let mut response = errors(StatusCode::SERVICE_UNAVAILABLE, vec![refused.to_string()]);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            response
        }
    }
}

async fn event(State(service): State<Arc<Service>>, headers: HeaderMap, body: Body) -> Response {
    let body = match json_body(&headers, body, MAX_EVENT_BYTES).await {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    match parse_event(&body) {
        Ok(event) => ingest(&service, vec![event], json!({ "success": true })),
        Err(problems) => errors(StatusCode::BAD_REQUEST, problems),
    }
}

async fn bulk(State(service): State<Arc<Service>>, headers: HeaderMap, body: Body) -> Response {
    let body = match json_body(&headers, body, MAX_BULK_BYTES).await {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    match parse_bulk(&body) {
        Ok(events) => {
            let n = events.len();
            ingest(&service, events, json!({ "success": true, "accepted": n }))
        }
        Err(problems) => errors(StatusCode::BAD_REQUEST, problems),
    }
}

async fn create_event(State(service): State<Arc<Service>>) -> Response {
    ingest(&service, vec![random_event()], json!({ "success": true }))
}

async fn stats(State(service): State<Arc<Service>>) -> Response {
    axum::Json(service.stats().to_json()).into_response()
}

fn message_id(text: &str) -> Result<i64, Refusal> {
    text.parse::<i64>().map_err(|_| {
        Refusal(
            StatusCode::BAD_REQUEST,
            vec![format!("message_id: not an integer: {text:?}")],
        )
    })
}

async fn timeline(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    let id = match message_id(&id) {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    match service.timeline(id).await {
        Ok(events) => axum::Json(json!({ "message_id": id, "events": events })).into_response(),
        Err(error) => errors(StatusCode::SERVICE_UNAVAILABLE, vec![error.to_string()]),
    }
}

async fn page(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    let id = match message_id(&id) {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    match service.timeline(id).await {
        // Step names are letters, digits and `_` and times RFC 3339, so the
        // object is safe inside the page's script.
        Ok(events) => Html(
            include_str!("page.html")
                .replace("__MESSAGE_ID__", &id.to_string())
                .replace("__STEPS__", &Value::Object(events).to_string()),
        )
        .into_response(),
        Err(error) => errors(StatusCode::SERVICE_UNAVAILABLE, vec![error.to_string()]),
    }
}

async fn socket(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let id = match message_id(&id) {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    // Subscribed before the handshake is answered: a step stored once the
    // client sees the socket open reaches it.
    let watch = service.live().subscribe(id);
    upgrade.on_upgrade(move |socket| forward(socket, watch))
}

/// Sends the watched message's steps until the client goes away.
async fn forward(mut socket: WebSocket, mut watch: Watch) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            step = watch.steps.recv() => match step {
                Ok(step) => {
                    if socket.send(ws::Message::Text(step.as_ref().into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a slow watcher missed steps");
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(ws::Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends one request to `router` in process (no socket) and returns the
/// status, the headers and the body parsed as JSON (`Value::Null` when it is
/// empty or not JSON). `content_type` `None` sends none. The tests and the
/// self-checks drive the service this way.
///
/// # Panics
///
/// If the request cannot be built from `method` and `uri`.
pub async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, HeaderMap, Value) {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request.body(body.into()).expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, value)
}
