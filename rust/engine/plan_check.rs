//! The flush planner's contract, as a checker: given any mapper graph and any changes,
//! [`plan`] either returns batches that keep every dependency, or fails with the error the
//! input calls for; and the same input always gets the same answer.
//!
//! Shared by the proptests below and the cargo-fuzz target (`fuzz/fuzz_targets/plan.rs`),
//! which feed it graphs with cycles, nullable and `post_update` keys, self-references and
//! unregistered mappers. Compiled for tests and fuzzing only.

use crate::engine::error::{CoreError, CoreResult};
use crate::engine::plan::{involved_mappers, plan, Batch, Change, ColSet, Edge, MapperGraph};
use crate::engine::plan::{Op, Phase};

/// A graph of `mappers` (ids `0..mappers`) and changes built from small numbers, as a
/// fuzzer or proptest draws them (every value is taken modulo its range):
///
/// - an edge `(parent, child, nullable, post_update, column)`;
/// - a change `(mapper, op, phase, columns, level)`: mapper 255 is not registered; `op` 0..3
///   is insert, update, delete; `phase` 1 and 2 (post-update, pre-delete) apply to updates
///   only, as the binding builds them, and so does phase 3 (a main-phase update pointing its
///   row at a row being inserted: `follows_inserts`), which for a delete marks it `early`;
///   `columns` is a bit set of columns 0..4.
pub fn build(
    mappers: u8,
    edges: &[(u8, u8, bool, bool, u8)],
    changes: &[(u8, u8, u8, u8, u8)],
) -> (MapperGraph, Vec<Change>) {
    let n = mappers % 6 + 1;
    let graph = MapperGraph {
        mappers: (0..u32::from(n)).collect(),
        edges: edges
            .iter()
            .map(|&(a, b, nullable, post_update, col)| {
                let (parent, child) = (u32::from(a % n), u32::from(b % n));
                Edge {
                    parent,
                    child,
                    cols: ColSet::from_slice(&[u16::from(col % 4)]),
                    refs: ColSet::from_slice(&[0]),
                    nullable: nullable || post_update,
                    post_update,
                    reason: format!("{child} references {parent}"),
                }
            })
            .collect(),
    };
    let changes = changes
        .iter()
        .enumerate()
        .map(|(item, &(m, op, phase, cols, level))| {
            let op = [Op::Insert, Op::Update, Op::Delete][usize::from(op % 3)];
            let early = op == Op::Delete && phase % 4 == 3;
            let (phase, follows_inserts) = match (op, phase % 4) {
                (Op::Update, 1) => (Phase::PostUpdate, false),
                (Op::Update, 2) => (Phase::PreDelete, false),
                (Op::Update, 3) => (Phase::Main, true),
                _ => (Phase::Main, false),
            };
            Change {
                // (255 names a mapper the graph does not have)
                mapper: u32::from(if m == u8::MAX { n } else { m % n }),
                op,
                cols: (0..4).filter(|c| cols & (1 << c) != 0).collect(),
                item,
                phase,
                level: u32::from(level % 3),
                follows_inserts,
                early,
            }
        })
        .collect();
    (graph, changes)
}

/// Whether one ordering rule held: if not, the steps that broke it (the last that had to
/// go first, the first that had to go after).
type Held = Result<(), (usize, usize)>;

/// Check [`plan`] on `changes` (each change's `item` its index) against `graph`; the
/// broken promise, if any, as a message.
pub fn check_plan(changes: &[Change], graph: &MapperGraph) -> Result<(), String> {
    if changes.iter().enumerate().any(|(i, c)| c.item != i) {
        return Err("precondition: each change's item must be its index".into());
    }
    let result = plan(changes, graph);
    if plan(changes, graph) != result {
        return Err("the same input planned twice gave two answers".into());
    }
    check_answer(changes, graph, result)
}

