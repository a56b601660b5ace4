//! Flush planning: turn a set of row changes into ordered, batched steps.
//!
//! Each change is one row of one mapper: an INSERT, UPDATE or DELETE with the set of columns it
//! writes. Rows of the same (mapper, operation, column set) form one batch, whatever order they
//! were added in. Mappers are visited in dependency order (referenced tables first): for each,
//! its UPDATE batches and then its INSERT batches; DELETE batches follow, mappers in reverse
//! order, so rows are deleted before the rows they reference. Within a batch, rows keep the
//! order in which they were handed in, and batches of one step keep the order of their first
//! row: the same session state always yields the same statements in the same order.

use indexmap::IndexMap;
use smallvec::SmallVec;

use crate::engine::error::{CoreError, CoreResult};
use crate::engine::topo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Update,
    Insert,
    Delete,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// Column indexes, ascending.
pub type ColSet = SmallVec<[u16; 8]>;

#[derive(Clone, Debug)]
pub struct Change {
    pub mapper: u32,
    pub op: Op,
    pub cols: ColSet,
    /// The caller's index for this row (into its own list of objects).
    pub item: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub mapper: u32,
    pub op: Op,
    pub cols: ColSet,
    pub items: Vec<usize>,
    /// Why this step stands where it does (a dependency that forced it), for `flush_plan()`.
    pub reason: Option<String>,
}

/// Mapper-level dependencies: `(a, b)` means rows of `a` must be inserted before rows of `b`.
#[derive(Clone, Debug, Default)]
pub struct MapperGraph {
    /// Mapper ids in registration order.
    pub mappers: Vec<u32>,
    pub edges: Vec<(u32, u32)>,
    /// Human-readable reason per edge, parallel to `edges`.
    pub edge_reasons: Vec<String>,
}

impl MapperGraph {
    /// Mapper ids ordered so that referenced mappers come first.
    ///
    /// Self-references are left to row ordering and do not count here.
    pub fn order(&self) -> CoreResult<Vec<u32>> {
        self.order_of(&self.mappers)
    }

    /// Order only `involved` mappers (a subset, in registration order) by the edges among them.
    pub fn order_of(&self, involved: &[u32]) -> CoreResult<Vec<u32>> {
        let index: ahash::AHashMap<u32, usize> =
            involved.iter().enumerate().map(|(i, m)| (*m, i)).collect();
        let edges: Vec<(usize, usize)> = self
            .edges
            .iter()
            .filter(|(a, b)| a != b)
            .filter_map(|(a, b)| Some((*index.get(a)?, *index.get(b)?)))
            .collect();
        match topo::sort(involved.len(), &edges) {
            Ok(order) => Ok(order.into_iter().map(|i| involved[i]).collect()),
            Err(cycle) => {
                let ids: Vec<String> = cycle.iter().map(|i| involved[*i].to_string()).collect();
                Err(CoreError::Cycle(format!(
                    "mappers {} depend on each other in a cycle",
                    ids.join(" -> ")
                )))
            }
        }
    }

    fn reason_for(&self, mapper: u32, op: Op) -> Option<String> {
        // The first dependency that forced this mapper after (or, for deletes, before) another.
        let pos = match op {
            Op::Delete => self.edges.iter().position(|(a, b)| *a == mapper && a != b),
            _ => self.edges.iter().position(|(a, b)| *b == mapper && a != b),
        }?;
        Some(self.edge_reasons[pos].clone())
    }
}

