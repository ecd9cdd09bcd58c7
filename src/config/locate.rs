//! Where each value of a YAML document stands, so every configuration problem can name its line.
//!
//! serde (and so `serde_yaml`) forgets positions once a value is deserialized, and reports only
//! the first error. We therefore walk the document's events once with a small YAML parser and
//! remember the position of every key and value by its field path (`endpoints[2].port`). The
//! validator looks problems up here by path.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Positions of keys and values by field path.
#[derive(Debug, Default)]
pub struct Locator {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl Locator {
    /// Index `text`. A document that does not parse yields an empty index (the YAML error itself
    /// is reported by the deserializer, with its position).
    pub fn new(text: &str) -> Locator {
        let mut loc = Locator::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut() {
                        if key.is_none() {
                            let p = join(path, &value);
                            loc.keys.insert(p, pos);
                            *key = Some(value.into_owned());
                            continue;
                        }
                    }
                    let p = current_value_path(&mut stack);
                    loc.values.entry(p).or_insert(pos);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) | Event::Alias(..) => {
                    let p = current_value_path(&mut stack);
                    loc.values.entry(p.clone()).or_insert(pos);
                    match event {
                        Event::MappingStart(..) => stack.push(Frame::Map { path: p, key: None }),
                        Event::SequenceStart(..) => stack.push(Frame::Seq { path: p, index: 0 }),
                        _ => {}
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        loc
    }

    /// Position of the value at `path`, else of its key, else of the nearest parent.
    pub fn value(&self, path: &str) -> Option<Pos> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&p).or_else(|| self.keys.get(&p)) {
                return Some(*pos);
            }
            p = parent(&p)?;
        }
    }

    /// Position of the key at `path` (for unknown keys), else of its value.
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }
}

/// The path of the value that the next event starts, advancing the enclosing frame.
fn current_value_path(stack: &mut [Frame]) -> String {
    match stack.last_mut() {
        None => String::new(),
        Some(Frame::Map { path, key }) => match key.take() {
            Some(k) => join(path, &k),
            // a complex (non-scalar) key: not used in our config; give the map's path
            None => path.clone(),
        },
        Some(Frame::Seq { path, index }) => {
            let p = format!("{path}[{index}]");
            *index += 1;
            p
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn parent(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '['])?;
    Some(path[..cut].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_positions() {
        let text = "cloud: worldwide\nendpoints:\n  - name: a\n    port: 1\n  - name: b\n    port: 99999\n";
        let loc = Locator::new(text);
        assert_eq!(
            loc.value("endpoints[1].port"),
            Some(Pos { line: 6, col: 11 })
        );
        assert_eq!(loc.key("endpoints[1].port"), Some(Pos { line: 6, col: 5 }));
        assert_eq!(loc.value("cloud"), Some(Pos { line: 1, col: 8 }));
        // a missing field falls back to its parent
        assert_eq!(loc.value("endpoints[0].host").map(|p| p.line), Some(3));
    }

    #[test]
    fn broken_yaml_gives_empty_index() {
        let loc = Locator::new("a: [\n");
        assert_eq!(loc.value("b"), None);
    }
}
