//! Request metrics of the API, rendered as Prometheus text on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Counters by route, method and status; latency histograms by route.
pub(crate) struct RequestMetrics {
    requests: Mutex<BTreeMap<(usize, &'static str, u16), u64>>,
    latency: [Histogram; ROUTES.len()],
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            latency: Default::default(),
        }
    }

    /// Counts one answered request; `route` indexes [`ROUTES`].
    pub(crate) fn record(&self, route: usize, method: &str, status: u16, elapsed: Duration) {
        {
            let mut requests = self
                .requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *requests
                .entry((route, method_label(method), status))
                .or_default() += 1;
        }
        let histogram = &self.latency[route];
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        histogram.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        histogram.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Appends the request metrics in Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str("# HELP kvs_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE kvs_http_requests_total counter\n");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for ((route, method, status), count) in requests {
            let route = ROUTES[route];
            let _ = writeln!(
                out,
                "kvs_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP kvs_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE kvs_http_request_duration_seconds histogram\n");
        for (route, histogram) in ROUTES.iter().zip(&self.latency) {
            let count = histogram.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            for (bucket, bound) in histogram.buckets.iter().zip(BUCKETS) {
                let n = bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "kvs_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "kvs_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}\n\
                 kvs_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}\n\
                 kvs_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
    }
}