/// Group changes into ordered batches.
pub fn plan(changes: &[Change], graph: &MapperGraph) -> CoreResult<Vec<Batch>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let mut involved: Vec<u32> = changes.iter().map(|c| c.mapper).collect();
    involved.sort_unstable();
    involved.dedup();
    // Registration order among the involved mappers keeps ties stable.
    let involved: Vec<u32> = graph
        .mappers
        .iter()
        .copied()
        .filter(|m| involved.binary_search(m).is_ok())
        .collect();
    let order = graph.order_of(&involved)?;
    let mut groups: IndexMap<(u32, Op, ColSet), Vec<usize>, ahash::RandomState> =
        IndexMap::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4));
    for c in changes {
        groups
            .entry((c.mapper, c.op, c.cols.clone()))
            .or_default()
            .push(c.item);
    }
    let mut steps = Vec::with_capacity(groups.len());
    let take = |mapper: u32, op: Op, steps: &mut Vec<Batch>| {
        for ((m, o, cols), items) in groups.iter() {
            if *m == mapper && *o == op {
                steps.push(Batch {
                    mapper,
                    op,
                    cols: cols.clone(),
                    items: items.clone(),
                    reason: graph.reason_for(mapper, op),
                });
            }
        }
    };
    // A mapper's deletes go before its own saves when nothing else in this flush depends on
    // it: a DELETE then frees unique values (keys, unique columns) for the INSERT or UPDATE that
    // takes them. When another mapper of the flush references it, its rows may still be needed
    // until that mapper's saves are done, so its deletes wait for the end as usual.
    let has = |m: u32, op: Op| changes.iter().any(|c| c.mapper == m && c.op == op);
    let early: Vec<u32> = order
        .iter()
        .copied()
        .filter(|&m| {
            has(m, Op::Delete)
                && (has(m, Op::Insert) || has(m, Op::Update))
                && !graph
                    .edges
                    .iter()
                    .any(|&(a, b)| a == m && b != m && involved.contains(&b))
        })
        .collect();
    for &m in &order {
        if early.contains(&m) {
            let first = steps.len();
            take(m, Op::Delete, &mut steps);
            for step in &mut steps[first..] {
                step.reason = Some(
                    "deletes run before this table's inserts and updates, freeing unique values"
                        .into(),
                );
            }
        }
        take(m, Op::Update, &mut steps);
        take(m, Op::Insert, &mut steps);
    }
    for &m in order.iter().rev() {
        if !early.contains(&m) {
            take(m, Op::Delete, &mut steps);
        }
    }
    if steps.iter().map(|b| b.items.len()).sum::<usize>() != changes.len() {
        return Err(CoreError::Flush(
            "a change names a mapper that is not registered with the session core".into(),
        ));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smallvec::smallvec;

    fn graph(n: u32, edges: &[(u32, u32)]) -> MapperGraph {
        MapperGraph {
            mappers: (0..n).collect(),
            edges: edges.to_vec(),
            edge_reasons: edges
                .iter()
                .map(|(a, b)| format!("{b} references {a}"))
                .collect(),
        }
    }

    fn change(mapper: u32, op: Op, cols: &[u16], item: usize) -> Change {
        Change {
            mapper,
            op,
            cols: cols.iter().copied().collect(),
            item,
        }
    }

    #[test]
    fn interleaved_adds_batch_by_table_and_column_set() {
        // mapper 1 (child) references mapper 0 (parent)
        let g = graph(2, &[(0, 1)]);
        let changes = vec![
            change(1, Op::Insert, &[0, 1], 0),
            change(0, Op::Insert, &[0], 1),
            change(1, Op::Insert, &[0, 1], 2),
            change(0, Op::Insert, &[0], 3),
            change(1, Op::Delete, &[0], 4),
            change(0, Op::Delete, &[0], 5),
            change(0, Op::Update, &[1], 6),
        ];
        let steps = plan(&changes, &g).unwrap();
        let summary: Vec<(u32, Op, Vec<usize>)> = steps
            .iter()
            .map(|b| (b.mapper, b.op, b.items.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, Op::Update, vec![6]),
                (0, Op::Insert, vec![1, 3]),
                // nothing references mapper 1: its delete frees unique values first
                (1, Op::Delete, vec![4]),
                (1, Op::Insert, vec![0, 2]),
                (0, Op::Delete, vec![5]),
            ]
        );
        assert_eq!(steps[3].reason.as_deref(), Some("1 references 0"));
        let cols: ColSet = smallvec![0, 1];
        assert_eq!(steps[3].cols, cols);
    }

    #[test]
    fn different_column_sets_are_separate_batches() {
        let g = graph(1, &[]);
        let steps = plan(
            &[
                change(0, Op::Update, &[1], 0),
                change(0, Op::Update, &[2], 1),
                change(0, Op::Update, &[1], 2),
            ],
            &g,
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].items, vec![0, 2]);
        assert_eq!(steps[1].items, vec![1]);
    }

    #[test]
    fn only_involved_mappers_are_ordered() {
        // 0 <-> 1 form a cycle, but a flush touching only mapper 2 must not care.
        let g = graph(3, &[(0, 1), (1, 0), (0, 2)]);
        let steps = plan(&[change(2, Op::Insert, &[0], 0)], &g).unwrap();
        assert_eq!(steps.len(), 1);
    }

    #[test]
    fn mapper_cycle_is_an_error() {
        let g = graph(2, &[(0, 1), (1, 0)]);
        let err = plan(
            &[
                change(0, Op::Insert, &[0], 0),
                change(1, Op::Insert, &[0], 1),
            ],
            &g,
        )
        .unwrap_err();
        assert!(matches!(err, CoreError::Cycle(_)));
    }

    proptest! {
        #[test]
        fn dependencies_hold_and_every_change_appears_once(
            n in 1u32..6,
            raw_edges in proptest::collection::vec((0u32..6, 0u32..6), 0..8),
            raw in proptest::collection::vec((0u32..6, 0u8..3, 0u16..3), 0..40),
        ) {
            // Only edges from lower to higher ids: acyclic.
            let edges: Vec<(u32, u32)> = raw_edges.into_iter()
                .map(|(a, b)| (a % n, b % n)).filter(|(a, b)| a < b).collect();
            let g = graph(n, &edges);
            let changes: Vec<Change> = raw.iter().enumerate().map(|(i, (m, op, c))| {
                let op = [Op::Insert, Op::Update, Op::Delete][*op as usize];
                change(m % n, op, &[*c], i)
            }).collect();
            let steps = plan(&changes, &g).unwrap();
            let mut seen: Vec<usize> = steps.iter().flat_map(|b| b.items.clone()).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..changes.len()).collect::<Vec<_>>());
            let step_of = |item: usize| steps.iter().position(|b| b.items.contains(&item)).unwrap();
            for (a, b) in &edges {
                for ca in changes.iter().filter(|c| c.mapper == *a) {
                    for cb in changes.iter().filter(|c| c.mapper == *b) {
                        let (sa, sb) = (step_of(ca.item), step_of(cb.item));
                        if ca.op != Op::Delete && cb.op != Op::Delete {
                            prop_assert!(sa < sb, "parent save before child save");
                        }
                        if ca.op == Op::Delete && cb.op == Op::Delete {
                            prop_assert!(sb < sa, "child delete before parent delete");
                        }
                    }
                }
            }
            let again = plan(&changes, &g).unwrap();
            prop_assert_eq!(again, steps);
        }
    }
}
#[cfg(test)]
mod subset_tests {
    use super::*;

