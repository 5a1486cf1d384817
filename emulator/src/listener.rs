//! The server's TCP listener, which cuts connections during a network
//! partition ([`Faults::partition`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::faults::Faults;

pub(crate) struct PartitionListener {
    inner: TcpListener,
    faults: Faults,
}

impl PartitionListener {
    pub(crate) fn new(inner: TcpListener, faults: Faults) -> Self {
        PartitionListener { inner, faults }
    }
}

impl Listener for PartitionListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            // axum's own accept retries (and backs off on) accept errors.
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            if let Some(epoch) = self.faults.connection_epoch() {
                let faults = self.faults.clone();
                return (
                    Connection {
                        stream,
                        faults,
                        epoch,
                    },
                    addr,
                );
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted stream that fails once a partition starts after it opened.
pub(crate) struct Connection {
    stream: TcpStream,
    faults: Faults,
    epoch: u64,
}

impl Connection {
    fn reachable(&self) -> io::Result<()> {
        if self.faults.connection_epoch() == Some(self.epoch) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "network partition",
            ))
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reachable()?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.reachable()?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    // hyper writes headers and body in one vectored write when the stream supports it.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.reachable()?;
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reachable()?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn partitions_drop_new_connections_and_kill_open_ones() {
        let faults = Faults::default();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = PartitionListener::new(tcp, faults.clone());
        let (tx, mut accepted) = mpsc::unbounded_channel();
        let acceptor = tokio::spawn(async move {
            loop {
                let _ = tx.send(listener.accept().await);
            }
        });

        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut open, _) = accepted.recv().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();

        faults.partition(true);
        let reset = |e: io::Error| e.kind() == io::ErrorKind::ConnectionReset;
        assert!(open.read(&mut buf).await.is_err_and(reset));
        assert!(open.write_all(b"pong").await.is_err_and(reset));
        let mut dropped = TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        // EOF or a reset: accepted and dropped without a byte.
        let _ = dropped.read_to_end(&mut rest).await;
        assert!(rest.is_empty());

        faults.partition(false);
        assert!(open.write_all(b"pong").await.is_err_and(reset));
        let fresh = TcpStream::connect(addr).await.unwrap();
        let (mut conn, peer) = accepted.recv().await.unwrap();
        assert_eq!(peer, fresh.local_addr().unwrap());
        conn.write_all(b"pong").await.unwrap();
        assert!(
            accepted.try_recv().is_err(),
            "the partitioned connection was dropped"
        );
        acceptor.abort();
    }
}
