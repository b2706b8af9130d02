//! `rowcast healthcheck`: a minimal HTTP/1.0 `GET /ready` over plain TCP, so the container
//! image needs no curl. Blocking std I/O on purpose: it runs once and exits.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no HTTP answer from {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} answered {status_line:?}")]
    NotReady {
        addr: SocketAddr,
        status_line: String,
    },
}

/// The address to probe for a server listening on `listen`: an unspecified IP (0.0.0.0 or
/// ::) is reached on loopback.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok` when `GET /ready` on the server listening on `listen` answers 200 within `timeout`.
pub fn ready(listen: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let addr = probe_addr(listen);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let io = |source| ProbeError::Io { addr, source };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    // Only the status line matters; read until its end (or 1 KiB).
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let mut parts = status_line.split_whitespace();
    let is_http = parts.next().is_some_and(|v| v.starts_with("HTTP/"));
    if is_http && parts.next() == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotReady { addr, status_line })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(probe_addr(a), "127.0.0.1:8080".parse().unwrap());
        let a: SocketAddr = "[::]:9000".parse().unwrap();
        assert_eq!(probe_addr(a), "[::1]:9000".parse().unwrap());
        let a: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(probe_addr(a), a);
    }
}