    #[test]
    fn a_lone_table_deletes_before_it_inserts() {
        let g = MapperGraph {
            mappers: vec![1, 2],
            edges: vec![(1, 2)],
            edge_reasons: vec!["2 references 1".into()],
        };
        let ch = |m, op, item| Change {
            mapper: m,
            op,
            cols: [0u16].into_iter().collect(),
            item,
        };
        // Only mapper 2 (the child) is touched: its delete frees the unique value first.
        let steps = plan(&[ch(2, Op::Insert, 0), ch(2, Op::Delete, 1)], &g).unwrap();
        assert_eq!(steps[0].op, Op::Delete);
        assert_eq!(steps[1].op, Op::Insert);
        // Mapper 1 is referenced by mapper 2, which has changes: its delete waits.
        let steps = plan(
            &[
                ch(1, Op::Insert, 0),
                ch(1, Op::Delete, 1),
                ch(2, Op::Insert, 2),
            ],
            &g,
        )
        .unwrap();
        let ops: Vec<(u32, Op)> = steps.iter().map(|b| (b.mapper, b.op)).collect();
        assert_eq!(ops, vec![(1, Op::Insert), (2, Op::Insert), (1, Op::Delete)]);
    }

    /// A parent registered after its child, among other unrelated mappers, still goes first.
    #[test]
    fn later_registered_parent_goes_first() {
        let g = MapperGraph {
            mappers: vec![1, 2, 3, 4, 5],
            edges: vec![(5, 4)],
            edge_reasons: vec!["r".into()],
        };
        let ch = |m, item| Change {
            mapper: m,
            op: Op::Insert,
            cols: [0u16].into_iter().collect(),
            item,
        };
        let steps = plan(&[ch(4, 0), ch(4, 1), ch(5, 2), ch(5, 3)], &g).unwrap();
        assert_eq!(steps[0].mapper, 5, "{steps:?}");
    }
}
