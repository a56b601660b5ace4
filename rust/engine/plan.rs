//! Flush planning: turn a set of row changes into ordered, batched steps.
//!
//! Each change is one row of one mapper: an INSERT, UPDATE or DELETE with the set of columns it
//! writes. Rows of the same (mapper, operation, column set) form one batch, whatever order they
//! were added in. Mappers are visited in dependency order (referenced tables first): for each,
//! its UPDATE batches and then its INSERT batches; DELETE batches follow, mappers in reverse
//! order, so rows are deleted before the rows they reference. Within a batch, rows keep the
//! order in which they were handed in, and batches of one step keep the order of their first
//! row: the same session state always yields the same statements in the same order.
//!
//! Cycles between tables are broken at a foreign key: first at those of `post_update`
//! relationships, then (beyond SQLAlchemy) at any nullable foreign key of the cycle. Rows are
//! then inserted with NULL in that key and a post-update phase sets it once every row exists;
//! before deletes, a pre-delete phase sets it to NULL. A cycle with no nullable key left is an
//! error naming it.

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

/// When a step runs: with the ordinary saves, after every save (setting the foreign keys of
/// broken cycles), or before every delete (clearing them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Phase {
    #[default]
    Main,
    PostUpdate,
    PreDelete,
}

#[derive(Clone, Debug)]
pub struct Change {
    pub mapper: u32,
    pub op: Op,
    pub cols: ColSet,
    /// The caller's index for this row (into its own list of objects).
    pub item: usize,
    pub phase: Phase,
    /// Within one mapper's step, rows of a lower level run first (unique values changing
    /// hands between rows of one table).
    pub level: u32,
    /// An UPDATE pointing its row at a row of the same table that this flush inserts, or
    /// taking a unique value such an UPDATE gives up: it runs after the table's INSERTs (the
    /// others run before them, freeing unique values).
    pub follows_inserts: bool,
    /// A DELETE freeing a unique value that a row of its table takes in this flush, whose row
    /// no row of the flush points at (the caller checks the rows): it runs first in its
    /// table's step, where the others wait for the end.
    pub early: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub mapper: u32,
    pub op: Op,
    pub cols: ColSet,
    pub phase: Phase,
    pub items: Vec<usize>,
    /// Why this step stands where it does (a dependency that forced it), for `flush_plan()`.
    pub reason: Option<String>,
}

/// A foreign key from the `child` mapper's table to the `parent` mapper's table: rows of
/// `parent` must be inserted before the rows of `child` that reference them.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub parent: u32,
    pub child: u32,
    /// The child's foreign-key column indexes.
    pub cols: ColSet,
    /// The parent's column indexes they reference, in the same order (empty if unknown).
    pub refs: ColSet,
    pub nullable: bool,
    /// A relationship along this key asked for `post_update`.
    pub post_update: bool,
    /// Human-readable, for `flush_plan()` and errors.
    pub reason: String,
}

/// Mapper-level dependencies.
#[derive(Clone, Debug, Default)]
pub struct MapperGraph {
    /// Mapper ids in registration order.
    pub mappers: Vec<u32>,
    pub edges: Vec<Edge>,
}

/// The order of a flush's mappers, and the edges broken to get it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ordering {
    pub order: Vec<u32>,
    /// Indexes into `MapperGraph::edges`.
    pub broken: Vec<usize>,
}

/// A cycle of mappers that no nullable foreign key can break.
#[derive(Clone, Debug, PartialEq)]
pub struct Cycle {
    pub mappers: Vec<u32>,
    /// Indexes into `MapperGraph::edges`, along the cycle.
    pub edges: Vec<usize>,
}

impl MapperGraph {
    /// Mapper ids ordered so that referenced mappers come first.
    pub fn order(&self) -> CoreResult<Vec<u32>> {
        self.order_of(&self.mappers)
            .map(|o| o.order)
            .map_err(|c| self.cycle_error(&c))
    }

    pub fn cycle_error(&self, cycle: &Cycle) -> CoreError {
        let parts: Vec<&str> = cycle
            .edges
            .iter()
            .map(|&e| self.edges[e].reason.as_str())
            .collect();
        CoreError::Cycle(format!(
            "tables depend on each other in a cycle of NOT NULL foreign keys: {}",
            parts.join("; ")
        ))
    }

