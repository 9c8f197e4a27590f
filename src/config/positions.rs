//! Line and column of every node of a YAML document by its path (`routes[2].mtls.trust`),
//! so problems found after deserialization still point at the right line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub struct Positions {
    by_path: HashMap<String, (usize, usize)>,
}

impl Positions {
    /// Never fails: a document the indexer cannot read yields no positions, and serde
    /// reports the syntax error itself.
    pub fn index(text: &str) -> Positions {
        let mut indexer = Indexer::default();
        let _ = Parser::new_from_str(text).load(&mut indexer, false);
        Positions {
            by_path: indexer.by_path,
        }
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.by_path.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        awaiting_key: bool,
        /// The mapping's own path, placed at its first key: yaml-rust2 marks the start of a
        /// block mapping after that key.
        unplaced: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Indexer {
    stack: Vec<Frame>,
    by_path: HashMap<String, (usize, usize)>,
}

impl Indexer {
    fn record(&mut self, path: &str, mark: Marker) {
        // yaml-rust2 counts lines from 1 and columns from 0
        self.by_path
            .entry(path.to_string())
            .or_insert((mark.line(), mark.col() + 1));
    }

    /// Path of the node starting here, or `None` when it is a mapping key.
    fn begin_node(&mut self, mark: Marker, scalar: Option<&str>, defer: bool) -> Option<String> {
        let (path, is_key) = match self.stack.last_mut() {
            None => (String::new(), false),
            Some(Frame::Map {
                path,
                key,
                awaiting_key,
                unplaced,
            }) => {
                if let Some(own) = unplaced.take() {
                    self.by_path.entry(own).or_insert((mark.line(), mark.col() + 1));
                }
                if *awaiting_key {
                    let name = scalar.unwrap_or("?");
                    let full = if path.is_empty() {
                        name.to_string()
                    } else {
                        format!("{path}.{name}")
                    };
                    *key = Some(full.clone());
                    *awaiting_key = false;
                    (full, true)
                } else {
                    *awaiting_key = true;
                    (key.take().unwrap_or_else(|| "?".to_string()), false)
                }
            }
            Some(Frame::Seq { path, next }) => {
                let full = format!("{path}[{next}]");
                *next += 1;
                (full, false)
            }
        };
        if !defer {
            self.record(&path, mark);
        }
        (!is_key).then_some(path)
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                self.begin_node(mark, Some(&value), false);
            }
            Event::Alias(_) => {
                self.begin_node(mark, None, false);
            }
            Event::MappingStart(..) => {
                let path = self.begin_node(mark, None, true).unwrap_or_else(|| "?".to_string());
                let unplaced = Some(path.clone());
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    awaiting_key: true,
                    unplaced,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.begin_node(mark, None, false).unwrap_or_else(|| "?".to_string());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_point_at_their_lines() {
        let text = "\
routes:
  - name: a
    mtls:
      mode: audit
      allow:
        - uri: spiffe://x/y
  - name: b
trust_bundles:
  internal-ca:
    ca: root.pem
";
        let p = Positions::index(text);
        assert_eq!(p.locate("routes[0].mtls.mode"), (4, 7));
        assert_eq!(p.locate("routes[0].mtls.allow[0]"), (6, 11));
        assert_eq!(p.locate("routes[0].mtls.allow[0].uri"), (6, 11));
        assert_eq!(p.locate("routes[1].name"), (7, 5));
        assert_eq!(p.locate("routes[1].upstream.address"), (7, 5));
        assert_eq!(p.locate("trust_bundles.internal-ca.ca"), (10, 5));
    }

    #[test]
    fn broken_yaml_yields_no_panic() {
        let p = Positions::index("a: [unclosed\n  b: {");
        let _ = p.locate("a");
    }
}
