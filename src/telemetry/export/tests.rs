use super::*;

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn file(endpoint: &str, protocol: Option<&str>) -> OtlpFile {
    OtlpFile {
        endpoint: endpoint.into(),
        protocol: protocol.map(Into::into),
        headers: Default::default(),
        timeout: None,
    }
}

#[test]
fn nothing_configured_means_no_exporter() {
    assert_eq!(OtlpConfig::resolve(None, &env(&[])).unwrap(), None);
    assert_eq!(
        OtlpConfig::resolve(None, &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap(),
        None
    );
}

#[test]
fn file_wins_and_http_gets_the_signal_path() {
    let c = OtlpConfig::resolve(
        Some(&file("http://c:4318", Some("http/protobuf"))),
        &env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.endpoint, "http://c:4318/v1/traces");
    assert_eq!(c.protocol, Protocol::HttpProtobuf);
    assert_eq!(c.timeout, Duration::from_millis(2500));
    let c = OtlpConfig::resolve(Some(&file("http://c:4317", None)), &env(&[]))
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.endpoint.as_str(), c.protocol),
        ("http://c:4317", Protocol::Grpc)
    );
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn environment_variables() {
    let c = OtlpConfig::resolve(
        None,
        &env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.endpoint, "https://collector:4318/v1/traces");
    assert_eq!(c.queue.max_queue, 100);
    assert_eq!(c.queue.max_batch, 100, "a batch never exceeds the queue");
    assert_eq!(c.queue.delay, Duration::from_millis(50));
    let c = OtlpConfig::resolve(
        None,
        &env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x:4318/custom"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.endpoint, "http://x:4318/custom", "per-signal URL as is");
    assert_eq!(c.protocol, Protocol::HttpProtobuf);
    let error = OtlpConfig::resolve(
        None,
        &env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]),
    )
    .unwrap_err();
    assert!(error.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{error}");
}

#[test]
fn headers_never_print() {
    let mut f = file("http://c:4317", None);
    f.headers.insert("x-api-key".into(), "secret-value".into());
    let c = OtlpConfig::resolve(Some(&f), &env(&[])).unwrap().unwrap();
    let printed = format!("{c:?}");
    assert!(printed.contains("x-api-key") && !printed.contains("secret-value"));
}