    /// Order only `involved` mappers (a subset, in registration order) by the edges among
    /// them, breaking cycles at post_update edges, then at nullable ones.
    pub fn order_of(&self, involved: &[u32]) -> Result<Ordering, Cycle> {
        let index: ahash::AHashMap<u32, usize> =
            involved.iter().enumerate().map(|(i, m)| (*m, i)).collect();
        let live: Vec<usize> = (0..self.edges.len())
            .filter(|&e| {
                let edge = &self.edges[e];
                edge.parent != edge.child
                    && index.contains_key(&edge.parent)
                    && index.contains_key(&edge.child)
            })
            .collect();
        let mut broken: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&e| self.edges[e].post_update)
            .collect();
        loop {
            let pairs: Vec<(usize, usize)> = live
                .iter()
                .filter(|e| !broken.contains(e))
                .map(|&e| (index[&self.edges[e].parent], index[&self.edges[e].child]))
                .collect();
            match topo::sort(involved.len(), &pairs) {
                Ok(order) => {
                    return Ok(Ordering {
                        order: order.into_iter().map(|i| involved[i]).collect(),
                        broken,
                    })
                }
                Err(cycle) => {
                    let nodes: Vec<u32> = cycle.iter().map(|i| involved[*i]).collect();
                    // the edges along the cycle, first one per consecutive pair
                    let along: Vec<usize> = (0..nodes.len())
                        .filter_map(|k| {
                            let (a, b) = (nodes[k], nodes[(k + 1) % nodes.len()]);
                            live.iter().copied().find(|&e| {
                                !broken.contains(&e)
                                    && self.edges[e].parent == a
                                    && self.edges[e].child == b
                            })
                        })
                        .collect();
                    match along.iter().copied().find(|&e| self.edges[e].nullable) {
                        Some(e) => broken.push(e),
                        None => {
                            return Err(Cycle {
                                mappers: nodes,
                                edges: along,
                            })
                        }
                    }
                }
            }
        }
    }

    fn reason_for(&self, mapper: u32, op: Op, broken: &[usize]) -> Option<String> {
        // The first dependency that forced this mapper after (or, for deletes, before) another.
        let pos = self.edges.iter().enumerate().position(|(i, e)| {
            e.parent != e.child
                && !broken.contains(&i)
                && match op {
                    Op::Delete => e.parent == mapper,
                    _ => e.child == mapper,
                }
        })?;
        Some(self.edges[pos].reason.clone())
    }

    fn broken_reason(&self, mapper: u32, broken: &[usize], phase: Phase) -> Option<String> {
        let e = broken
            .iter()
            .map(|&e| &self.edges[e])
            .find(|e| e.child == mapper)?;
        let how = if e.post_update {
            "post_update"
        } else {
            "cycle broken at a nullable foreign key"
        };
        Some(match phase {
            Phase::PreDelete => format!("{}: set to NULL before deletes ({how})", e.reason),
            _ => format!(
                "{}: set after the rows it references exist ({how})",
                e.reason
            ),
        })
    }
}

/// The mappers of `changes`, in registration order.
pub fn involved_mappers(changes: &[Change], graph: &MapperGraph) -> Vec<u32> {
    let mut ids: Vec<u32> = changes.iter().map(|c| c.mapper).collect();
    ids.sort_unstable();
    ids.dedup();
    graph
        .mappers
        .iter()
        .copied()
        .filter(|m| ids.binary_search(m).is_ok())
        .collect()
}

/// Group changes into ordered batches (ordering the mappers first).
pub fn plan(changes: &[Change], graph: &MapperGraph) -> CoreResult<Vec<Batch>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let involved = involved_mappers(changes, graph);
    let ordering = graph
        .order_of(&involved)
        .map_err(|c| graph.cycle_error(&c))?;
    plan_ordered(changes, graph, &ordering)
}

