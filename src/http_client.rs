//! A minimal HTTP/1.1 client over hyper, for the CLI commands and `kvs bench`: one
//! keep-alive connection per [`Connection`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest answer read whole, and the largest event of a `/watch` stream: a value (at
/// most 16 MiB) with its envelope, or a page of a listing, is far below it; a server that
/// streams without end (a mistyped `--addr`) is not read into memory without bound.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A failure to talk to the node (not an HTTP error status).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `http://host:port`.
    #[error("address {0:?} is not http://host:port")]
    BadAddress(String),
    /// Connecting failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error: {0}")]
    Http(String),
}

/// `host:port` from `http://host:port[/]` or `host:port`: a host (an IPv6 address in
/// brackets) and a port from 1 to 65535.
pub fn authority(addr: &str) -> Result<String, ClientError> {
    let rest = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    let bad = || ClientError::BadAddress(addr.to_owned());
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if host.is_empty()
        || rest.contains('/')
        || host.contains(char::is_whitespace)
        || (host.contains(':') && !bracketed)
        || !port.parse::<u16>().is_ok_and(|port| port > 0)
    {
        return Err(bad());
    }
    Ok(rest.to_owned())
}

/// Where the client commands find a node unless told otherwise.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8080";

/// `addr` as given, once [`authority`] takes it: for `--addr`, so that an address that
/// can never work is a usage error (exit 2) before anything is sent. Empty means
/// [`DEFAULT_ADDR`], as when `KVS_ADDR` is exported but empty (`KVS_ADDR= kvs get k`).
pub fn checked_addr(addr: &str) -> Result<String, String> {
    if addr.is_empty() {
        return Ok(DEFAULT_ADDR.to_owned());
    }
    authority(addr)
        .map(|_| addr.to_owned())
        .map_err(|e| e.to_string())
}

/// One keep-alive connection to a node.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    /// Connects to `addr` (`http://host:port`).
    pub async fn open(addr: &str) -> Result<Self, ClientError> {
        let authority = authority(addr)?;
        let stream =
            TcpStream::connect(&authority)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: authority.clone(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        Ok(Self { sender, authority })
    }

    /// Sends one request; `path` includes the query.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        token: Option<&str>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.start(method, path, body, token, &[]).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| match error.downcast_ref::<LengthLimitError>() {
                Some(_) => ClientError::Http(format!(
                    "the answer of {} is over {} MiB, more than a kvs node sends: is it one?",
                    self.authority,
                    MAX_ANSWER_BYTES >> 20
                )),
                None => ClientError::Http(error.to_string()),
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends one request and returns the response as it starts, its body still to read
    /// (a stream such as `/watch`); `headers` are added to the request.
    pub async fn start(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_ADDR, authority, checked_addr};

    #[test]
    fn an_empty_address_is_the_default_one() {
        assert_eq!(checked_addr("").unwrap(), DEFAULT_ADDR);
        assert_eq!(checked_addr("http://h:1").unwrap(), "http://h:1");
        assert!(checked_addr("h").is_err());
    }

    #[test]
    fn authorities() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("http://h:1/").unwrap(), "h:1");
        assert_eq!(authority("h:1").unwrap(), "h:1");
        assert_eq!(authority("http://[::1]:19530").unwrap(), "[::1]:19530");
        for bad in [
            "",
            "http://",
            "http://h",
            "https//h:1/x/y",
            "localhost",
            "ftp://h:1",
            "http://127.0.0.1:99999",
            "http://h:0",
            ":abc",
            ":1",
            "http://::1:19530",
            "http://h h:1",
        ] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
