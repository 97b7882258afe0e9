//! The server's threads: connections are dealt to them in turn, and once
//! shutdown is asked, the server's future completes only after every thread has ended and
//! dropped its copies of the API (the node then takes the API back to stop it).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{HttpLimits, Respond, serve};

const LIMITS: HttpLimits = HttpLimits {
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
    max_connections: 64,
};

/// Answers every request with the name of the thread that serves it; holds a copy of
/// what stands for the node's API.
#[derive(Clone)]
struct ThreadName(Arc<()>);

impl Respond for ThreadName {
    fn respond(
        self,
        _request: Request<super::Arriving>,
        _remote: std::net::SocketAddr,
    ) -> impl Future<Output = warp::reply::Response> + Send + 'static {
        let _api = &self.0;
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        std::future::ready(warp::reply::Reply::into_response(name))
    }
}

/// Sends one request on a new connection and returns the body of the answer, the name of
/// the thread that served it.
fn thread_name_from(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: kvs\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_on_the_server_threads_and_shutdown_joins_them() {
    // Stands for the API the node serves.
    let api = Arc::new(());
    let served = ThreadName(Arc::clone(&api));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, shutdown) = watch::channel(false);
    let server = serve(served, listener, 3, LIMITS, shutdown).expect("start");
    let server = tokio::spawn(server);

    let names = tokio::task::spawn_blocking(move || {
        let clients: Vec<_> = (0..12)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..10).map(|_| thread_name_from(addr)).collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().expect("client"))
            .collect::<Vec<String>>()
    })
    .await
    .expect("clients");
    assert_eq!(names.len(), 120, "every request answered");
    assert!(
        names.iter().all(|name| name.starts_with("kvs-http-")),
        "served on the server's threads: {names:?}"
    );
    for n in 0..3 {
        let thread = format!("kvs-http-{n}");
        let served = names.iter().filter(|name| **name == thread).count();
        assert_eq!(served, 40, "{thread} served a third of the connections");
    }

    stop.send(true).expect("shutdown");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .expect("the server task");
    assert_eq!(
        Arc::strong_count(&api),
        1,
        "every thread dropped its copy of the API before the server returned"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after shutdown"
    );
}
