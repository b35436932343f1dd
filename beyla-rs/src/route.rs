//! Low-cardinality routes for span names: ids, UUIDs, hashes and long tokens in a path become
//! `{id}`, so that `/users/123` and `/users/456` name the same operation.

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

/// The route heuristic of a path (no query string).
pub fn heuristic(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
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
    out
}

#[cfg(test)]
mod tests {
    use super::heuristic;

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
            assert_eq!(heuristic(path), route, "{path}");
        }
    }
}
