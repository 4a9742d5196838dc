//! Source positions of YAML nodes by path (`rules[2].detect.zscore.window`), so that errors
//! found after deserialisation still point at `file:line:column`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based line and column.
pub(crate) type Pos = (usize, usize);

/// Positions of every mapping key and sequence item in one YAML document.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    by_path: HashMap<String, Pos>,
}

enum Frame {
    /// `first`: no key seen yet; block mappings are marked at their first key.
    Map {
        path: String,
        key: Option<String>,
        first: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    out: HashMap<String, Pos>,
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

impl Builder {
    /// Registers a node starting at `mark` and returns its path, or None when the node is
    /// a mapping key.
    fn node(&mut self, mark: Marker, scalar: Option<&str>) -> Option<String> {
        let pos = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.out.entry(p.clone()).or_insert(pos);
                Some(p)
            }
            Some(Frame::Map { path, key, first }) => match key.take() {
                None => {
                    if std::mem::take(first) {
                        self.out.insert(path.clone(), pos);
                    }
                    let k = scalar.unwrap_or("?").to_string();
                    let p = join(path, &k);
                    self.out.entry(p).or_insert(pos);
                    *key = Some(k);
                    None
                }
                Some(k) => Some(join(path, &k)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref v, ..) => {
                self.node(mark, Some(v));
            }
            Event::Alias(_) => {
                self.node(mark, None);
            }
            Event::MappingStart(..) => {
                // A block mapping's mark lies after its first key: a sequence item is
                // placed at that key instead.
                let item = matches!(self.stack.last(), Some(Frame::Seq { .. }));
                let path = self.node(mark, None).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    first: item,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node(mark, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locations {
    /// Indexes `src`; a document that does not scan yields an empty index (the YAML
    /// deserialiser reports that error with its own position).
    pub(crate) fn index(src: &str) -> Self {
        let mut b = Builder {
            stack: Vec::new(),
            out: HashMap::new(),
        };
        let mut parser = Parser::new_from_str(src);
        let _ = parser.load(&mut b, false);
        Locations { by_path: b.out }
    }

    /// Position of `path`, or of its closest indexed ancestor.
    pub(crate) fn find(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(&pos) = self.by_path.get(p) {
                return pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (1, 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items() {
        let src = "group: g\ninterval: 10s\nrules:\n  - name: A\n    detect:\n      zscore: { window: 5m }\n  - name: B\n";
        let l = Locations::index(src);
        assert_eq!(l.find("interval"), (2, 1));
        assert_eq!(l.find("rules[0]"), (4, 5));
        assert_eq!(l.find("rules[0].detect.zscore.window"), (6, 17));
        assert_eq!(l.find("rules[1].name"), (7, 5));
        assert_eq!(l.find("rules[1].missing.deeper"), (7, 5));
        assert_eq!(
            l.find("rules[0].detect.zscore"),
            (6, 7),
            "a key whose value is a flow map"
        );
    }
}
