//! The Prometheus text exposition format (0.0.4), parsed strictly: label values may hold
//! braces, commas and escapes (`http_route="/orders/{id}"`), and a line that does not parse is
//! an error, not a skipped sample.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of `text`.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("unparsable sample line {line:?}");
        let name_end = line.find(['{', ' ']).ok_or_else(bad)?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches([',', ' ']);
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = r.split_once("=\"").ok_or_else(bad)?;
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().ok_or_else(bad)? {
                        (k, '"') => break k + 1,
                        (_, '\\') => match chars.next().ok_or_else(bad)?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.to_owned(), value);
                r = &after[end..];
            }
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(bad)?
            .parse::<f64>()
            .map_err(|_| bad())?;
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}
