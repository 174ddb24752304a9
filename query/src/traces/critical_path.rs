//! The critical path: the chain of spans that decides a trace's end-to-end
//! latency.
//!
//! Walk back from the end of a span: at each point the child that finished
//! last before it (a child still running at that point counts as finishing
//! there, so overlapping children are accounted for) owns the time back to its
//! start; the gaps belong to the span itself (its self time). Children are
//! clipped to their parent's window, so clock skew between functions cannot
//! stretch the path beyond the parent. Several roots hang under a virtual
//! span covering the whole trace; its gaps are time no stored span accounts
//! for. Each span is walked once, with a sorted sweep (O(k log k) for k
//! children), and without recursion.

use super::assemble::TraceTree;

/// A stretch of the path owned by one span (`None`: no span, a gap between roots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub span: Option<usize>,
    pub start_us: i64,
    pub end_us: i64,
}

/// One span on the critical path and the time it owns there.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSpan {
    pub span: usize,
    pub self_time_us: i64,
    /// Start of its first segment (the path is in this order).
    pub first_us: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CriticalPath {
    /// Segments in time order; together they cover the trace exactly once.
    pub segments: Vec<Segment>,
    /// Spans on the path, in the order the path reaches them.
    pub spans: Vec<PathSpan>,
}

impl CriticalPath {
    pub fn contains(&self, span: usize) -> bool {
        self.spans.iter().any(|p| p.span == span)
    }
}

/// Walks one node's window and returns the children it hands time to, with
/// their windows; pushes the node's own gaps to `segments`.
fn walk(
    owner: Option<usize>,
    lo: i64,
    hi: i64,
    children: &[usize],
    tree: &TraceTree,
    segments: &mut Vec<Segment>,
) -> Vec<(usize, i64, i64)> {
    // Children clipped to the window, sorted by clipped start.
    let mut clipped: Vec<(i64, i64, usize)> = children
        .iter()
        .filter_map(|&c| {
            let s = &tree.spans[c];
            let (cs, ce) = (s.start_us.max(lo), s.end_us.min(hi));
            (ce > cs).then_some((cs, ce, c))
        })
        .collect();
    clipped.sort_unstable();
    // prefix_best[i]: index (into `clipped`) of the latest end among clipped[..=i].
    let mut prefix_best: Vec<usize> = Vec::with_capacity(clipped.len());
    for (i, c) in clipped.iter().enumerate() {
        let best = match prefix_best.last() {
            Some(&b) if clipped[b].1 >= c.1 => b,
            _ => i,
        };
        prefix_best.push(best);
    }
    let mut handed = Vec::new();
    let mut cursor = hi;
    // Number of children that start before the cursor.
    let mut count = clipped.len();
    loop {
        while count > 0 && clipped[count - 1].0 >= cursor {
            count -= 1;
        }
        if count == 0 {
            break;
        }
        let (cs, ce, c) = clipped[prefix_best[count - 1]];
        let end = ce.min(cursor);
        if end < cursor {
            segments.push(Segment {
                span: owner,
                start_us: end,
                end_us: cursor,
            });
        }
        handed.push((c, cs, end));
        cursor = cs;
    }
    if lo < cursor {
        segments.push(Segment {
            span: owner,
            start_us: lo,
            end_us: cursor,
        });
    }
    handed
}

/// The critical path of an assembled trace.
pub fn critical_path(tree: &TraceTree) -> CriticalPath {
    let (start, end) = tree.bounds();
    let mut segments = Vec::new();
    let mut stack = walk(None, start, end, &tree.roots, tree, &mut segments);
    while let Some((span, lo, hi)) = stack.pop() {
        let handed = walk(
            Some(span),
            lo,
            hi,
            &tree.children[span],
            tree,
            &mut segments,
        );
        stack.extend(handed);
    }
    // Zero-length traces (one instant span) still have their root on the path.
    if segments.is_empty() {
        let root = tree.main_root();
        segments.push(Segment {
            span: Some(root),
            start_us: tree.spans[root].start_us,
            end_us: tree.spans[root].end_us,
        });
    }
    segments.sort_by_key(|s| (s.start_us, s.end_us));
    let mut spans: Vec<PathSpan> = Vec::new();
    let mut slot: Vec<Option<usize>> = vec![None; tree.spans.len()];
    for seg in &segments {
        let Some(span) = seg.span else { continue };
        match slot[span] {
            Some(k) => spans[k].self_time_us += seg.end_us - seg.start_us,
            None => {
                slot[span] = Some(spans.len());
                spans.push(PathSpan {
                    span,
                    self_time_us: seg.end_us - seg.start_us,
                    first_us: seg.start_us,
                });
            }
        }
    }
    // Path order: the tree's pre-order (parents before children, siblings by
    // start), so the list reads from the entry point down the call chain
    // even when a parent's own time comes only after its child's.
    let order = preorder(tree);
    spans.sort_by_key(|p| order[p.span]);
    CriticalPath { segments, spans }
}

/// Position of each span in a pre-order walk of the tree.
fn preorder(tree: &TraceTree) -> Vec<usize> {
    let mut order = vec![usize::MAX; tree.spans.len()];
    let mut stack: Vec<usize> = tree.roots.iter().rev().copied().collect();
    let mut next = 0;
    while let Some(i) = stack.pop() {
        order[i] = next;
        next += 1;
        stack.extend(tree.children[i].iter().rev());
    }
    order
}
