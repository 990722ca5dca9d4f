//! The HTTP API: `POST /increment` and `GET /counters/{key}`, the same
//! parsing and validation in every mode.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Service;

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// A valid increment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Increment {
    /// The counter's name: 1 to 256 bytes.
    pub key: String,
    /// What to add (may be negative).
    pub value: i64,
}

/// Parses and validates an increment's body: a JSON object with a non-empty
/// string `key` of at most [`MAX_KEY_BYTES`] bytes and an integer `value` in
/// `i64`'s range.
///
/// # Errors
///
/// One message per problem found (both fields are checked, so an empty
/// object gives two).
pub fn parse_increment(body: &[u8]) -> Result<Increment, Vec<String>> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(vec!["body: must be a JSON object".to_owned()]),
        Err(error) => return Err(vec![format!("body: malformed JSON ({error})")]),
    };
    let mut errors = Vec::new();
    let key = match object.get("key") {
        None => {
            errors.push("key: missing".to_owned());
            None
        }
        Some(Value::String(key)) if key.is_empty() => {
            errors.push("key: must not be empty".to_owned());
            None
        }
        Some(Value::String(key)) if key.len() > MAX_KEY_BYTES => {
            errors.push(format!("key: longer than {MAX_KEY_BYTES} bytes"));
            None
        }
        Some(Value::String(key)) => Some(key),
        Some(_) => {
            errors.push("key: must be a string".to_owned());
            None
        }
    };
    let value = match object.get("value") {
        None => {
            errors.push("value: missing".to_owned());
            None
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(value) => Some(value),
            None if n.is_u64() => {
                errors.push("value: out of range for a 64-bit signed integer".to_owned());
                None
            }
            // A float: written with a fraction or an exponent, or an integer
            // too long for 64 bits.
            None => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() >= 9.2e18 {
                    errors.push("value: out of range for a 64-bit signed integer".to_owned());
                } else {
                    errors.push("value: must be an integer".to_owned());
                }
                None
            }
        },
        Some(_) => {
            errors.push("value: must be an integer".to_owned());
            None
        }
    };
    match (key, value) {
        (Some(key), Some(value)) if errors.is_empty() => Ok(Increment {
            key: key.clone(),
            value,
        }),
        _ => Err(errors),
    }
}

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/increment", post(increment))
        .route("/counters/{key}", get(lookup))
        .with_state(service)
}

fn bad_request(errors: Vec<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "errors": errors })),
    )
        .into_response()
}

async fn increment(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    let increment = match parse_increment(&body) {
        Ok(increment) => increment,
        Err(errors) => return bad_request(errors),
    };
    match service.increment(&increment.key, increment.value).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(crate::IncrementError::Overflow) => {
            bad_request(vec!["value: the counter would overflow".to_owned()])
        }
        Err(crate::IncrementError::Store(error)) => {
            tracing::warn!(%error, "increment failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "errors": [error.to_string()] })),
            )
                .into_response()
        }
    }
}

async fn lookup(State(service): State<Arc<Service>>, Path(key): Path<String>) -> Response {
    match service.get(&key).await {
        Ok(value) => axum::Json(json!({ "key": key, "value": value })).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "errors": [error.to_string()] })),
        )
            .into_response(),
    }
}

/// Sends one request to `router` in process (no socket) and returns the
/// status and the body parsed as JSON (`Value::Null` for an empty body).
/// The self-test and the tests drive the service this way.
///
/// # Panics
///
/// If the router fails (axum's routers never do) or answers with a body
/// that is not JSON.
pub async fn request(router: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
        .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a complete body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (status, value)
}