/// Group changes into batches for a given mapper ordering.
pub fn plan_ordered(
    changes: &[Change],
    graph: &MapperGraph,
    ordering: &Ordering,
) -> CoreResult<Vec<Batch>> {
    let order = &ordering.order;
    let broken = &ordering.broken;
    type GroupKey = (u32, Op, Phase, u32, bool, bool, ColSet);
    let mut groups: IndexMap<GroupKey, Vec<usize>, ahash::RandomState> =
        IndexMap::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4));
    for c in changes {
        groups
            .entry((
                c.mapper,
                c.op,
                c.phase,
                c.level,
                c.follows_inserts,
                c.early,
                c.cols.clone(),
            ))
            .or_default()
            .push(c.item);
    }
    let mut steps = Vec::with_capacity(groups.len());
    // Which groups of a mapper's changes `take` picks: all, or those that go before (after)
    // its inserts.
    #[derive(Clone, Copy, PartialEq)]
    enum Pick {
        All,
        BeforeInserts,
        AfterInserts,
        // deletes marked early, or the others
        Early(bool),
    }
    let take_some = |mapper: u32, op: Op, phase: Phase, pick: Pick, steps: &mut Vec<Batch>| {
        let mut mine: Vec<(&GroupKey, &Vec<usize>)> = groups
            .iter()
            .filter(|((m, o, p, _, follows, early, _), _)| {
                *m == mapper
                    && *o == op
                    && *p == phase
                    && match pick {
                        Pick::All => true,
                        Pick::BeforeInserts => !follows,
                        Pick::AfterInserts => *follows,
                        Pick::Early(wanted) => *early == wanted,
                    }
            })
            .collect();
        mine.sort_by_key(|((_, _, _, level, _, _, _), _)| *level); // stable: first-appearance ties
        for ((_, _, _, level, follows, _, cols), items) in mine {
            {
                let reason = match phase {
                    Phase::Main => graph.reason_for(mapper, op, broken),
                    _ => graph.broken_reason(mapper, broken, phase),
                };
                let reason = if *level > 0 {
                    Some("unique values change hands: rows giving a value up go first".into())
                } else {
                    reason
                };
                let reason = if *follows {
                    Some("rows of this table referenced by updated rows are inserted first".into())
                } else {
                    reason
                };
                steps.push(Batch {
                    mapper,
                    op,
                    cols: cols.clone(),
                    phase,
                    items: items.clone(),
                    reason,
                });
            }
        }
    };
    let take = |mapper: u32, op: Op, phase: Phase, steps: &mut Vec<Batch>| {
        take_some(mapper, op, phase, Pick::All, steps)
    };
    let involved: Vec<u32> = order.clone();
    // A mapper's deletes go before its own saves when nothing else in this flush depends on
    // it: a DELETE then frees unique values (keys, unique columns) for the INSERT or UPDATE that
    // takes them. When another mapper of the flush references it, its rows may still be needed
    // until that mapper's saves are done, so its deletes wait for the end as usual.
    let has = |m: u32, op: Op| {
        changes
            .iter()
            .any(|c| c.mapper == m && c.op == op && c.phase == Phase::Main)
    };
    // A self-referential mapper with updates keeps its deletes at the end too: an UPDATE may
    // move a row's reference off a row being deleted (children of a deleted node set to NULL),
    // and must run first.
    let early: Vec<u32> = order
        .iter()
        .copied()
        .filter(|&m| {
            has(m, Op::Delete)
                && (has(m, Op::Insert) || has(m, Op::Update))
                && !graph.edges.iter().any(|e| {
                    e.parent == m
                        && ((e.child != m && involved.contains(&e.child))
                            || (e.child == m && has(m, Op::Update)))
                })
        })
        .collect();
    for &m in order {
        // (a mapper nothing else of the flush depends on: all its deletes; else those the
        // caller marked early)
        let first = steps.len();
        let pick = if early.contains(&m) {
            Pick::All
        } else {
            Pick::Early(true)
        };
        take_some(m, Op::Delete, Phase::Main, pick, &mut steps);
        for step in &mut steps[first..] {
            step.reason = Some(
                "deletes run before this table's inserts and updates, freeing unique values".into(),
            );
        }
        // Updates go before inserts (freeing unique values), except those that point a row at
        // a row being inserted, or take a unique value such a row gives up (the caller marks
        // both: Change::follows_inserts).
        let follows = groups.keys().any(|(gm, op, phase, _, follows, _, _)| {
            *gm == m && *op == Op::Update && *phase == Phase::Main && *follows
        });
        if follows && has(m, Op::Insert) {
            take_some(m, Op::Update, Phase::Main, Pick::BeforeInserts, &mut steps);
            take(m, Op::Insert, Phase::Main, &mut steps);
            take_some(m, Op::Update, Phase::Main, Pick::AfterInserts, &mut steps);
        } else {
            take(m, Op::Update, Phase::Main, &mut steps);
            take(m, Op::Insert, Phase::Main, &mut steps);
        }
    }
    for &m in order {
        take(m, Op::Update, Phase::PostUpdate, &mut steps);
    }
    for &m in order {
        take(m, Op::Update, Phase::PreDelete, &mut steps);
    }
    for &m in order.iter().rev() {
        if !early.contains(&m) {
            take_some(m, Op::Delete, Phase::Main, Pick::Early(false), &mut steps);
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

    pub(super) fn edge(a: u32, b: u32, nullable: bool) -> Edge {
        Edge {
            parent: a,
            child: b,
            cols: smallvec![0],
            refs: smallvec![0],
            nullable,
            post_update: false,
            reason: format!("{b} references {a}"),
        }
    }

    pub(super) fn graph(n: u32, edges: &[(u32, u32)]) -> MapperGraph {
        MapperGraph {
            mappers: (0..n).collect(),
            edges: edges.iter().map(|&(a, b)| edge(a, b, false)).collect(),
        }
    }

    pub(super) fn change(mapper: u32, op: Op, cols: &[u16], item: usize) -> Change {
        Change {
            mapper,
            op,
            cols: cols.iter().copied().collect(),
            item,
            phase: Phase::Main,
            level: 0,
            follows_inserts: false,
            early: false,
        }
    }

    #[test]
    fn a_cycle_is_broken_at_its_nullable_edge() {
        // 0 -> 1 (NOT NULL), 1 -> 0 (nullable): break 1 -> 0.
        let g = MapperGraph {
            mappers: vec![0, 1],
            edges: vec![edge(0, 1, false), edge(1, 0, true)],
        };
        let o = g.order_of(&[0, 1]).unwrap();
        assert_eq!(o.order, vec![0, 1]);
        assert_eq!(o.broken, vec![1]);
        // both NOT NULL: an error naming the cycle
        let g = MapperGraph {
            mappers: vec![0, 1],
            edges: vec![edge(0, 1, false), edge(1, 0, false)],
        };
        let c = g.order_of(&[0, 1]).unwrap_err();
        assert_eq!(c.mappers, vec![0, 1]);
        assert_eq!(c.edges.len(), 2);
    }

    #[test]
    fn post_update_edges_are_broken_even_without_a_cycle() {
        let mut e = edge(0, 1, true);
        e.post_update = true;
        let g = MapperGraph {
            mappers: vec![0, 1],
            edges: vec![e],
        };
        let o = g.order_of(&[1, 0]).unwrap();
        assert_eq!(o.broken, vec![0]);
        let mut post = change(1, Op::Update, &[0], 2);
        post.phase = Phase::PostUpdate;
        let steps = plan_ordered(
            &[
                change(1, Op::Insert, &[0, 1], 0),
                change(0, Op::Insert, &[0], 1),
                post,
            ],
            &g,
            &o,
        )
        .unwrap();
        let phases: Vec<(u32, Op, Phase)> =
            steps.iter().map(|b| (b.mapper, b.op, b.phase)).collect();
        assert_eq!(phases[2], (1, Op::Update, Phase::PostUpdate));
        assert!(steps[2].reason.as_deref().unwrap().contains("post_update"));
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
    fn updates_pointing_into_the_same_table_wait_for_its_inserts() {
        // mapper 0 references itself through column 2 (a tree)
        let mut g = graph(1, &[]);
        let mut e = edge(0, 0, true);
        e.cols = smallvec![2];
        g.edges.push(e);
        let mut changes = vec![
            change(0, Op::Update, &[2], 0), // moved under a new row
            change(0, Op::Update, &[1], 1), // renamed: may free a unique value
            change(0, Op::Insert, &[0, 1, 2], 2),
            change(0, Op::Update, &[1, 2], 3), // renamed, and moved under an old row
        ];
        changes[0].follows_inserts = true;
        let steps = plan(&changes, &g).unwrap();
        let summary: Vec<(Op, Vec<usize>)> =
            steps.iter().map(|b| (b.op, b.items.clone())).collect();
        assert_eq!(
            summary,
            vec![
                (Op::Update, vec![1]),
                (Op::Update, vec![3]),
                (Op::Insert, vec![2]),
                (Op::Update, vec![0])
            ]
        );
        assert!(steps[3]
            .reason
            .as_deref()
            .unwrap()
            .contains("inserted first"));
        // without inserts, the updates keep their one step per column set
        let steps = plan(&changes[..2], &g).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].items, vec![0]);
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
        /// On any graph: either an order in which every unbroken edge holds, with only
        /// post_update or nullable edges broken, or a cycle made of NOT NULL edges only.
        #[test]
        fn cycles_are_broken_only_at_nullable_edges_or_reported(
            n in 1u32..6,
            raw in proptest::collection::vec((0u32..6, 0u32..6, any::<bool>(), any::<bool>()), 0..10),
        ) {
            let edges: Vec<Edge> = raw
                .into_iter()
                .map(|(a, b, nullable, post)| {
                    let mut e = edge(a % n, b % n, nullable || post);
                    e.post_update = post;
                    e
                })
                .collect();
            let g = MapperGraph { mappers: (0..n).collect(), edges: edges.clone() };
            let involved: Vec<u32> = (0..n).collect();
            match g.order_of(&involved) {
                Ok(o) => {
                    let pos = |m: u32| o.order.iter().position(|x| *x == m).unwrap();
                    for (i, e) in edges.iter().enumerate() {
                        if e.parent == e.child { continue; }
                        if o.broken.contains(&i) {
                            prop_assert!(e.nullable || e.post_update);
                        } else {
                            prop_assert!(pos(e.parent) < pos(e.child), "{:?} {:?}", e, o);
                        }
                    }
                    prop_assert_eq!(g.order_of(&involved).unwrap(), o);
                }
                Err(c) => {
                    prop_assert!(!c.edges.is_empty());
                    for &i in &c.edges {
                        prop_assert!(!edges[i].nullable && !edges[i].post_update);
                    }
                    for k in 0..c.mappers.len() {
                        let (a, b) = (c.mappers[k], c.mappers[(k + 1) % c.mappers.len()]);
                        prop_assert!(c.edges.iter().any(|&i| edges[i].parent == a && edges[i].child == b));
                    }
                }
            }
        }

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
            edges: vec![tests::edge(1, 2, false)],
        };
        let ch = |m, op, item| tests::change(m, op, &[0], item);
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
            edges: vec![tests::edge(5, 4, false)],
        };
        let ch = |m, item| tests::change(m, Op::Insert, &[0], item);
        let steps = plan(&[ch(4, 0), ch(4, 1), ch(5, 2), ch(5, 3)], &g).unwrap();
        assert_eq!(steps[0].mapper, 5, "{steps:?}");
    }
}

