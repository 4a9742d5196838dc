//! Receiver tests on loopback: OTLP/HTTP (protobuf, JSON, gzip, and every error path),
//! OTLP/gRPC with a tonic client, bearer-token auth and TLS with a self-signed
//! certificate made in the test.

use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message as _;
use tokio::sync::watch;

use super::mapper::tests::{gauge, kv, number, request};
use super::*;

const T: u64 = 1_767_225_600_000_000_000;

/// What the fake engine does with a batch.
const ACCEPT: u8 = 0;
const FULL: u8 = 1;
const CLOSED: u8 = 2;

#[derive(Default)]
struct FakeIntake {
    mode: AtomicU8,
    got: Mutex<Vec<OtlpBatch>>,
}

impl Intake for Arc<FakeIntake> {
    fn try_send(&self, batch: OtlpBatch) -> Result<(), IntakeError> {
        match self.mode.load(Ordering::Relaxed) {
            FULL => Err(IntakeError::Full),
            CLOSED => Err(IntakeError::Closed),
            _ => {
                self.got.lock().unwrap().push(batch);
                Ok(())
            }
        }
    }
}

impl FakeIntake {
    fn points(&self) -> u64 {
        self.got.lock().unwrap().iter().map(|b| b.points).sum()
    }
}

struct Running {
    intake: Arc<FakeIntake>,
    stats: Arc<OtlpStats>,
    http: SocketAddr,
    grpc: SocketAddr,
    _stop: watch::Sender<bool>,
}

fn loopback() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 0)))
}

async fn start(mut config: OtlpConfig) -> Running {
    config.grpc_listen = loopback();
    config.http_listen = loopback();
    let receiver = config.build().unwrap();
    let stats = receiver.stats();
    let intake = Arc::new(FakeIntake::default());
    let (stop, stop_rx) = watch::channel(false);
    let servers = receiver
        .start(Arc::new(Arc::clone(&intake)), stop_rx)
        .await
        .unwrap();
    Running {
        intake,
        stats,
        http: servers.http_addr.unwrap(),
        grpc: servers.grpc_addr.unwrap(),
        _stop: stop,
    }
}

fn two_points() -> ExportMetricsServiceRequest {
    request(vec![gauge(
        "queue.depth",
        vec![
            number(T, 1.0, vec![kv("q", "a")]),
            number(T, 2.0, vec![kv("q", "b")]),
        ],
    )])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(
    addr: SocketAddr,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = client()
        .post(format!("http://{addr}/v1/metrics"))
        .header("content-type", content_type)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn requests(stats: &OtlpStats, p: Protocol, o: Outcome) -> u64 {
    stats
        .snapshot()
        .requests
        .iter()
        .find(|r| r.0 == p && r.1 == o)
        .map_or(0, |r| r.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_json_and_gzip_are_accepted() {
    let r = start(OtlpConfig::default()).await;
    let body = two_points().encode_to_vec();

    let resp = post(r.http, "application/x-protobuf", &[], body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let decoded = ExportMetricsServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(
        decoded.partial_success, None,
        "full success leaves partial_success unset"
    );

    let resp = post(
        r.http,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        gzip(&body),
    )
    .await;
    assert_eq!(resp.status(), 200);

    // OTLP/JSON as the spec writes it: camelCase, 64-bit integers as strings.
    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"k8s.node.name","value":{{"stringValue":"n1"}}}}]}},
        "scopeMetrics":[{{"scope":{{"name":"s"}},"metrics":[{{"name":"queue.depth","gauge":{{"dataPoints":[
        {{"timeUnixNano":"{T}","asInt":"7","attributes":[{{"key":"q","value":{{"stringValue":"j"}}}}]}}]}}}}]}}]}}]}}"#
    );
    let resp = post(
        r.http,
        "application/json; charset=utf-8",
        &[],
        json.into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{}");

    assert_eq!(r.intake.points(), 5);
    let got = r.intake.got.lock().unwrap();
    assert!(got.iter().all(|b| b.protocol == Protocol::Http));
    let json_req = &got[2].request;
    let m = &json_req.resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(m.name, "queue_depth", "prepared: name normalised");
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::Success), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_partial_success_reports_rejected_points() {
    let r = start(OtlpConfig {
        max_points_per_request: 1,
        ..OtlpConfig::default()
    })
    .await;
    let mut req = two_points();
    // A third point without a value: invalid.
    if let Some(Data::Gauge(g)) = &mut req.resource_metrics[0].scope_metrics[0].metrics[0].data {
        g.data_points.push(NumberDataPoint {
            time_unix_nano: T,
            ..Default::default()
        });
    }
    let resp = post(
        r.http,
        "application/json",
        &[],
        serde_json::to_vec(&req).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let ps = &body["partialSuccess"];
    assert_eq!(ps["rejectedDataPoints"].as_i64(), Some(2), "{body}");
    let msg = ps["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("without a value") && msg.contains("limit of 1"),
        "{msg}"
    );
    assert_eq!(r.intake.points(), 1);
    let s = r.stats.snapshot();
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::Partial), 1);
    assert!(s.rejected.contains(&(Rejection::Invalid, 1)));
    assert!(s.rejected.contains(&(Rejection::TooMany, 1)));
    assert!(s.points_received.contains(&(Protocol::Http, 3)));
}

