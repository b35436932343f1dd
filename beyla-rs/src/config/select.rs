//! `attributes.select`: which attributes each metric family carries, in Beyla's syntax.
//!
//! ```yaml
//! attributes:
//!   select:
//!     http_server_request_duration:   # or http.server.request.duration; `*` globs allowed
//!       include: ["*"]                # replaces the defaults when given
//!       exclude: ["url.path"]         # removed from what is included
//! ```
//!
//! Names compare with dots and underscores alike, and a metric section also matches its
//! Prometheus name (`…_seconds`, `…_bytes`). Several matching sections add up: any include
//! list of them includes, any exclude list of them excludes.

/// One section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectRule {
    pub metric: String,
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

/// The whole selection; empty: every family keeps its default attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributeSelect {
    pub rules: Vec<SelectRule>,
}

/// Dots, dashes and case do not matter.
fn norm(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// `*` matches any run of characters (the only wildcard Beyla documents here).
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl AttributeSelect {
    fn matching<'a>(
        &'a self,
        family: &str,
        unit_suffix: &str,
    ) -> impl Iterator<Item = &'a SelectRule> {
        let name = norm(family);
        let prom = format!("{name}{unit_suffix}");
        self.rules.iter().filter(move |r| {
            let m = norm(&r.metric);
            glob_match(&m, &name) || glob_match(&m, &prom)
        })
    }

    /// Whether `family` (an OpenTelemetry metric name, e.g. `http.server.request.duration`,
    /// Prometheus unit suffix `_seconds`) carries `attr`, which it carries by default or not.
    pub fn allowed(&self, family: &str, unit_suffix: &str, attr: &str, default: bool) -> bool {
        let attr = norm(attr);
        let mut included = None::<bool>;
        for r in self.matching(family, unit_suffix) {
            if let Some(inc) = &r.include {
                let hit = inc.iter().any(|p| glob_match(&norm(p), &attr));
                included = Some(included.unwrap_or(false) || hit);
            }
        }
        if !included.unwrap_or(default) {
            return false;
        }
        !self
            .matching(family, unit_suffix)
            .any(|r| r.exclude.iter().any(|p| glob_match(&norm(p), &attr)))
    }

    /// Some family could carry `attr` beyond its defaults (so spans must collect it).
    pub fn mentions(&self, attr: &str) -> bool {
        let attr = norm(attr);
        self.rules.iter().any(|r| {
            r.include
                .iter()
                .flatten()
                .any(|p| glob_match(&norm(p), &attr))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(metric: &str, include: Option<&[&str]>, exclude: &[&str]) -> SelectRule {
        SelectRule {
            metric: metric.into(),
            include: include.map(|i| i.iter().map(|s| s.to_string()).collect()),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxc", false),
            ("ab*ba", "aba", false),
            ("http_*", "rpc_server_duration", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} {t}");
        }
    }

    #[test]
    fn include_replaces_defaults_exclude_removes() {
        let s = AttributeSelect {
            rules: vec![
                rule("http_server_request_duration", Some(&["*"]), &["url.path"]),
                rule("http.client.*", None, &["server_port"]),
            ],
        };
        let srv = "http.server.request.duration";
        assert!(s.allowed(srv, "_seconds", "client.address", false));
        assert!(!s.allowed(srv, "_seconds", "url.path", false));
        assert!(s.allowed(srv, "_seconds", "http.route", true));
        // Other families keep their defaults, minus their exclusions.
        assert!(s.allowed(
            "http.client.request.duration",
            "_seconds",
            "http.request.method",
            true
        ));
        assert!(!s.allowed(
            "http.client.request.duration",
            "_seconds",
            "server.port",
            true
        ));
        assert!(!s.allowed(
            "http.client.request.duration",
            "_seconds",
            "url.path",
            false
        ));
        assert!(s.allowed("rpc.server.duration", "_seconds", "rpc.method", true));
        assert!(s.mentions("client.address"));
    }

    #[test]
    fn prometheus_names_and_wildcard_sections() {
        let s = AttributeSelect {
            rules: vec![
                rule(
                    "http_server_request_body_size_bytes",
                    Some(&["http.request.method"]),
                    &[],
                ),
                rule("*", None, &["http_response_status_code"]),
            ],
        };
        let f = "http.server.request.body.size";
        assert!(s.allowed(f, "_bytes", "http.request.method", true));
        assert!(!s.allowed(f, "_bytes", "http.route", true));
        assert!(!s.allowed(
            "rpc.client.duration",
            "_seconds",
            "http.response.status_code",
            true
        ));
        assert!(!s.mentions("url.path"));
    }
}
