//! Decoding of ring buffer records into typed events that borrow the record's bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use beyla_rs_common::{
    DIR_EGRESS, EVENT_HEADER_LEN, EventHeader, EventKind, ROLE_CLIENT, ROLE_SERVER, SOCKADDR_LEN,
    SOCKADDR_PAIR_LEN,
};

use crate::protocol::{Direction, Role};

/// A record that could not be decoded. Counted, never fatal: a record from a newer or older
/// kernel object, or a torn read, must not stop the pipeline.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {EVENT_HEADER_LEN}-byte header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("payload length {claimed} exceeds the record's {available} bytes")]
    PayloadOverrun { claimed: usize, available: usize },
}

/// One decoded record.
#[derive(Debug)]
pub struct Event<'a> {
    pub kind: EventKind,
    pub header: EventHeader,
    /// The captured head (data events) or the socket address (connection events).
    pub payload: &'a [u8],
    /// Data events: the extents past the head (see `ExtentHeader`).
    extents: &'a [u8],
}

impl<'a> Event<'a> {
    pub fn decode(record: &'a [u8]) -> Result<Self, DecodeError> {
        if record.len() < EVENT_HEADER_LEN {
            return Err(DecodeError::Short(record.len()));
        }
        // SAFETY: EventHeader is plain old data of EVENT_HEADER_LEN bytes; read_unaligned copes
        // with any alignment of the ring buffer slice.
        let header: EventHeader =
            unsafe { std::ptr::read_unaligned(record.as_ptr() as *const EventHeader) };
        let kind = EventKind::from_u8(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
        let available = record.len() - EVENT_HEADER_LEN;
        let head = header.captured_len as usize;
        let tail = if kind == EventKind::Data {
            header.aux as usize
        } else {
            0
        };
        let claimed = head.saturating_add(tail);
        if claimed > available {
            return Err(DecodeError::PayloadOverrun { claimed, available });
        }
        let body = &record[EVENT_HEADER_LEN..];
        Ok(Self {
            kind,
            header,
            payload: &body[..head],
            extents: &body[head..claimed],
        })
    }

    pub fn tgid(&self) -> u32 {
        self.header.tgid
    }

    pub fn direction(&self) -> Direction {
        if self.header.direction == DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self.header.role {
            ROLE_SERVER => Some(Role::Server),
            ROLE_CLIENT => Some(Role::Client),
            _ => None,
        }
    }

    /// The extents past the head (empty when the head holds every octet the syscall moved).
    pub fn extents(&self) -> crate::protocol::Extents<'a> {
        crate::protocol::Extents::new(self.extents)
    }

    /// The socket address carried by accept/connect/bind events (the peer's for accept and
    /// connect).
    pub fn sockaddr(&self) -> Option<SocketAddr> {
        parse_sockaddr(self.payload)
    }

    /// The local address of accept/connect events from the socket-level backends, which carry
    /// both (see [`SOCKADDR_PAIR_LEN`]).
    pub fn local_sockaddr(&self) -> Option<SocketAddr> {
        if self.payload.len() < SOCKADDR_PAIR_LEN {
            return None;
        }
        parse_sockaddr(&self.payload[SOCKADDR_LEN..SOCKADDR_PAIR_LEN])
    }
}

