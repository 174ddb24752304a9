//! Trace assembly: the spans of one trace id into a tree.
//!
//! Spans arrive from many functions, late, twice, or never. The tree is built
//! from whatever is stored: duplicates (same span id) are dropped, a span whose
//! parent is missing is an *orphan* and hangs under the main root with a flag,
//! several parentless spans are several roots (the earliest, then longest, is
//! the main one), and parent cycles in hostile data are broken the same way as
//! missing parents. No recursion: a chain of any depth is safe.

use std::collections::HashMap;

use super::SpanRecord;

/// Why a span sits where it does in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Under its own parent.
    Child,
    /// Has no parent: a root of the trace.
    Root,
    /// Its parent is not stored (or lies in a cycle); attached to the main root.
    Orphan,
}

/// An assembled trace: spans plus the tree over them (indices into `spans`).
#[derive(Debug, Clone)]
pub struct TraceTree {
    pub spans: Vec<SpanRecord>,
    /// Roots, main root first, then by start time.
    pub roots: Vec<usize>,
    /// Children of each span, by start time (orphans included under the main root).
    pub children: Vec<Vec<usize>>,
    pub placement: Vec<Placement>,
}

impl TraceTree {
    /// Builds the tree; `None` when there are no spans.
    pub fn assemble(mut spans: Vec<SpanRecord>) -> Option<TraceTree> {
        if spans.is_empty() {
            return None;
        }
        // Stable order: by start, then longest first, then id (duplicates keep the first).
        spans.sort_by(|a, b| {
            a.start_us
                .cmp(&b.start_us)
                .then(b.end_us.cmp(&a.end_us))
                .then(a.span_id.cmp(&b.span_id))
        });
        let mut seen = std::collections::HashSet::new();
        spans.retain(|s| seen.insert(s.span_id.clone()));

        let index: HashMap<&str, usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id.as_str(), i))
            .collect();
        let n = spans.len();
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut placement = vec![Placement::Root; n];
        for (i, s) in spans.iter().enumerate() {
            match s.parent_span_id.as_deref() {
                None => {}
                Some(p) => match index.get(p) {
                    Some(&j) if j != i => {
                        parent[i] = Some(j);
                        placement[i] = Placement::Child;
                    }
                    _ => placement[i] = Placement::Orphan,
                },
            }
        }
        // Spans whose parent chain never reaches a root or orphan lie in a
        // cycle: cut each cycle at its earliest span (lowest index).
        let mut state = vec![0u8; n]; // 0 unknown, 1 on the current walk, 2 settled
        for start in 0..n {
            let mut walk = Vec::new();
            let mut i = start;
            loop {
                if state[i] == 2 {
                    break;
                }
                if state[i] == 1 {
                    // A cycle: from i around to i again within `walk`.
                    let pos = walk.iter().position(|&w| w == i).unwrap_or(0);
                    let cut = walk[pos..].iter().copied().min().unwrap_or(i);
                    parent[cut] = None;
                    placement[cut] = Placement::Orphan;
                    break;
                }
                state[i] = 1;
                walk.push(i);
                match parent[i] {
                    Some(p) => i = p,
                    None => break,
                }
            }
            for w in walk {
                state[w] = 2;
            }
        }

        let mut roots: Vec<usize> = (0..n)
            .filter(|&i| placement[i] == Placement::Root)
            .collect();
        let orphans: Vec<usize> = (0..n)
            .filter(|&i| placement[i] == Placement::Orphan)
            .collect();
        // With no true root, the earliest orphan stands in (keeping its flag).
        let main = match roots.first() {
            Some(&r) => r,
            None => {
                let r = orphans[0];
                roots.push(r);
                r
            }
        };
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[*p].push(i);
            }
        }
        for &o in &orphans {
            if o != main {
                children[main].push(o);
            }
        }
        // Indices follow start order, so sorting indices sorts by start.
        for c in &mut children {
            c.sort_unstable();
        }
        Some(TraceTree {
            spans,
            roots,
            children,
            placement,
        })
    }

    pub fn main_root(&self) -> usize {
        self.roots[0]
    }

    /// Start and end of the whole trace (µs).
    pub fn bounds(&self) -> (i64, i64) {
        let start = self.spans.iter().map(|s| s.start_us).min().unwrap_or(0);
        let end = self.spans.iter().map(|s| s.end_us).max().unwrap_or(start);
        (start, end)
    }

    pub fn duration_ms(&self) -> f64 {
        let (s, e) = self.bounds();
        (e - s) as f64 / 1000.0
    }

    /// The span with this id.
    pub fn find(&self, span_id: &str) -> Option<usize> {
        self.spans.iter().position(|s| s.span_id == span_id)
    }
}