/// (check_plan) for the answer `result` the planner gave.
pub fn check_answer(
    changes: &[Change],
    graph: &MapperGraph,
    result: CoreResult<Vec<Batch>>,
) -> Result<(), String> {
    if changes.is_empty() {
        return match result {
            Ok(steps) if steps.is_empty() => Ok(()),
            other => Err(format!("no changes, yet {other:?}")),
        };
    }
    let involved = involved_mappers(changes, graph);
    let ordering = match graph.order_of(&involved) {
        Ok(ordering) => ordering,
        Err(cycle) => {
            if !matches!(result, Err(CoreError::Cycle(_))) {
                return Err(format!("a cycle {cycle:?} was not reported: {result:?}"));
            }
            // the cycle is real and no key of it could be broken
            let k = cycle.mappers.len();
            if cycle.edges.len() != k {
                return Err(format!("cycle {cycle:?}: one edge per step expected"));
            }
            for (step, &e) in cycle.edges.iter().enumerate() {
                let edge = &graph.edges[e];
                let (a, b) = (cycle.mappers[step], cycle.mappers[(step + 1) % k]);
                if edge.nullable || edge.post_update || edge.parent != a || edge.child != b {
                    return Err(format!("cycle {cycle:?}: edge {edge:?} does not belong"));
                }
            }
            return Ok(());
        }
    };
    for &e in &ordering.broken {
        let edge = &graph.edges[e];
        if !(edge.nullable || edge.post_update) {
            return Err(format!("a NOT NULL key was broken: {edge:?}"));
        }
    }
    let registered = |m: u32| graph.mappers.contains(&m);
    if changes.iter().any(|c| !registered(c.mapper)) {
        return match result {
            Err(CoreError::Flush(_)) => Ok(()),
            other => Err(format!("an unregistered mapper was not refused: {other:?}")),
        };
    }
    let steps = result.map_err(|e| format!("refused a plannable input: {e}"))?;
    check_batches(changes, &steps)?;
    let mut step_of = vec![0usize; changes.len()];
    for (s, batch) in steps.iter().enumerate() {
        for &i in &batch.items {
            step_of[i] = s;
        }
    }
    // every pair of changes an ordering rule relates: `before` must run first
    let pairs = |before: &dyn Fn(&Change) -> bool, after: &dyn Fn(&Change) -> bool| {
        let first = changes
            .iter()
            .filter(|c| before(c))
            .map(|c| step_of[c.item]);
        let last = changes.iter().filter(|c| after(c)).map(|c| step_of[c.item]);
        match (first.max(), last.min()) {
            (Some(a), Some(b)) if a >= b => Err((a, b)),
            _ => Ok(()),
        }
    };
    let main_save =
        |m: u32| move |c: &Change| c.mapper == m && c.phase == Phase::Main && c.op != Op::Delete;
    // (deletes marked early: the caller answers for the rows that point at them)
    let main_delete = |m: u32| {
        move |c: &Change| c.mapper == m && c.phase == Phase::Main && c.op == Op::Delete && !c.early
    };
    let phase_of = |m: u32, p: Phase| move |c: &Change| c.mapper == m && c.phase == p;
    for (e, edge) in graph.edges.iter().enumerate() {
        let (p, c) = (edge.parent, edge.child);
        if p == c || !involved.contains(&p) || !involved.contains(&c) {
            continue;
        }
        let broken = ordering.broken.contains(&e);
        let mut rules: Vec<(&str, Held)> = vec![
            // a child moved off a parent row, or deleted, before that row is deleted
            (
                "child saves before parent deletes",
                pairs(&main_save(c), &main_delete(p)),
            ),
            (
                "pre-delete before parent deletes",
                pairs(&phase_of(c, Phase::PreDelete), &main_delete(p)),
            ),
        ];
        if broken {
            rules.push((
                "parent saves before post-updates",
                pairs(&main_save(p), &phase_of(c, Phase::PostUpdate)),
            ));
        } else {
            rules.push((
                "parent saves before child saves",
                pairs(&main_save(p), &main_save(c)),
            ));
            rules.push((
                "child deletes before parent deletes",
                pairs(&main_delete(c), &main_delete(p)),
            ));
        }
        for (rule, held) in rules {
            if let Err((a, b)) = held {
                return Err(format!(
                    "{rule} ({edge:?}): step {a} is not before step {b}: {steps:#?}"
                ));
            }
        }
    }
    for &m in &involved {
        // an update pointing a row at a row being inserted (or taking a value such a row gives
        // up) runs after the inserts; the others before, freeing unique values they may take
        let inserts = |c: &Change| c.mapper == m && c.op == Op::Insert;
        let updates = |c: &Change| c.mapper == m && c.op == Op::Update && c.phase == Phase::Main;
        let follows = |c: &Change| updates(c) && c.follows_inserts;
        if let Err((a, b)) = pairs(&inserts, &follows) {
            return Err(format!(
                "an update pointing at a new row (step {b}) before insert {a}"
            ));
        }
        let frees = |c: &Change| updates(c) && !c.follows_inserts;
        let early = |c: &Change| c.mapper == m && c.op == Op::Delete && c.early;
        let saves = |c: &Change| c.mapper == m && c.phase == Phase::Main && c.op != Op::Delete;
        if let Err((a, b)) = pairs(&early, &saves) {
            return Err(format!("a delete marked early (step {a}) after save {b}"));
        }
        if let Err((a, b)) = pairs(&frees, &inserts) {
            return Err(format!(
                "an update freeing unique values (step {a}) after insert {b}"
            ));
        }
    }
    Ok(())
}

