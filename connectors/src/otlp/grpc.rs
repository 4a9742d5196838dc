//! OTLP/gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`, gzip
//! accepted, messages up to `max_request_bytes` (decompressed).
//!
//! | status | when |
//! | --- | --- |
//! | OK | accepted; `partial_success` carries rejected data points and why |
//! | UNAUTHENTICATED | auth is on and the bearer token is missing or wrong |
//! | RESOURCE_EXHAUSTED + `RetryInfo` | the engine's intake queue is full |
//! | UNAVAILABLE | the engine has stopped |
//!
//! Undecodable and oversized messages are answered by tonic's codec: `INTERNAL`, and
//! `OUT_OF_RANGE` (over `max_request_bytes` as sent) or `RESOURCE_EXHAUSTED` (over it
//! after decompression); they never reach Vigil's code and are not counted per outcome.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse, IntakeError, Outcome, Protocol,
    Shared,
};

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        // tonic has decoded the message by now; the receive instant is close enough.
        let received_at = Instant::now();
        let shared = &self.shared;
        match shared.submit(request.into_inner(), received_at, Protocol::Grpc) {
            Ok(resp) => Ok(Response::new(resp)),
            Err(IntakeError::Full) => {
                shared.stats.request(Protocol::Grpc, Outcome::IntakeFull);
                Err(Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    "the engine's intake queue is full; retry later",
                    ErrorDetails::with_retry_info(Some(shared.retry_after)),
                ))
            }
            Err(IntakeError::Closed) => {
                shared.stats.request(Protocol::Grpc, Outcome::Unavailable);
                Err(Status::unavailable("the engine has stopped"))
            }
        }
    }
}

/// The router of the gRPC listener: every path goes to the generated service (which
/// answers `UNIMPLEMENTED` for other methods), behind the bearer-token check.
pub(crate) fn service(shared: Arc<Shared>) -> Router {
    let auth = Arc::clone(&shared);
    let limit = shared.max_request_bytes;
    let svc = MetricsServiceServer::new(Service { shared })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let svc = tonic::service::interceptor::InterceptedService::new(
        svc,
        move |req: Request<()>| -> Result<Request<()>, Status> {
            let header = req.metadata().get("authorization").map(|v| v.as_bytes());
            if auth.authorized(header) {
                Ok(req)
            } else {
                auth.stats.request(Protocol::Grpc, Outcome::Unauthorized);
                Err(Status::unauthenticated("missing or invalid bearer token"))
            }
        },
    );
    Router::new().fallback_service(svc)
}