/// One updated row's change to one unique column group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff<V> {
    /// The value the row gives up (None: NULL, unchanged or not known in memory).
    pub gives: Option<V>,
    /// The value it takes (None: NULL or unchanged).
    pub takes: Option<V>,
    /// The row changes the group from a value not known in memory (an expired attribute set
    /// without being loaded), which may be the value another row takes.
    pub frees_unknown: bool,
}

/// Unique values changing hands between updated rows of one table.
///
/// `rows[i]` lists row `i`'s change to each unique column group. PostgreSQL checks a
/// non-deferrable unique constraint row by row, so a row taking a value must be updated after
/// the row giving it up, in a later statement. Returns per row its level (statements run level
/// by level) and whether the row first needs a step setting its group to NULL (at level 0),
/// which breaks swaps and longer cycles.
///
/// A row changing a group from a value not known in memory goes before the rows taking values
/// of that group, unless that closes a cycle with the known handoffs (their order is then
/// unknown). Such rows that take a value too come after those setting the group to NULL, and
/// are not ordered among themselves.
///
/// `parkable[g]` says group g accepts NULL: two rows or more changing it from values not known
/// in memory to others are then parked as NULL first (either may hold what the other takes),
/// as rows exchanging known values are.
pub fn unique_levels<V: Eq + std::hash::Hash + Clone>(
    rows: &[Vec<Handoff<V>>],
    parkable: &[bool],
) -> Vec<(u32, bool)> {
    let n = rows.len();
    // owner of each value given up, per group
    let mut owners: std::collections::HashMap<(usize, V), usize> = std::collections::HashMap::new();
    for (i, groups) in rows.iter().enumerate() {
        for (g, h) in groups.iter().enumerate() {
            if let Some(v) = &h.gives {
                owners.insert((g, v.clone()), i);
            }
        }
    }
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (s, groups) in rows.iter().enumerate() {
        for (g, h) in groups.iter().enumerate() {
            if let Some(v) = &h.takes {
                if let Some(&r) = owners.get(&(g, v.clone())) {
                    if r != s {
                        edges.push((r, s));
                    }
                }
            }
        }
    }
    let mut nulled = vec![false; n];
    for (g, _) in parkable.iter().enumerate().filter(|(_, p)| **p) {
        let unknown: Vec<usize> = (0..n)
            .filter(|&i| {
                rows[i]
                    .get(g)
                    .is_some_and(|h| h.frees_unknown && h.takes.is_some())
            })
            .collect();
        if unknown.len() > 1 {
            for i in unknown {
                nulled[i] = true;
            }
        }
    }
    let mut live = loop {
        let live: Vec<(usize, usize)> =
            edges.iter().copied().filter(|(r, _)| !nulled[*r]).collect();
        match topo::sort(n, &live) {
            Ok(_) => break live,
            Err(cycle) => {
                // release one row's values first; its own update follows the others
                let c = *cycle.iter().min().expect("a cycle has rows");
                nulled[c] = true;
            }
        }
    };
    // per group g, two nodes a = n + 2g and b = a + 1: rows setting g to NULL from an unknown
    // value -> a -> rows changing it from an unknown value to another -> b -> the other rows
    // taking values of g (one node per side keeps the edges linear in the rows)
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let nodes = n + 2 * width;
    let mut freeing: Vec<(usize, usize)> = Vec::new();
    for g in 0..width {
        let in_g = |i: usize, f: fn(&Handoff<V>) -> bool| rows[i].get(g).is_some_and(f);
        if !(0..n).any(|i| in_g(i, |h| h.frees_unknown)) {
            continue;
        }
        let (a, b) = (n + 2 * g, n + 2 * g + 1);
        freeing.push((a, b));
        for i in 0..n {
            match (in_g(i, |h| h.frees_unknown), in_g(i, |h| h.takes.is_some())) {
                (true, false) => freeing.push((i, a)),
                (true, true) => freeing.extend([(a, i), (i, b)]),
                (false, true) => freeing.push((b, i)),
                (false, false) => {}
            }
        }
    }
    let all: Vec<(usize, usize)> = live.iter().chain(&freeing).copied().collect();
    let order = match topo::sort(nodes, &all) {
        Ok(order) => {
            live = all;
            order
        }
        Err(_) => topo::sort(nodes, &live).expect("the known handoffs have no cycle"),
    };
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for &(r, s) in &live {
        before[s].push(r);
    }
    let base = u32::from(nulled.iter().any(|x| *x));
    let mut level = vec![base; nodes];
    for &s in &order {
        // a group's node stands at the level of the rows freeing its values
        let step = u32::from(s < n);
        for &r in &before[s] {
            level[s] = level[s].max(level[r] + step);
        }
    }
    (0..n).map(|i| (level[i], nulled[i])).collect()
}

