//! Request metrics of the API and the encoding of `GET /metrics`: the metrics of one
//! scrape are registered in a `prometheus_client` [`Registry`] and written in the
//! Prometheus text format.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

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

/// The routes requests are counted under (a small fixed set, not raw paths), indexed by
/// the constants of [`route`].
pub(crate) const ROUTES: [&str; 15] = [
    "kv", "kv_list", "history", "health", "members", "metrics", "openapi", "auth", "meta", "sync",
    "watch", "audit", "admin", "ui", "other",
];

/// Indexes into [`ROUTES`].
pub(crate) mod route {
    pub(crate) const KV: usize = 0;
    pub(crate) const KV_LIST: usize = 1;
    pub(crate) const HISTORY: usize = 2;
    pub(crate) const HEALTH: usize = 3;
    pub(crate) const MEMBERS: usize = 4;
    pub(crate) const METRICS: usize = 5;
    pub(crate) const OPENAPI: usize = 6;
    pub(crate) const AUTH: usize = 7;
    pub(crate) const META: usize = 8;
    pub(crate) const SYNC: usize = 9;
    pub(crate) const WATCH: usize = 10;
    pub(crate) const AUDIT: usize = 11;
    pub(crate) const ADMIN: usize = 12;
    pub(crate) const UI: usize = 13;
    pub(crate) const OTHER: usize = 14;
}

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
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
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

/// The latency of one route's requests: per bucket of [`BUCKETS`] and above them.
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    buckets: [u64; BUCKETS.len() + 1],
    count: u64,
    seconds: f64,
}

impl Latency {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS.iter().position(|&upper| seconds <= upper);
        self.buckets[bucket.unwrap_or(BUCKETS.len())] += 1;
        self.count += 1;
        self.seconds += seconds;
    }

    fn add(&mut self, other: &Latency) {
        for (sum, more) in self.buckets.iter_mut().zip(other.buckets) {
            *sum += more;
        }
        self.count += other.count;
        self.seconds += other.seconds;
    }
}

/// What one shard has counted.
#[derive(Debug, Default)]
struct Counted {
    requests: FxHashMap<RequestLabels, u64>,
    latency: [Latency; ROUTES.len()],
}

/// A shard, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<Counted>);

/// How many shards the counts are spread over; a thread always uses the same one.
const SHARDS: usize = 8;

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// Counters by route, method and status; latency histograms by route. Each thread counts
/// in a shard of its own, so the HTTP threads never take the same lock or write the same
/// cache line (prometheus-client's families and histograms were one lock for all,
/// taken twice per request: 4 % of a GET's CPU); a scrape adds the shards up.
pub(crate) struct RequestMetrics {
    shards: [Shard; SHARDS],
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        Self {
            shards: Default::default(),
        }
    }

    /// Counts one answered request; `route` indexes [`ROUTES`].
    pub(crate) fn record(&self, route: usize, method: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels {
            route: ROUTES[route],
            method: method_label(method),
            status,
        };
        let shard = &self.shards[SHARD.with(|shard| *shard)];
        let mut counted = lock(shard);
        *counted.requests.entry(labels).or_default() += 1;
        counted.latency[route].observe(elapsed.as_secs_f64());
    }

    /// Adds the request metrics, as they stand, to the registry of a scrape.
    pub(crate) fn register(&self, registry: &mut Registry) {
        let mut total = Counted::default();
        for shard in &self.shards {
            let counted = lock(shard);
            for (labels, count) in &counted.requests {
                *total.requests.entry(labels.clone()).or_default() += count;
            }
            for (sum, more) in total.latency.iter_mut().zip(&counted.latency) {
                sum.add(more);
            }
        }
        let mut requests: Vec<_> = total.requests.into_iter().collect();
        requests.sort();
        registry.register_collector(Box::new(Scraped {
            requests,
            latency: total.latency,
        }));
    }
}

fn lock(shard: &Shard) -> MutexGuard<'_, Counted> {
    // Counts are plain numbers: a panic elsewhere cannot leave them inconsistent.
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The request metrics of one scrape.
#[derive(Debug)]
struct Scraped {
    requests: Vec<(RequestLabels, u64)>,
    latency: [Latency; ROUTES.len()],
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "kvs_http_requests",
            "HTTP requests answered.",
            None,
            MetricType::Counter,
        )?;
        for (labels, count) in &self.requests {
            ConstCounter::new(*count).encode(family.encode_family(labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "kvs_http_request_duration_seconds",
            "Time to answer a request.",
            None,
            MetricType::Histogram,
        )?;
        for (route, latency) in ROUTES.iter().zip(&self.latency) {
            if latency.count == 0 {
                continue;
            }
            let upper = BUCKETS.iter().copied().chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = upper.zip(latency.buckets).collect();
            family
                .encode_family(&RouteLabels { route })?
                .encode_histogram::<NoLabelSet>(latency.seconds, latency.count, &buckets, None)?;
        }
        Ok(())
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
    fn counts_from_many_threads_add_up() {
        let metrics = RequestMetrics::new();
        std::thread::scope(|scope| {
            for _ in 0..2 * SHARDS {
                scope.spawn(|| {
                    for _ in 0..100 {
                        metrics.record(0, "GET", 200, Duration::from_micros(200));
                    }
                });
            }
        });
        let text = scrape(&metrics);
        let requests = 2 * SHARDS * 100;
        for line in [
            format!(
                "kvs_http_requests_total{{route=\"kv\",method=\"GET\",status=\"200\"}} {requests}"
            ),
            format!("kvs_http_request_duration_seconds_count{{route=\"kv\"}} {requests}"),
            "kvs_http_request_duration_seconds_bucket{route=\"kv\",le=\"0.0001\"} 0".to_owned(),
            format!(
                "kvs_http_request_duration_seconds_bucket{{route=\"kv\",le=\"0.00025\"}} {requests}"
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
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
