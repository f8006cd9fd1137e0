//! Where each key and value of a YAML document is, by key path.
//!
//! serde_yaml parses values but forgets positions; this module walks the
//! same text with yaml-rust2's marked event stream and records, for every
//! key path, the position of the key (for mapping entries) and of the value.
//! Problems found later on the parsed value are then pointed at the line and
//! column a person would look at.

use std::collections::HashMap;

use ft_core::problem::{KeyPath, Location, Seg};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Positions of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePos {
    /// The mapping key's position, for mapping entries.
    pub key: Option<Location>,
    /// The value's position.
    pub value: Location,
}

/// Key path → positions, for one YAML document.
#[derive(Debug, Clone, Default)]
pub struct LocationMap {
    nodes: HashMap<KeyPath, NodePos>,
}

impl LocationMap {
    /// Builds the map for `text`. A text that does not parse gives an empty
    /// map (the syntax error itself is reported by serde_yaml, with its
    /// position).
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Self::default();
        }
        Self {
            nodes: walker.nodes,
        }
    }

    /// Positions recorded for exactly `path`.
    pub fn get(&self, path: &KeyPath) -> Option<NodePos> {
        self.nodes.get(path).copied()
    }

    /// The best position for a problem at `path`: the key of the entry
    /// itself when it exists, otherwise the nearest ancestor's.
    pub fn locate(&self, path: &KeyPath) -> Option<Location> {
        let mut p = path.clone();
        loop {
            if let Some(pos) = self.nodes.get(&p) {
                return Some(pos.key.unwrap_or(pos.value));
            }
            if p.is_root() {
                return None;
            }
            p = p.parent();
        }
    }
}

fn loc(m: Marker) -> Location {
    // yaml-rust2 lines are 1-based and columns 0-based.
    Location {
        line: m.line(),
        column: m.col() + 1,
    }
}

enum Frame {
    Map {
        path: KeyPath,
        key: Option<(String, Marker)>,
        /// Whether the first key has been seen.
        seen_key: bool,
        /// Nested collection used as a key (rare); its events are skipped.
        complex_key_depth: usize,
    },
    Seq {
        path: KeyPath,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    nodes: HashMap<KeyPath, NodePos>,
    started: bool,
}

impl Walker {
    /// The path and key position the next value gets, advancing the parent.
    fn next_value_path(&mut self) -> Option<(KeyPath, Option<Marker>)> {
        match self.stack.last_mut() {
            None => {
                if self.started {
                    None
                } else {
                    self.started = true;
                    Some((KeyPath::root(), None))
                }
            }
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                Some((p, None))
            }
            Some(Frame::Map { path, key, .. }) => {
                let (k, m) = key.take()?;
                Some((
                    KeyPath(path.0.iter().cloned().chain([Seg::Key(k)]).collect()),
                    Some(m),
                ))
            }
        }
    }

    /// True when the next scalar is a mapping key.
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn in_complex_key(&mut self) -> Option<&mut usize> {
        match self.stack.last_mut() {
            Some(Frame::Map {
                complex_key_depth, ..
            }) if *complex_key_depth > 0 => Some(complex_key_depth),
            _ => None,
        }
    }

    /// A block mapping's start event is marked after its first key; point
    /// the mapping itself at that first key, where a reader looks.
    fn first_key_marks_mapping(&mut self, mark: Marker) {
        if let Some(Frame::Map { path, seen_key, .. }) = self.stack.last_mut()
            && !*seen_key
        {
            *seen_key = true;
            if let Some(node) = self.nodes.get_mut(path) {
                node.value = loc(mark);
            }
        }
    }

    fn record(&mut self, path: KeyPath, key: Option<Marker>, value: Marker) {
        self.nodes.insert(
            path,
            NodePos {
                key: key.map(loc),
                value: loc(value),
            },
        );
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if let Some(depth) = self.in_complex_key() {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    *depth -= 1;
                    if *depth == 0
                        && let Some(Frame::Map { key, .. }) = self.stack.last_mut()
                    {
                        *key = Some(("?".into(), mark));
                    }
                }
                _ => {}
            }
            return;
        }
        match ev {
            Event::Scalar(s, ..) => {
                if self.expecting_key() {
                    self.first_key_marks_mapping(mark);
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some((s, mark));
                    }
                } else if let Some((p, k)) = self.next_value_path() {
                    self.record(p, k, mark);
                }
            }
            Event::Alias(_) => {
                if self.expecting_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(("*alias".into(), mark));
                    }
                } else if let Some((p, k)) = self.next_value_path() {
                    self.record(p, k, mark);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.expecting_key() {
                    if let Some(Frame::Map {
                        complex_key_depth, ..
                    }) = self.stack.last_mut()
                    {
                        *complex_key_depth = 1;
                    }
                    return;
                }
                let Some((p, k)) = self.next_value_path() else {
                    return;
                };
                self.record(p.clone(), k, mark);
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        path: p,
                        key: None,
                        seen_key: false,
                        complex_key_depth: 0,
                    }
                } else {
                    Frame::Seq { path: p, next: 0 }
                });
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
    fn keys_values_and_items_are_located() {
        let text = "model:\n  base_model: x\ndata:\n  datasets:\n    - path: a.jsonl\n      type: alpaca\n    - {path: b, type: completion}\n";
        let m = LocationMap::build(text);
        let at = |p: KeyPath| m.get(&p).unwrap();
        let bm = at(KeyPath::keys(&["model", "base_model"]));
        assert_eq!(bm.key, Some(Location { line: 2, column: 3 }));
        assert_eq!(
            bm.value,
            Location {
                line: 2,
                column: 15
            }
        );
        let t = at(KeyPath::keys(&["data", "datasets"]).index(0).key("type"));
        assert_eq!(t.key, Some(Location { line: 6, column: 7 }));
        let p1 = at(KeyPath::keys(&["data", "datasets"]).index(1).key("path"));
        assert_eq!(p1.key, Some(Location { line: 7, column: 8 }));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(
            m.locate(&KeyPath::keys(&["model", "nope"])),
            Some(Location { line: 1, column: 1 })
        );
        // A mapping (here the root and a list item) is located at its first key.
        assert_eq!(
            m.get(&KeyPath::root()).unwrap().value,
            Location { line: 1, column: 1 }
        );
        let item = m
            .get(&KeyPath::keys(&["data", "datasets"]).index(0))
            .unwrap();
        assert_eq!(item.value, Location { line: 5, column: 7 });
    }
}