#[cfg(test)]
mod unique_tests {
    use super::*;
    use proptest::prelude::*;

    fn one(old: i32, new: i32) -> Vec<Handoff<i32>> {
        vec![Handoff {
            gives: Some(old),
            takes: Some(new),
            frees_unknown: false,
        }]
    }

    #[test]
    fn freeing_then_taking_and_swapping() {
        // row 0 takes row 1's value: row 1 first
        assert_eq!(
            unique_levels(&[one(10, 20), one(20, 30)], &[]),
            vec![(1, false), (0, false)]
        );
        // a swap: row 0 is nulled first, row 1 takes its value, row 0 takes row 1's
        assert_eq!(
            unique_levels(&[one(10, 20), one(20, 10)], &[]),
            vec![(2, true), (1, false)]
        );
    }

    #[test]
    fn a_row_freeing_a_value_not_known_goes_before_the_rows_taking_values() {
        let h = |gives, takes, frees_unknown| Handoff {
            gives,
            takes,
            frees_unknown,
        };
        let frees = || vec![h(None, None, true)];
        // row 0 takes a value; row 1 sets its own, not known, to NULL; row 2 takes another
        assert_eq!(
            unique_levels(
                &[
                    vec![h(None, Some(7), false)],
                    frees(),
                    one(10, 20)[..].to_vec()
                ],
                &[]
            ),
            vec![(1, false), (0, false), (1, false)]
        );
        // nothing to take: all in one statement
        assert_eq!(
            unique_levels(&[frees(), frees()], &[]),
            vec![(0, false), (0, false)]
        );
        // row 0 frees an unknown value of group 0 but takes row 1's value of group 1, and
        // row 1 takes a value of group 0: the known handoff wins, the other order is unknown
        let row0 = vec![h(None, None, true), h(None, Some(5), false)];
        let row1 = vec![h(None, Some(9), false), h(Some(5), None, false)];
        assert_eq!(
            unique_levels(&[row0, row1], &[]),
            vec![(1, false), (0, false)]
        );
        // row 0 takes a value; row 1 changes its own, not known, to another; row 2 sets its
        // own, not known, to NULL: row 2 first, then row 1, then row 0
        assert_eq!(
            unique_levels(
                &[
                    vec![h(None, Some(7), false)],
                    vec![h(None, Some(8), true)],
                    frees(),
                ],
                &[]
            ),
            vec![(2, false), (1, false), (0, false)]
        );
        // rows 0 and 1 both change values not known in memory to others: either may hold what
        // the other takes, so both are parked as NULL first where the group accepts NULL
        let rows = [vec![h(None, Some(7), true)], vec![h(None, Some(8), true)]];
        assert_eq!(unique_levels(&rows, &[]), vec![(1, false), (1, false)]);
        assert_eq!(unique_levels(&rows, &[true]), vec![(2, true), (2, true)]);
    }

