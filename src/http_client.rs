//! A minimal HTTP/1.1 client over hyper, for the CLI commands and `kvs bench`: one
//! keep-alive connection per [`Connection`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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

/// `host:port` from `http://host:port[/]` or `host:port`.
pub fn authority(addr: &str) -> Result<String, ClientError> {
    let rest = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(ClientError::BadAddress(addr.to_owned()));
    }
    Ok(rest.to_owned())
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
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
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
    use super::authority;

    #[test]
    fn authorities() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("http://h:1/").unwrap(), "h:1");
        assert_eq!(authority("h:1").unwrap(), "h:1");
        for bad in ["", "http://", "http://h", "https//h:1/x/y"] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