/// Parse a `struct sockaddr_in` / `sockaddr_in6` as the kernel lays it out.
pub fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    match family {
        2 if b.len() >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        10 if b.len() >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            let ip = Ipv6Addr::from(octets);
            // Show v4-mapped peers (dual-stack listeners) as plain IPv4.
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            };
            Some(SocketAddr::new(ip, port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, payload: &[u8], claimed: u32, tail: u32) -> Vec<u8> {
        let h = EventHeader {
            kind,
            direction: DIR_EGRESS,
            role: ROLE_SERVER,
            flags: 0,
            captured_len: claimed,
            tgid: 7,
            tid: 8,
            fd: 3,
            aux: tail,
            conn_id: 99,
            ts_ns: 1,
            total_len: 100,
        };
        let mut v = vec![0u8; EVENT_HEADER_LEN];
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr() as *mut EventHeader, h) };
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_and_bounds_payload() {
        let ext = crate::protocol::Extents::encode(&[(97, b"abc")]);
        let mut body = b"GET / HTTP/1.1\r\n".to_vec();
        body.extend_from_slice(&ext);
        let r = record(1, &body, 16, ext.len() as u32);
        let e = Event::decode(&r).unwrap();
        assert_eq!(e.kind, EventKind::Data);
        assert_eq!(e.payload, b"GET / HTTP/1.1\r\n");
        assert_eq!(e.extents().iter().collect::<Vec<_>>(), [(97, &b"abc"[..])]);
        // Extents longer than the record are an overrun, not a short read.
        let r = record(1, &body, 16, ext.len() as u32 + 1);
        assert!(matches!(
            Event::decode(&r),
            Err(DecodeError::PayloadOverrun { .. })
        ));
        // `aux` of other kinds is not a tail length.
        let r = record(2, b"", 0, 7);
        assert_eq!(Event::decode(&r).unwrap().extents().iter().count(), 0);
        assert_eq!(e.direction(), Direction::Egress);
        assert_eq!(e.role(), Some(Role::Server));
        let r = record(1, b"xy", 50, 0);
        assert!(matches!(
            Event::decode(&r),
            Err(DecodeError::PayloadOverrun { .. })
        ));
        assert!(matches!(
            Event::decode(&r[..10]),
            Err(DecodeError::Short(10))
        ));
        let r = record(200, b"", 0, 0);
        assert_eq!(
            Event::decode(&r).unwrap_err(),
            DecodeError::UnknownKind(200)
        );
    }

    /// Accept/connect records of the socket-level backends: the peer, then the local address,
    /// each in a `SOCKADDR_LEN` slot (as `sockets::register` in the kernel writes them).
    #[test]
    fn address_pairs() {
        let mut pair = vec![0u8; SOCKADDR_PAIR_LEN];
        pair[..8].copy_from_slice(&[2, 0, 0x9c, 0x40, 127, 0, 0, 1]);
        pair[SOCKADDR_LEN..SOCKADDR_LEN + 8].copy_from_slice(&[2, 0, 0x1f, 0x90, 127, 0, 0, 2]);
        let r = record(2, &pair, SOCKADDR_PAIR_LEN as u32, 8080);
        let e = Event::decode(&r).unwrap();
        assert_eq!(e.sockaddr(), Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(e.local_sockaddr(), Some("127.0.0.2:8080".parse().unwrap()));
        // The syscall backend's records carry one address: no local one.
        let r = record(2, &pair[..16], 16, 3);
        let e = Event::decode(&r).unwrap();
        assert_eq!(e.sockaddr(), Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(e.local_sockaddr(), None);
        // IPv6 in both slots.
        let mut pair = vec![0u8; SOCKADDR_PAIR_LEN];
        pair[..4].copy_from_slice(&[10, 0, 0x9c, 0x40]);
        pair[23] = 1;
        pair[SOCKADDR_LEN..SOCKADDR_LEN + 4].copy_from_slice(&[10, 0, 0x1f, 0x90]);
        pair[SOCKADDR_LEN + 23] = 1;
        let r = record(3, &pair, SOCKADDR_PAIR_LEN as u32, 0);
        let e = Event::decode(&r).unwrap();
        assert_eq!(e.sockaddr(), Some("[::1]:40000".parse().unwrap()));
        assert_eq!(e.local_sockaddr(), Some("[::1]:8080".parse().unwrap()));
    }

    #[test]
    fn sockaddrs() {
        let mut v4 = vec![2u8, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.extend_from_slice(&[0; 8]);
        assert_eq!(parse_sockaddr(&v4), Some("127.0.0.1:8080".parse().unwrap()));
        let mut v6 = vec![10u8, 0, 0, 80, 0, 0, 0, 0];
        v6.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 9]);
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(parse_sockaddr(&v6), Some("10.0.0.9:80".parse().unwrap()));
        assert_eq!(parse_sockaddr(&[1, 0, b'/']), None);
        assert_eq!(parse_sockaddr(&[2, 0, 1]), None);
    }
}