    /// Run `plan`'s levels over rows holding the values 0..n, row i moving to `target[i]`
    /// (a row that `keeps` its value where it has no target, else NULL): the first update
    /// that finds its value on another row, as (level, row, value).
    fn first_clash(
        plan: &[(u32, bool)],
        target: &[Option<i32>],
        keeps: &[bool],
    ) -> Option<(u32, usize, i32)> {
        let n = target.len();
        let mut held: Vec<Option<i32>> = (0..n as i32).map(Some).collect();
        let top = plan.iter().map(|(l, _)| *l).max().unwrap_or(0);
        for level in 0..=top {
            let movers: Vec<usize> = (0..n).filter(|&i| plan[i].0 == level).collect();
            for &i in &movers {
                if let Some(v) = target[i] {
                    if (0..n).any(|j| j != i && held[j] == Some(v)) {
                        return Some((level, i, v));
                    }
                }
            }
            for &i in &movers {
                held[i] = if keeps[i] {
                    target[i].or(held[i])
                } else {
                    target[i]
                };
            }
        }
        None
    }

    proptest! {
        /// Simulating the statements level by level (NULL steps first, rows of one level in
        /// any order) never puts one value on two rows.
        #[test]
        fn no_step_ever_duplicates_a_value(
            perm in (1usize..7).prop_flat_map(|k| Just((0..k as i32).collect::<Vec<_>>()).prop_shuffle()),
        ) {
            // k rows exchange their values 0..k among themselves (row i takes perm[i]); rows
            // k..6 keep theirs
            let k = perm.len();
            let rows: Vec<Vec<Handoff<i32>>> =
                (0..k).map(|i| one(i as i32, perm[i])).collect();
            let plan = unique_levels(&rows, &[]);
            let mut held: Vec<Option<i32>> = (0..6).map(Some).collect();
            for (i, (_, nulled)) in plan.iter().enumerate() {
                if *nulled { held[i] = None; }
            }
            let top = plan.iter().map(|(l, _)| *l).max().unwrap_or(0);
            for level in 0..=top {
                let movers: Vec<usize> = (0..k).filter(|&i| plan[i].0 == level).collect();
                // every mover's target must be free of rows outside this level's movers
                for &i in &movers {
                    let target = Some(perm[i]);
                    let clash = (0..6).any(|j| j != i && held[j] == target && !movers.contains(&j));
                    prop_assert!(!clash, "level {} row {} -> {:?}: {:?}", level, i, target, plan);
                }
                // and no two movers of one statement take the same value or each other's
                for &i in &movers {
                    for &j in &movers {
                        if i != j { prop_assert!(held[j] != Some(perm[i]), "{:?}", plan); }
                    }
                }
                for &i in &movers { held[i] = Some(perm[i]); }
            }
            for i in 0..k { prop_assert_eq!(held[i], Some(perm[i])); }
        }

        /// Rows giving up values not known in memory (set to NULL, or to a value no row
        /// holds), and rows giving up known values taking some of those: simulating the
        /// levels, no statement puts one value on two rows.
        #[test]
        fn rows_replacing_unknown_values_go_before_the_takers(
            kinds in proptest::collection::vec(0u8..3, 1..8),
            pick in any::<proptest::sample::Index>(),
        ) {
            // row i holds value i; kind 0 clears it, kind 1 replaces it with 100 + i, kind 2
            // gives it up (known) for a value a row of kind 0 or 1 gave up
            let n = kinds.len();
            let freed: Vec<i32> = (0..n).filter(|&i| kinds[i] < 2).map(|i| i as i32).collect();
            let takers: Vec<usize> = (0..n).filter(|&i| kinds[i] == 2).collect();
            let mut target: Vec<Option<i32>> =
                (0..n).map(|i| (kinds[i] == 1).then_some(100 + i as i32)).collect();
            if !freed.is_empty() {
                let start = pick.index(freed.len());
                for (j, &t) in takers.iter().enumerate().take(freed.len()) {
                    target[t] = Some(freed[(start + j) % freed.len()]);
                }
            }
            let rows: Vec<Vec<Handoff<i32>>> = (0..n)
                .map(|i| {
                    let known = kinds[i] == 2;
                    vec![Handoff {
                        gives: known.then_some(i as i32),
                        takes: target[i],
                        frees_unknown: !known,
                    }]
                })
                .collect();
            let keeps: Vec<bool> = kinds.iter().map(|&k| k == 2).collect();
            let plan = unique_levels(&rows, &[]);
            prop_assert_eq!(first_clash(&plan, &target, &keeps), None, "{:?}", plan);
        }

        /// Rows clearing values not known in memory, and rows (their own values not known
        /// either) taking some of those values: simulating the levels, no statement puts one
        /// value on two rows.
        #[test]
        fn rows_clearing_unknown_values_go_before_the_takers(
            clears in proptest::collection::vec(any::<bool>(), 1..8),
            pick in any::<proptest::sample::Index>(),
        ) {
            // row i holds value i; the clearing rows' values go to the takers, in some order
            let n = clears.len();
            let freed: Vec<i32> = (0..n).filter(|&i| clears[i]).map(|i| i as i32).collect();
            let takers: Vec<usize> = (0..n).filter(|&i| !clears[i]).collect();
            let mut target: Vec<Option<i32>> = vec![None; n];
            if !freed.is_empty() {
                let start = pick.index(freed.len());
                for (j, &t) in takers.iter().enumerate().take(freed.len()) {
                    target[t] = Some(freed[(start + j) % freed.len()]);
                }
            }
            let rows: Vec<Vec<Handoff<i32>>> = (0..n)
                .map(|i| vec![Handoff { gives: None, takes: target[i], frees_unknown: clears[i] }])
                .collect();
            let keeps: Vec<bool> = clears.iter().map(|&c| !c).collect();
            let plan = unique_levels(&rows, &[]);
            prop_assert_eq!(first_clash(&plan, &target, &keeps), None, "{:?}", plan);
        }
    }
}
