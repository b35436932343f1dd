//! A YAML document as a tree whose every node knows its line, so that a bad key or value in
//! the configuration file is reported where it is.
//!
//! Built from the parser's event stream with an explicit stack (no recursion: nesting depth
//! is bounded by [`MAX_DEPTH`], not by the thread's stack), with aliases expanded within a
//! node budget ([`MAX_NODES`]), so a hostile file cannot exhaust memory by alias doubling.

use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, Parser},
    scanner::{Marker, TScalarStyle},
};

/// Deepest nesting accepted; the configuration needs five levels.
pub const MAX_DEPTH: usize = 64;
/// Nodes in a document, aliases expanded included.
pub const MAX_NODES: usize = 100_000;

/// One node and where it starts (1-based line).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar as written; `quoted` keeps `"8080"` apart from `8080` and `"null"` from `~`.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys in the order written (duplicates are refused while building).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// `~`, `null`, or an empty value.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false }
            if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    /// The scalar's text, `None` for a sequence or a mapping.
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A document that is not YAML, or not one this reader accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

fn err(mark: Marker, message: impl Into<String>) -> YamlError {
    YamlError {
        line: mark.line(),
        message: message.into(),
    }
}

/// A node under construction.
enum Open {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Parse one document. An empty file is an empty mapping; a second document is an error.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;
    let mut root: Option<Node> = None;
    let mut documents = 0;
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| err(*e.marker(), e.info().to_owned()))?;
        let done = match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(err(mark, "only one YAML document is read per file"));
                }
                continue;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err(mark, format!("nested deeper than {MAX_DEPTH} levels")));
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Open::Seq {
                        line: mark.line(),
                        anchor,
                        items: Vec::new(),
                    },
                    _ => Open::Map {
                        line: mark.line(),
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    },
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Open::Seq {
                        line,
                        anchor,
                        items,
                    }) => (
                        Node {
                            line,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Open::Map {
                        line,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            line,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return Err(err(mark, "unbalanced document")),
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::Scalar(text, style, anchor, _) => {
                let node = Node {
                    line: mark.line(),
                    value: Value::Scalar {
                        text,
                        quoted: style != TScalarStyle::Plain,
                    },
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(err(mark, "alias to an unknown anchor"));
                };
                nodes += count(target);
                if nodes > MAX_NODES {
                    return Err(err(mark, format!("more than {MAX_NODES} nodes")));
                }
                Node {
                    line: mark.line(),
                    value: target.value.clone(),
                }
            }
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(err(mark, format!("more than {MAX_NODES} nodes")));
        }
        // Attach the finished node to its parent, or make it the document.
        match stack.last_mut() {
            Some(Open::Seq { items, .. }) => items.push(done),
            Some(Open::Map { entries, key, .. }) => match key.take() {
                None => {
                    if !matches!(done.value, Value::Scalar { .. }) {
                        return Err(err(mark, "a mapping key must be a plain value"));
                    }
                    if entries.iter().any(|(k, _)| k.scalar() == done.scalar()) {
                        return Err(YamlError {
                            line: done.line,
                            message: format!(
                                "key {:?} appears twice in the same mapping",
                                done.scalar().unwrap_or_default()
                            ),
                        });
                    }
                    *key = Some(done);
                }
                Some(k) => entries.push((k, done)),
            },
            None => root = Some(done),
        }
    }
    Ok(root.unwrap_or(Node {
        line: 1,
        value: Value::Map(Vec::new()),
    }))
}

/// Nodes in a tree, bounded walk (the tree itself was built within the budget).
fn count(n: &Node) -> usize {
    let mut total = 0;
    let mut todo = vec![n];
    while let Some(n) = todo.pop() {
        total += 1;
        match &n.value {
            Value::Scalar { .. } => {}
            Value::Seq(items) => todo.extend(items),
            Value::Map(entries) => {
                for (k, v) in entries {
                    todo.push(k);
                    todo.push(v);
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(line: usize, text: &str) -> Node {
        Node {
            line,
            value: Value::Scalar {
                text: text.into(),
                quoted: false,
            },
        }
    }

    #[test]
    fn lines_follow_the_text() {
        let doc = parse("a: 1\nb:\n  - x\n  - \"8080\"\nc: {d: e}\n").unwrap();
        let Value::Map(entries) = doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0], (scalar(1, "a"), scalar(1, "1")));
        assert_eq!(entries[1].0, scalar(2, "b"));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[0], scalar(3, "x"));
        assert_eq!(
            items[1].value,
            Value::Scalar {
                text: "8080".into(),
                quoted: true
            }
        );
        assert_eq!(items[1].line, 4);
        assert_eq!(entries[2].1.line, 5);
    }

    #[test]
    fn empty_documents_are_empty_mappings() {
        for text in ["", "\n", "# only a comment\n", "---\n"] {
            let doc = parse(text).unwrap();
            assert!(
                doc.value == Value::Map(Vec::new()) || doc.is_null(),
                "{text:?}: {doc:?}"
            );
        }
    }

    #[test]
    fn refusals_name_the_line() {
        let cases = [
            ("a: 1\na: 2\n", 2, "appears twice"),
            ("a: [1, 2\n", 2, ""),
            ("a: 1\n---\nb: 2\n", 2, "one YAML document"),
            ("a: *nope\n", 1, "unknown anchor"),
            ("? [1]\n: x\n", 1, "plain value"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.message.contains(msg), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn nesting_and_alias_bombs_are_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        // Each level doubles the previous one: 2^30 nodes if expanded without a budget.
        let mut bomb = String::from("a0: &a0 [x, x]\n");
        for i in 1..30 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("nodes"));
        // Aliases within the budget are expanded.
        let doc = parse("x: &p {port: 1}\ny: *p\n").unwrap();
        let Value::Map(e) = doc.value else { panic!() };
        assert_eq!(e[0].1.value, e[1].1.value);
    }
}
