//! Request metrics of the API and the encoding of `GET /metrics`: the metrics of one
//! scrape are registered in a `prometheus_client` [`Registry`] and written in the
//! Prometheus text format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `GET /metrics`: the Prometheus text format 0.0.4, as it always
/// was and as `api/openapi.json` declares (`text/plain`). [`encode`] writes exactly that
/// format (prometheus-client's `prometheus_text`: a counter's `# HELP` and `# TYPE` name
/// it with its `_total`, and there is no `# EOF`), not the OpenMetrics text of its
/// `text::encode`, which would have to be sent as `application/openmetrics-text`.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Writes the metrics registered in `registry` in the Prometheus text format.
pub(crate) fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    prometheus_text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// The routes requests are counted under (a small fixed set, not raw paths).
pub(crate) const ROUTES: [&str; 10] = [
    "kv", "kv_list", "history", "health", "members", "metrics", "openapi", "auth", "meta", "other",
];

/// The label of a method: the standard ones by name, anything else as `other` (so that
/// clients cannot grow the label set).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// The labels of `kvs_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// The labels of `kvs_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Counters by route, method and status; latency histograms by route.
pub(crate) struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }

    /// Counts one answered request; `route` indexes [`ROUTES`].
    pub(crate) fn record(&self, route: usize, method: &str, status: u16, elapsed: Duration) {
        let route = ROUTES[route];
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label(method),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Adds the request metrics to the registry of a scrape (they share their values
    /// with `self`).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "kvs_http_requests",
            "HTTP requests answered",
            self.requests.clone(),
        );
        registry.register(
            "kvs_http_request_duration_seconds",
            "Time to answer a request",
            self.latency.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request metrics of a scrape, as `GET /metrics` writes them.
    fn scrape(metrics: &RequestMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        encode(&registry)
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let metrics = RequestMetrics::new();
        metrics.record(0, "PUT", 201, Duration::from_micros(300));
        metrics.record(0, "PUT", 201, Duration::from_millis(2));
        metrics.record(4, "BREW", 405, Duration::from_secs(2));
        let text = scrape(&metrics);
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "# HELP kvs_http_requests_total HTTP requests answered.",
            "# TYPE kvs_http_requests_total counter",
            "kvs_http_requests_total{route=\"kv\",method=\"PUT\",status=\"201\"} 2",
            "kvs_http_requests_total{route=\"members\",method=\"other\",status=\"405\"} 1",
            "# HELP kvs_http_request_duration_seconds Time to answer a request.",
            "# TYPE kvs_http_request_duration_seconds histogram",
            "kvs_http_request_duration_seconds_bucket{route=\"kv\",le=\"0.00025\"} 0",
            "kvs_http_request_duration_seconds_bucket{route=\"kv\",le=\"0.0005\"} 1",
            "kvs_http_request_duration_seconds_bucket{route=\"kv\",le=\"0.0025\"} 2",
            "kvs_http_request_duration_seconds_bucket{route=\"kv\",le=\"+Inf\"} 2",
            "kvs_http_request_duration_seconds_count{route=\"kv\"} 2",
            "kvs_http_request_duration_seconds_bucket{route=\"members\",le=\"1\"} 0",
            "kvs_http_request_duration_seconds_bucket{route=\"members\",le=\"+Inf\"} 1",
            "kvs_http_request_duration_seconds_sum{route=\"members\"} 2.0",
        ] {
            assert!(lines.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn a_route_without_requests_has_no_series() {
        let metrics = RequestMetrics::new();
        metrics.record(3, "GET", 200, Duration::from_micros(50));
        let text = scrape(&metrics);
        assert!(text.contains("{route=\"health\""), "{text}");
        assert!(!text.contains("{route=\"kv\""), "{text}");
    }
}
