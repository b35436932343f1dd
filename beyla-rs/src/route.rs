//! Low-cardinality routes for span names: ids, UUIDs, hashes and long tokens in a path become
//! `{id}`, so that `/users/123` and `/users/456` name the same operation.

use std::sync::Arc;

/// Longest path segment kept as it is; longer ones are almost always tokens.
const MAX_LITERAL_SEGMENT: usize = 40;

fn is_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if b.len() > MAX_LITERAL_SEGMENT {
        return true;
    }
    // UUID: 8-4-4-4-12 hex digits.
    if b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
    {
        return true;
    }
    // Hex hashes and ids: at least 8 hex digits with at least one digit in them.
    if b.len() >= 8 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit) {
        return true;
    }
    // Mixed tokens: long, with digits and letters, no separators.
    b.len() >= 16
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_alphabetic)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// The route heuristic of a path (no query string), written into `out` (cleared first, so a
/// reused buffer keeps its capacity).
fn heuristic(path: &str, out: &mut String) {
    out.clear();
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id(seg) {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
}

/// A configured route pattern (`BEYLA_ROUTES_PATTERNS`): `/users/{id}`, `/users/:id`, `/api/*`.
///
/// Matching is per path segment: `{name}` and `:name` match exactly one non-empty segment, `*`
/// matches one segment, and a `*` or `**` as the last segment matches everything after it (one
/// or more segments). A trailing slash on the path is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// Shared: every request the pattern matches names its span with it.
    raw: Arc<str>,
    segs: Vec<PatSeg>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatSeg {
    Literal(String),
    One,
    Rest,
}

impl Pattern {
    /// Parses one pattern; `None` when it does not start with `/`.
    pub fn parse(raw: &str) -> Option<Pattern> {
        let raw = raw.trim();
        if !raw.starts_with('/') {
            return None;
        }
        let parts: Vec<&str> = raw[1..].split('/').collect();
        let n = parts.len();
        let segs = parts
            .iter()
            .enumerate()
            .filter(|(i, s)| !(s.is_empty() && *i == n - 1 && n > 1))
            .map(|(i, s)| {
                if (*s == "*" || *s == "**") && i == n - 1 {
                    PatSeg::Rest
                } else if *s == "*"
                    || (s.starts_with('{') && s.ends_with('}') && s.len() > 2)
                    || (s.starts_with(':') && s.len() > 1)
                {
                    PatSeg::One
                } else {
                    PatSeg::Literal((*s).to_owned())
                }
            })
            .collect();
        Some(Pattern {
            raw: raw.into(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn matches(&self, path: &str) -> bool {
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = if path.len() > 1 {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        let mut segs = path.split('/');
        for p in &self.segs {
            match p {
                PatSeg::Rest => return segs.next().is_some_and(|s| !s.is_empty()),
                PatSeg::One => match segs.next() {
                    Some(s) if !s.is_empty() => {}
                    _ => return false,
                },
                PatSeg::Literal(l) => match segs.next() {
                    Some(s) if s == l => {}
                    _ => return false,
                },
            }
        }
        segs.next().is_none()
    }
}

/// The route every path gets once a service has [`Router::max_routes`] distinct heuristic
/// routes (as Beyla's "unmatched" route).
pub const OVERFLOW_ROUTE: &str = "/**";

/// Default cap on distinct heuristic routes per service.
pub const DEFAULT_MAX_ROUTES: usize = 1000;

/// A low-cardinality route and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Shared with the router's table: the same few routes come back request after request.
    pub route: Arc<str>,
    /// From a configured pattern: exported as `http.route` (Beyla does the same). Heuristic
    /// routes only name spans and label metrics.
    pub configured: bool,
}

/// `routes.unmatched` (`BEYLA_ROUTES_UNMATCHED`): the route of a path no pattern matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unmatched {
    /// Ids, UUIDs and tokens become `{id}` (the default).
    #[default]
    Heuristic,
    /// The path as it is (still capped per service).
    Path,
    /// `/**` for every unmatched path.
    Wildcard,
    /// No route: spans are named by the method alone, metrics carry no `http.route`.
    Unset,
}

impl Unmatched {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "heuristic" => Self::Heuristic,
            "path" => Self::Path,
            "wildcard" => Self::Wildcard,
            "unset" => Self::Unset,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Heuristic => "heuristic",
            Self::Path => "path",
            Self::Wildcard => "wildcard",
            Self::Unset => "unset",
        }
    }
}

/// `routes.ignore_mode` (`BEYLA_ROUTES_IGNORE_MODE`): what a request on an ignored route does
/// not produce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IgnoreMode {
    /// Neither span nor metric.
    #[default]
    All,
    /// No span; still counted in the metrics.
    Traces,
    /// No metric; still a span.
    Metrics,
}

impl IgnoreMode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "all" => Self::All,
            "traces" => Self::Traces,
            "metrics" => Self::Metrics,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Traces => "traces",
            Self::Metrics => "metrics",
        }
    }
}

