//! Simulated datagrams: [`kvs_net::Datagrams`] on virtual time, through the same
//! [`crate::Fabric`] (loss, bursts, duplication, reordering, MTU, partitions, clogs) as the
//! model engine. Authentication is not simulated: every datagram is genuine here (the real
//! codec is tested with real sockets in kvs-net); the MTU check counts its overhead.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use kvs_net::{AUTH_OVERHEAD, Datagrams, MAX_PAYLOAD, NetError};

use super::core::{Core, lock};
use crate::protocol::{addr_index, node_addr};

/// A node's datagram transport.
#[derive(Clone)]
pub struct SimDatagrams {
    pub(crate) core: Arc<Mutex<Core>>,
    pub(crate) node: usize,
}

impl Datagrams for SimDatagrams {
    async fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), NetError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(NetError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let mut core = lock(&self.core);
        let n = core.up.len();
        let (Some(to), true) = (addr_index(to, n), core.up[self.node]) else {
            return Ok(());
        };
        let now = core.now;
        if let Ok(times) = core
            .fabric
            .route(now, self.node, to, payload.len() + AUTH_OVERHEAD)
        {
            for arrival in times {
                core.send_datagram(arrival, self.node, to, payload.to_vec());
            }
        }
        Ok(())
    }

    async fn recv_from(&self) -> Result<(SocketAddr, Vec<u8>), NetError> {
        poll_fn(|cx| {
            let mut core = lock(&self.core);
            let mailbox = &mut core.mailboxes[self.node];
            match mailbox.datagrams.pop_front() {
                Some(got) => Poll::Ready(Ok(got)),
                None => {
                    mailbox.datagram_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(node_addr(self.node))
    }
}
