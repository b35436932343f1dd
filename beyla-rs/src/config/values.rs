//! The pure value parsers behind every configuration source (environment variables and the
//! file): ports, durations, URLs, `k=v` lists. No I/O, no crate dependencies beyond
//! `thiserror`, so the fuzz targets compile them on their own.

use std::{collections::BTreeSet, time::Duration};

use thiserror::Error;

/// A configuration value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {var}={value:?}: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "no process is selected: set BEYLA_OPEN_PORT (e.g. \"80,443,8000-8999\"), \
         BEYLA_AUTO_TARGET_EXE, BEYLA_EXECUTABLE_NAME or BEYLA_TARGET_PID, or list \
         discovery.instrument entries in the configuration file"
    )]
    NothingSelected,
    /// A configuration file that cannot be used: where, which key, and why. Values from the
    /// file fail with the same reasons as the environment variables they stand for.
    #[error("{path}:{line}: {key}: {reason}")]
    File {
        path: String,
        line: usize,
        key: String,
        reason: String,
    },
}

pub fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A set of TCP ports, from `80,443,8000-8999`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    pub fn parse(var: &'static str, value: &str) -> Result<Self, ConfigError> {
        let mut ranges = Vec::new();
        for token in value.split(',') {
            let token = token.trim();
            if token.is_empty() {
                return Err(invalid(var, value, "empty entry in the port list"));
            }
            let port = |t: &str| -> Result<u16, ConfigError> {
                let t = t.trim();
                let n: u32 = t
                    .parse()
                    .map_err(|_| invalid(var, value, format!("{t:?} is not a port number")))?;
                if n == 0 || n > 65535 {
                    return Err(invalid(var, value, format!("port {n} is outside 1-65535")));
                }
                Ok(n as u16)
            };
            let (lo, hi) = match token.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(token)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(invalid(
                    var,
                    value,
                    format!("range {token:?} is reversed (start above end)"),
                ));
            }
            ranges.push((lo, hi));
        }
        Ok(Self { ranges })
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Add every port of `other`.
    pub fn extend(&mut self, other: &PortSet) {
        self.ranges.extend_from_slice(&other.ranges);
    }

    /// `80,443,8000-8999` again.
    pub fn to_list(&self) -> String {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        parts.join(",")
    }

    /// Every port in the set, in order, without duplicates.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect()
    }
}

/// `30s`, `1m`, `500ms`, `2h`, or a plain number of milliseconds.
pub fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| invalid(var, value, "expected a duration like 30s, 1m, 500ms"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        "h" => n * 3600e3,
        _ => return Err(invalid(var, value, "unit must be ms, s, m or h")),
    };
    if !(1.0..=86_400_000.0).contains(&ms) {
        return Err(invalid(var, value, "must be between 1ms and 24h"));
    }
    Ok(Duration::from_micros((ms * 1e3) as u64))
}

pub fn parse_u64(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(var, value, "expected a non-negative whole number"))
}

pub fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(invalid(var, value, "expected true or false")),
    }
}

/// Milliseconds, at least 1 (a zero export timeout fails every request; a zero schedule
/// delay spins).
pub fn parse_timeout(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match parse_u64(var, value)? {
        0 => Err(invalid(var, value, "must be at least 1 (milliseconds)")),
        n => Ok(Duration::from_millis(n)),
    }
}

/// [`parse_pairs`] for HTTP headers: names must be tokens and values free of control
/// characters, or every export request would fail (or the header be silently dropped).
pub fn parse_headers(var: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let pairs = parse_pairs(var, value)?;
    for (k, v) in &pairs {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if !k.chars().all(token) {
            return Err(invalid(
                var,
                value,
                format!("{k:?} is not a valid header name"),
            ));
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(invalid(
                var,
                value,
                format!("the value of {k:?} contains control characters"),
            ));
        }
    }
    Ok(pairs)
}

/// `k=v,k2=v2` as used by `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`
/// (values may be percent-encoded).
pub fn parse_pairs(var: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| invalid(var, value, format!("{item:?} is not key=value")))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(invalid(var, value, format!("{item:?} has an empty key")));
        }
        out.push((k.to_owned(), percent_decode(v.trim())));
    }
    Ok(out)
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Validate an endpoint URL: `http(s)://host[:port][/path]`.
pub fn parse_url(var: &'static str, value: &str) -> Result<(String, u16, String), ConfigError> {
    let v = value.trim();
    let (scheme, rest) = v
        .split_once("://")
        .ok_or_else(|| invalid(var, value, "expected a URL like http://127.0.0.1:4318"))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(invalid(
                var,
                value,
                format!("unsupported scheme {scheme:?}"),
            ));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(invalid(var, value, "the URL has no host"));
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped
            .split_once(']')
            .ok_or_else(|| invalid(var, value, "unterminated IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| invalid(var, value, "bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(invalid(var, value, "bad authority")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| invalid(var, value, format!("{p:?} is not a port")))?;
                (h.to_owned(), port)
            }
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(invalid(var, value, "bad host"));
    }
    Ok((host, port, path.to_owned()))
}