/// What to leave out for one request (`routes.ignored_patterns`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignore {
    pub span: bool,
    pub metrics: bool,
}

/// Routes for paths: configured patterns first, then the built-in heuristic, with a cap on the
/// distinct heuristic routes each service may produce.
#[derive(Debug)]
pub struct Router {
    patterns: Vec<Pattern>,
    ignored: Vec<Pattern>,
    ignore_mode: IgnoreMode,
    unmatched: Unmatched,
    max_routes: usize,
    /// foldhash: looked up on every server request.
    seen: std::collections::HashMap<
        String,
        std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
        foldhash::fast::RandomState,
    >,
    /// The heuristic route being looked up (reused: no allocation for a known route).
    scratch: String,
    overflow: Arc<str>,
    /// The empty route of [`Unmatched::Unset`], shared: no allocation per request.
    unset: Arc<str>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new(Vec::new(), DEFAULT_MAX_ROUTES)
    }
}

impl Router {
    pub fn new(patterns: Vec<Pattern>, max_routes: usize) -> Self {
        Self {
            patterns,
            ignored: Vec::new(),
            ignore_mode: IgnoreMode::All,
            unmatched: Unmatched::Heuristic,
            max_routes,
            seen: Default::default(),
            scratch: String::new(),
            overflow: OVERFLOW_ROUTE.into(),
            unset: "".into(),
        }
    }

    /// Requests on `patterns` are not reported (as `mode` says).
    pub fn ignoring(mut self, patterns: Vec<Pattern>, mode: IgnoreMode) -> Self {
        self.ignored = patterns;
        self.ignore_mode = mode;
        self
    }

    /// What paths no pattern matches are routed as.
    pub fn unmatched(mut self, unmatched: Unmatched) -> Self {
        self.unmatched = unmatched;
        self
    }

    pub fn max_routes(&self) -> usize {
        self.max_routes
    }

    /// What a request on `path` leaves out.
    pub fn ignore(&self, path: &str) -> Ignore {
        if !self.ignored.iter().any(|p| p.matches(path)) {
            return Ignore::default();
        }
        Ignore {
            span: self.ignore_mode != IgnoreMode::Metrics,
            metrics: self.ignore_mode != IgnoreMode::Traces,
        }
    }

    /// The route of `path` (no query) for `service`; empty with [`Unmatched::Unset`] when no
    /// pattern matches.
    pub fn route(&mut self, service: &str, path: &str) -> Route {
        if let Some(p) = self.patterns.iter().find(|p| p.matches(path)) {
            return Route {
                route: p.raw.clone(),
                configured: true,
            };
        }
        match self.unmatched {
            Unmatched::Heuristic => heuristic(path, &mut self.scratch),
            Unmatched::Path => {
                self.scratch.clear();
                self.scratch
                    .push_str(if path.is_empty() { "/" } else { path });
            }
            Unmatched::Wildcard => {
                return Route {
                    route: self.overflow.clone(),
                    configured: false,
                };
            }
            Unmatched::Unset => {
                return Route {
                    route: self.unset.clone(),
                    configured: false,
                };
            }
        }
        let h = self.scratch.as_str();
        let seen = match self.seen.get_mut(service) {
            Some(s) => s,
            None => self.seen.entry(service.to_owned()).or_default(),
        };
        let route = if let Some(r) = seen.get(h) {
            r.clone()
        } else if seen.len() < self.max_routes {
            let r: Arc<str> = h.into();
            seen.insert(r.clone());
            r
        } else {
            self.overflow.clone()
        };
        Route {
            route,
            configured: false,
        }
    }