use opentelemetry_proto::tonic::metrics::v1::{metric::Data, NumberDataPoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_error_paths() {
    let r = start(OtlpConfig {
        max_request_bytes: 1000,
        ..OtlpConfig::default()
    })
    .await;

    // 400: not a protobuf message; the body is a google.rpc.Status.
    let resp = post(
        r.http,
        "application/x-protobuf",
        &[],
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let st = tonic_types::Status::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, 3);
    assert!(
        st.message.contains("ExportMetricsServiceRequest"),
        "{}",
        st.message
    );

    // 400: broken JSON, answered in JSON.
    let resp = post(
        r.http,
        "application/json",
        &[],
        b"{\"resourceMetrics\": [".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 3);

    // 400: gzip header but no gzip body.
    let resp = post(
        r.http,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        b"plain".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);

    // 413: over the limit as sent ...
    let resp = post(r.http, "application/x-protobuf", &[], vec![0u8; 2000]).await;
    assert_eq!(resp.status(), 413);
    // ... and only after decompression (a 2 kB zero body gzips to a few bytes).
    let small = gzip(&vec![0u8; 2000]);
    assert!(small.len() < 1000);
    let resp = post(
        r.http,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        small,
    )
    .await;
    assert_eq!(resp.status(), 413);

    // 415: other content types and encodings.
    let resp = post(r.http, "text/plain", &[], b"x".to_vec()).await;
    assert_eq!(resp.status(), 415);
    let resp = post(
        r.http,
        "application/x-protobuf",
        &[("content-encoding", "br")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 415);

    // 405/404: other methods and paths.
    let resp = client()
        .get(format!("http://{}/v1/metrics", r.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(r.intake.points(), 0);
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::BadRequest), 3);
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::TooLarge), 2);
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::Unsupported), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_backpressure_is_429_with_retry_after() {
    let r = start(OtlpConfig {
        retry_after: Duration::from_secs(3),
        ..OtlpConfig::default()
    })
    .await;
    r.intake.mode.store(FULL, Ordering::Relaxed);
    let body = two_points().encode_to_vec();
    let resp = post(r.http, "application/x-protobuf", &[], body.clone()).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(r.stats.rejected(Rejection::IntakeFull), 2);

    r.intake.mode.store(CLOSED, Ordering::Relaxed);
    let resp = post(r.http, "application/x-protobuf", &[], body.clone()).await;
    assert_eq!(resp.status(), 503);

    r.intake.mode.store(ACCEPT, Ordering::Relaxed);
    let resp = post(r.http, "application/x-protobuf", &[], body).await;
    assert_eq!(resp.status(), 200, "accepted again once there is room");
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::IntakeFull), 1);
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::Unavailable), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_on_both_listeners() {
    let r = start(OtlpConfig {
        bearer_token: Some(Secret("s3cret".into())),
        ..OtlpConfig::default()
    })
    .await;
    let body = two_points().encode_to_vec();
    let resp = post(r.http, "application/x-protobuf", &[], body.clone()).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = post(
        r.http,
        "application/x-protobuf",
        &[("authorization", "Bearer wrong!")],
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let resp = post(
        r.http,
        "application/x-protobuf",
        &[("authorization", "Bearer s3cret")],
        body,
    )
    .await;
    assert_eq!(resp.status(), 200);

    let mut c = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    let err = c.export(two_points()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(two_points());
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    c.export(req).await.unwrap();
    assert_eq!(r.intake.points(), 4);
    assert_eq!(requests(&r.stats, Protocol::Http, Outcome::Unauthorized), 2);
    assert_eq!(requests(&r.stats, Protocol::Grpc, Outcome::Unauthorized), 1);
}

#[test]
fn bearer_token_from_the_environment() {
    let cfg = OtlpConfig {
        bearer_token_env: Some("VIGIL_TEST_OTLP_TOKEN".into()),
        ..OtlpConfig::default()
    };
    let r = cfg
        .clone()
        .build_with_env(|_| Some("from-env".into()))
        .unwrap();
    assert_eq!(r.auth.as_deref(), Some(&b"Bearer from-env"[..]));
    let err = cfg.build_with_env(|_| None).unwrap_err();
    assert!(matches!(err, OtlpError::MissingBearerToken { .. }), "{err}");
    assert!(
        !format!("{r:?}").contains("from-env"),
        "the token stays out of Debug"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_gzip_partial_success_and_backpressure() {
    let r = start(OtlpConfig {
        max_points_per_request: 3,
        ..OtlpConfig::default()
    })
    .await;
    let mut c = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let resp = c.export(two_points()).await.unwrap().into_inner();
    assert_eq!(resp.partial_success, None);

    let mut big = two_points();
    big.resource_metrics[0].scope_metrics[0].metrics.push(gauge(
        "other",
        vec![number(T, 1.0, vec![]), number(T, 2.0, vec![])],
    ));
    let resp = c.export(big).await.unwrap().into_inner();
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_data_points, 1);
    assert!(ps.error_message.contains("limit of 3"));
    assert_eq!(r.intake.points(), 5);

    r.intake.mode.store(FULL, Ordering::Relaxed);
    let err = c.export(two_points()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt as _;
    let retry = err.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(1)));

    r.intake.mode.store(CLOSED, Ordering::Relaxed);
    let err = c.export(two_points()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(requests(&r.stats, Protocol::Grpc, Outcome::Success), 1);
    assert_eq!(requests(&r.stats, Protocol::Grpc, Outcome::Partial), 1);
    assert_eq!(requests(&r.stats, Protocol::Grpc, Outcome::IntakeFull), 1);
    assert!(r
        .intake
        .got
        .lock()
        .unwrap()
        .iter()
        .all(|b| b.protocol == Protocol::Grpc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_over_the_size_limit_are_refused() {
    let r = start(OtlpConfig {
        max_request_bytes: 600,
        ..OtlpConfig::default()
    })
    .await;
    // 200 equal points: large as sent, tiny gzipped.
    let big = request(vec![gauge(
        "g",
        (0..200).map(|_| number(T, 1.0, vec![])).collect(),
    )]);
    assert!(big.encoded_len() > 600);
    let mut c = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    let err = c.export(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    // Compressed it fits as sent, but not once decompressed.
    let mut c = c.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let err = c.export(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert_eq!(r.intake.points(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
    let r = start(OtlpConfig {
        tls: Some(TlsConfig {
            cert_file,
            key_file,
        }),
        ..OtlpConfig::default()
    })
    .await;

    // HTTP over TLS, trusting the test's certificate.
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", r.http)
        .build()
        .unwrap();
    let resp = https
        .post(format!("https://localhost:{}/v1/metrics", r.http.port()))
        .header("content-type", "application/x-protobuf")
        .body(two_points().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP to a TLS listener gets nowhere.
    assert!(client()
        .post(format!("http://{}/v1/metrics", r.http))
        .header("content-type", "application/x-protobuf")
        .body(two_points().encode_to_vec())
        .send()
        .await
        .is_err());

    // gRPC over TLS (ALPN h2).
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", r.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    MetricsServiceClient::new(channel)
        .export(two_points())
        .await
        .unwrap();
    assert_eq!(r.intake.points(), 4);
}

#[test]
fn tls_errors_name_the_file() {
    let err = OtlpConfig {
        tls: Some(TlsConfig {
            cert_file: "/nonexistent/tls.crt".into(),
            key_file: "/nonexistent/tls.key".into(),
        }),
        ..OtlpConfig::default()
    }
    .build()
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/tls.crt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_default_port_is_tolerated_only_when_optional() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = OtlpConfig {
        grpc_listen: Some(addr),
        http_listen: loopback(),
        ..OtlpConfig::default()
    };
    let (_stop, rx) = watch::channel(false);
    let intake: Arc<dyn Intake> = Arc::new(Arc::new(FakeIntake::default()));
    let err = cfg
        .clone()
        .build()
        .unwrap()
        .start(Arc::clone(&intake), rx.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OtlpError::Bind {
                protocol: "grpc",
                ..
            }
        ),
        "{err}"
    );
    let servers = cfg
        .build()
        .unwrap()
        .optional_listeners(true, true)
        .start(intake, rx)
        .await
        .unwrap();
    assert!(servers.grpc_addr.is_none());
    assert!(servers.http_addr.is_some());
}
