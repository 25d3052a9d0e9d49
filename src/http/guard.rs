//! What stands in front of every handler: the bearer token, caps on what a
//! request may be, and one error shape (`{"error": "..."}`) for every error,
//! also those axum and its extractors answer themselves (404, 405, 413, ...).

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError};

/// Longest request target (path and query) served.
pub const MAX_URI_BYTES: usize = 8 << 10;

/// Most bytes of request headers served.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// Largest request body (a mark request, a rebuild request).
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// Largest oversize body still read (and dropped) before it is refused.
const DRAIN_BODY_BYTES: usize = 1 << 20;

/// Most group keys one mark request may name.
pub const MAX_MARK_KEYS: usize = 1_000;

/// Routes open without the token: the probes, and the topology page
/// (static code, no figures: its requests to the API carry the token the
/// page asks for).
const OPEN_ROUTES: [&str; 3] = ["/health", "/ready", "/ui"];

/// Refuses requests over the caps, and without the token when one is set.
pub async fn admit(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError(
            StatusCode::URI_TOO_LONG,
            format!("request target of {uri} bytes; at most {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("{headers} bytes of headers; at most {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(length) = declared.filter(|length| *length > MAX_BODY_BYTES) {
        // Read (and drop) a moderately large body before answering, so that
        // the client finishes sending and reads the answer, not a reset.
        if length <= DRAIN_BODY_BYTES {
            let _ = to_bytes(request.into_body(), DRAIN_BODY_BYTES).await;
        }
        return ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a body of {length} bytes; at most {MAX_BODY_BYTES}"),
        )
        .into_response();
    }
    if let Some(token) = &api.token {
        let open = OPEN_ROUTES.contains(&request.uri().path());
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !open && !given.is_some_and(|given| same_secret(given, token)) {
            let mut refused = ApiError(
                StatusCode::UNAUTHORIZED,
                "this API needs `Authorization: Bearer TOKEN`".into(),
            )
            .into_response();
            refused
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return refused;
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so that the time
/// taken tells nothing of the token.
fn same_secret(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut differ = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        differ |= usize::from(a.get(i).copied().unwrap_or(!byte) ^ byte);
    }
    differ == 0
}

/// Gives every error answer the JSON shape: an error that axum or an
/// extractor answered in plain text (or with no body) gets `{"error": ...}`.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, 4 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
        text => text.to_owned(),
    };
    let mut answer = ApiError(status, message).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

/// An empty JSON 404 for unknown routes (the router's fallback).
pub async fn no_such_route() -> Response {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn only_the_same_token_passes() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cre", "s3cret"));
        assert!(!same_secret("s3cretx", "s3cret"));
        assert!(!same_secret("S3cret", "s3cret"));
        assert!(!same_secret("", "s3cret"));
    }
}