    /// Distinct heuristic routes recorded for `service`.
    pub fn distinct(&self, service: &str) -> usize {
        self.seen.get(service).map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(path: &str) -> String {
        let mut out = String::new();
        heuristic(path, &mut out);
        out
    }

    #[test]
    fn table() {
        for (path, route) in [
            ("/", "/"),
            ("", "/"),
            ("/hello", "/hello"),
            ("/users/123", "/users/{id}"),
            ("/users/123/orders/77", "/users/{id}/orders/{id}"),
            ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/{id}"),
            ("/blob/9f86d081884c7d65", "/blob/{id}"),
            ("/api/v1/items", "/api/v1/items"),
            ("/t/abcDEF123456ghiJKL", "/t/{id}"),
            ("/deadbeef", "/deadbeef"),
            ("/static/app.js", "/static/app.js"),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    #[test]
    fn more_heuristics() {
        for (path, route) in [
            ("/users/123/", "/users/{id}/"),
            ("/a/0", "/a/{id}"),
            ("/v2/orders", "/v2/orders"),
            ("/files/report-2024.pdf", "/files/report-2024.pdf"),
            (
                "/sha/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "/sha/{id}",
            ),
            ("/session/AbC123dEf456GhI789", "/session/{id}"),
            ("/x/550E8400-E29B-41D4-A716-446655440000/y", "/x/{id}/y"),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    #[test]
    fn patterns() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("/users/{id}").matches("/users/17"));
        assert!(p("/users/:id").matches("/users/17/"));
        assert!(!p("/users/{id}").matches("/users/17/orders"));
        assert!(!p("/users/{id}").matches("/users/"));
        assert!(p("/api/*").matches("/api/a/b/c"));
        assert!(!p("/api/*").matches("/api"));
        assert!(p("/a/*/c").matches("/a/b/c"));
        assert!(!p("/a/*/c").matches("/a/b/d"));
        assert!(p("/").matches("/"));
        assert!(!p("/").matches("/x"));
        assert!(Pattern::parse("users").is_none());
    }

    #[test]
    fn router_prefers_patterns_and_caps_heuristics() {
        let mut r = Router::new(
            vec![
                Pattern::parse("/users/{id}").unwrap(),
                Pattern::parse("/api/*").unwrap(),
            ],
            3,
        );
        assert_eq!(
            r.route("svc", "/users/42"),
            Route {
                route: "/users/{id}".into(),
                configured: true
            }
        );
        assert_eq!(&*r.route("svc", "/api/v1/x").route, "/api/*");
        let h = r.route("svc", "/items/99");
        assert_eq!(&*h.route, "/items/{id}");
        assert!(!h.configured);
        assert_eq!(&*r.route("svc", "/a").route, "/a");
        assert_eq!(&*r.route("svc", "/b").route, "/b");
        assert_eq!(&*r.route("svc", "/c").route, OVERFLOW_ROUTE);
        // Known routes stay; other services have their own budget.
        assert_eq!(&*r.route("svc", "/items/1").route, "/items/{id}");
        assert_eq!(&*r.route("other", "/c").route, "/c");
    }

    #[test]
    fn ten_thousand_distinct_ids_stay_bounded() {
        let mut r = Router::default();
        let mut routes = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            // Ids the heuristic catches, and words it cannot tell from routes.
            routes.insert(r.route("svc", &format!("/users/{i}")).route);
            routes.insert(r.route("svc", &format!("/u{i}x/profile")).route);
        }
        assert!(routes.contains("/users/{id}"));
        assert!(routes.len() <= DEFAULT_MAX_ROUTES + 1, "{}", routes.len());
        assert!(routes.contains(OVERFLOW_ROUTE));
        assert_eq!(r.distinct("svc"), DEFAULT_MAX_ROUTES);
    }
}
