//! OTLP/HTTP: `POST /v1/metrics` with a protobuf or JSON `ExportMetricsServiceRequest`,
//! optionally gzip-compressed; answered in the request's content type.
//!
//! | status | when |
//! | --- | --- |
//! | 200 | accepted; `partial_success` carries rejected data points and why |
//! | 400 | the body does not decode (or does not decompress) |
//! | 401 | auth is on and the bearer token is missing or wrong |
//! | 413 | the body exceeds `max_request_bytes`, compressed or decompressed |
//! | 415 | content type other than protobuf/JSON, or an encoding other than gzip |
//! | 429 | the engine's intake queue is full; `Retry-After` says when to retry |
//! | 503 | the engine has stopped |
//!
//! Error bodies are a `google.rpc.Status` in the request's content type (plain text
//! when that content type is not supported).

use std::io::Read as _;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt as _;
use prost::Message as _;

use super::{ExportMetricsServiceRequest, IntakeError, Outcome, Protocol, Shared};

/// The request body's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// The router of the HTTP listener.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/metrics", post(export))
        // The body limit is enforced in `export`, compressed and decompressed.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

fn format_of(headers: &HeaderMap) -> Option<Format> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf") {
        Some(Format::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Some(Format::Json)
    } else {
        None
    }
}

/// A `google.rpc.Status` body in `format`, or plain text without one.
fn error(status: StatusCode, format: Option<Format>, message: String) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => 3,            // INVALID_ARGUMENT
        StatusCode::UNAUTHORIZED => 16,          // UNAUTHENTICATED
        StatusCode::PAYLOAD_TOO_LARGE => 8,      // RESOURCE_EXHAUSTED
        StatusCode::TOO_MANY_REQUESTS => 8,      // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14,   // UNAVAILABLE
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        _ => 2,                                  // UNKNOWN
    };
    match format {
        Some(Format::Protobuf) => {
            let body = tonic_types::Status {
                code,
                message,
                details: Vec::new(),
            }
            .encode_to_vec();
            (
                status,
                [(header::CONTENT_TYPE, Format::Protobuf.content_type())],
                body,
            )
                .into_response()
        }
        Some(Format::Json) => {
            let body = serde_json::json!({"code": code, "message": message}).to_string();
            (
                status,
                [(header::CONTENT_TYPE, Format::Json.content_type())],
                body,
            )
                .into_response()
        }
        None => (status, format!("{message}\n")).into_response(),
    }
}

async fn export(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let received_at = Instant::now();
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let format = format_of(headers);
    let stats = &shared.stats;
    let finish = |outcome: Outcome, resp: Response| {
        stats.request(Protocol::Http, outcome);
        resp
    };
    if !shared.authorized(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    ) {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            format,
            "missing or invalid bearer token".into(),
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return finish(Outcome::Unauthorized, resp);
    }
    let Some(format) = format else {
        return finish(
            Outcome::Unsupported,
            error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "Content-Type must be application/x-protobuf or application/json".into(),
            ),
        );
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return finish(
                Outcome::Unsupported,
                error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Some(format),
                    format!("Content-Encoding {other:?} is not supported (use gzip or none)"),
                ),
            )
        }
    };
    let limit = shared.max_request_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(format),
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return finish(Outcome::TooLarge, too_large());
    }
    let raw: Bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return finish(Outcome::TooLarge, too_large())
        }
        Err(e) => {
            // The client went away mid-body, or sent a broken chunked encoding.
            return finish(
                Outcome::BadRequest,
                error(
                    StatusCode::BAD_REQUEST,
                    Some(format),
                    format!("reading the body failed: {e}"),
                ),
            );
        }
    };
    let body: Bytes = if gzip {
        let mut out = Vec::with_capacity((raw.len() * 4).min(limit));
        let mut dec = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
        if let Err(e) = dec.read_to_end(&mut out) {
            return finish(
                Outcome::BadRequest,
                error(
                    StatusCode::BAD_REQUEST,
                    Some(format),
                    format!("gzip body does not decompress: {e}"),
                ),
            );
        }
        if out.len() > limit {
            return finish(Outcome::TooLarge, too_large());
        }
        out.into()
    } else {
        raw
    };
    let decoded = match format {
        Format::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(|e| e.to_string()),
        Format::Json => {
            serde_json::from_slice::<ExportMetricsServiceRequest>(&body).map_err(|e| e.to_string())
        }
    };
    let request = match decoded {
        Ok(r) => r,
        Err(e) => {
            return finish(
                Outcome::BadRequest,
                error(
                    StatusCode::BAD_REQUEST,
                    Some(format),
                    format!("body is not an ExportMetricsServiceRequest: {e}"),
                ),
            )
        }
    };
    match shared.submit(request, received_at, Protocol::Http) {
        Ok(resp) => {
            let body = match format {
                Format::Protobuf => resp.encode_to_vec(),
                // Full success is `{}` (not `"partialSuccess": null`).
                Format::Json if resp.partial_success.is_none() => b"{}".to_vec(),
                Format::Json => serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, format.content_type())],
                body,
            )
                .into_response()
        }
        Err(IntakeError::Full) => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                Some(format),
                "the engine's intake queue is full; retry later".into(),
            );
            let secs = shared.retry_after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            finish(Outcome::IntakeFull, resp)
        }
        Err(IntakeError::Closed) => finish(
            Outcome::Unavailable,
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(format),
                "the engine has stopped".into(),
            ),
        ),
    }
}