/// Every change in exactly one batch, which holds only changes of its mapper, operation,
/// phase, columns and level, in the order handed in; no two batches could have been one; and
/// one mapper's batches of one operation and phase run by ascending level (those following
/// the inserts, and the others, each by ascending level).
fn check_batches(changes: &[Change], steps: &[Batch]) -> Result<(), String> {
    let mut seen = vec![false; changes.len()];
    for (s, batch) in steps.iter().enumerate() {
        if batch.items.is_empty() || batch.items.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("batch {s} is empty or out of order: {batch:?}"));
        }
        let level = changes[batch.items[0]].level;
        for &i in &batch.items {
            let c = &changes[i];
            let fits = c.mapper == batch.mapper
                && c.op == batch.op
                && c.phase == batch.phase
                && c.cols == batch.cols
                && c.level == level
                && c.follows_inserts == changes[batch.items[0]].follows_inserts
                && c.early == changes[batch.items[0]].early;
            if !fits || std::mem::replace(&mut seen[i], true) {
                return Err(format!("change {c:?} misplaced or repeated in batch {s}"));
            }
        }
        let key = |b: &Batch| {
            let first = &changes[b.items[0]];
            (
                b.mapper,
                b.op,
                b.phase,
                first.level,
                first.follows_inserts,
                first.early,
            )
        };
        for (t, later) in steps.iter().enumerate().skip(s + 1) {
            if key(later) == key(batch) && later.cols == batch.cols {
                return Err(format!("batches {s} and {t} could have been one"));
            }
            let (k, j) = (key(later), key(batch));
            let same = (k.0, k.1, k.2, k.4, k.5) == (j.0, j.1, j.2, j.4, j.5);
            if same && changes[later.items[0]].level < level {
                return Err(format!("batch {t} of a lower level runs after batch {s}"));
            }
        }
    }
    match seen.iter().position(|s| !s) {
        Some(i) => Err(format!("change {i} is in no batch")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any graph (cycles, nullable and post_update keys, self-references) and any changes:
        /// the plan keeps its contract (check_plan).
        #[test]
        fn any_graph_and_changes_keep_the_contract(
            mappers in any::<u8>(),
            edges in proptest::collection::vec(any::<(u8, u8, bool, bool, u8)>(), 0..10),
            changes in proptest::collection::vec(any::<(u8, u8, u8, u8, u8)>(), 0..30),
        ) {
            let (graph, changes) = build(mappers, &edges, &changes);
            if let Err(broken) = check_plan(&changes, &graph) {
                prop_assert!(false, "{}\n{:?}\n{:?}", broken, graph, changes);
            }
        }
    }

    #[test]
    fn the_checker_refuses_plans_that_break_the_contract() {
        // mapper 1 references mapper 0 (NOT NULL): an insert of each, and a delete of each
        let (graph, changes) = build(
            1,
            &[(0, 1, false, false, 0)],
            &[
                (1, 0, 0, 1, 0),
                (0, 0, 0, 1, 0),
                (0, 2, 0, 1, 0),
                (1, 2, 0, 1, 0),
            ],
        );
        let steps = plan(&changes, &graph).unwrap();
        assert_eq!(check_answer(&changes, &graph, Ok(steps.clone())), Ok(()));
        let broken = |edit: &dyn Fn(&mut Vec<Batch>)| {
            let mut wrong = steps.clone();
            edit(&mut wrong);
            check_answer(&changes, &graph, Ok(wrong)).unwrap_err()
        };
        // (the plan: insert 0, delete 1, insert 1, delete 0) the child's insert before the
        // parent's; the parent's delete before the child's
        assert!(broken(&|s| s.swap(0, 2)).starts_with("parent saves before child saves"));
        assert!(broken(&|s| s.swap(1, 3)).contains("before parent deletes"));
        assert!(broken(&|s| {
            s.pop();
        })
        .ends_with("is in no batch"));
        assert!(broken(&|s| s[0].items.push(0)).contains("out of order"));
        // a cycle of NOT NULL keys must be refused, and an unregistered mapper
        let (cyclic, _) = build(1, &[(0, 1, false, false, 0), (1, 0, false, false, 0)], &[]);
        assert!(check_answer(&changes, &cyclic, Ok(steps.clone())).is_err());
        assert!(matches!(plan(&changes, &cyclic), Err(CoreError::Cycle(_))));
        let (_, stray) = build(1, &[], &[(255, 0, 0, 1, 0)]);
        assert!(check_answer(&stray, &graph, Ok(Vec::new())).is_err());
        assert_eq!(check_plan(&stray, &graph), Ok(()));
    }
}
