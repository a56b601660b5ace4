//! Deterministic topological ordering (Kahn's algorithm, ties broken by node index).
//!
//! Used for tables (mappers) ordered by foreign keys, and later for rows within
//! self-referential or mutually dependent tables. The same graph always yields the same order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Order nodes `0..n` so that for every edge `(a, b)`, `a` comes before `b`.
///
/// On a cycle, returns `Err` with the nodes of one cycle, in cycle order, starting from the
/// smallest node index, so that error messages are stable.
pub fn sort(n: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
    let mut indegree = vec![0usize; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        if a == b {
            // A self-edge is a cycle of one node (a table that references itself is handled
            // row by row, not here).
            return Err(vec![a]);
        }
        out[a].push(b);
        indegree[b] += 1;
    }
    for o in out.iter_mut() {
        o.sort_unstable();
        o.dedup();
    }
    // Recount after dedup: duplicate edges must count once.
    indegree.iter_mut().for_each(|d| *d = 0);
    for o in &out {
        for &b in o {
            indegree[b] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(node)) = ready.pop() {
        order.push(node);
        for &next in &out[node] {
            indegree[next] -= 1;
            if indegree[next] == 0 {
                ready.push(Reverse(next));
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err(find_cycle(n, &out, &indegree))
    }
}

/// Walk from the smallest node left with incoming edges until a node repeats.
fn find_cycle(n: usize, out: &[Vec<usize>], indegree: &[usize]) -> Vec<usize> {
    let remaining: Vec<bool> = (0..n).map(|i| indegree[i] > 0).collect();
    // Every remaining node has a remaining predecessor; follow predecessors backwards.
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (a, o) in out.iter().enumerate() {
        if !remaining[a] {
            continue;
        }
        for &b in o {
            if remaining[b] {
                preds[b].push(a);
            }
        }
    }
    let start = (0..n)
        .find(|&i| remaining[i])
        .expect("a cycle leaves nodes");
    let mut seen = vec![usize::MAX; n];
    let mut path = Vec::new();
    let mut node = start;
    while seen[node] == usize::MAX {
        seen[node] = path.len();
        path.push(node);
        node = *preds[node]
            .iter()
            .min()
            .expect("remaining node has a predecessor");
    }
    let mut cycle: Vec<usize> = path[seen[node]..].to_vec();
    cycle.reverse(); // predecessors were followed backwards
    let min_pos = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, v)| **v)
        .map(|(i, _)| i)
        .unwrap_or(0);
    cycle.rotate_left(min_pos);
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orders_a_chain_and_breaks_ties_by_index() {
        assert_eq!(sort(4, &[(2, 1), (3, 1)]).unwrap(), vec![0, 2, 3, 1]);
    }

    #[test]
    fn reports_the_cycle() {
        let err = sort(4, &[(0, 1), (1, 2), (2, 1), (2, 3)]).unwrap_err();
        assert_eq!(err, vec![1, 2]);
        assert_eq!(sort(2, &[(1, 1)]).unwrap_err(), vec![1]);
    }

    fn is_cycle(cycle: &[usize], edges: &[(usize, usize)]) -> bool {
        !cycle.is_empty()
            && (0..cycle.len()).all(|i| {
                let a = cycle[i];
                let b = cycle[(i + 1) % cycle.len()];
                edges.contains(&(a, b))
            })
    }

    proptest! {
        #[test]
        fn every_edge_is_respected_or_a_real_cycle_is_named(
            n in 1usize..12,
            raw in proptest::collection::vec((0usize..12, 0usize..12), 0..30),
        ) {
            let edges: Vec<(usize, usize)> =
                raw.into_iter().map(|(a, b)| (a % n, b % n)).collect();
            match sort(n, &edges) {
                Ok(order) => {
                    prop_assert_eq!(order.len(), n);
                    let mut pos = vec![0; n];
                    for (i, &v) in order.iter().enumerate() { pos[v] = i; }
                    for &(a, b) in &edges { prop_assert!(pos[a] < pos[b]); }
                    prop_assert_eq!(sort(n, &edges).unwrap(), order);
                }
                Err(cycle) => {
                    prop_assert!(is_cycle(&cycle, &edges), "{:?} in {:?}", cycle, edges);
                }
            }
        }

        #[test]
        fn acyclic_graphs_always_sort(
            n in 1usize..15,
            raw in proptest::collection::vec((0usize..15, 0usize..15), 0..40),
        ) {
            // Edges only from lower to higher index: never a cycle.
            let edges: Vec<(usize, usize)> = raw
                .into_iter()
                .map(|(a, b)| (a % n, b % n))
                .filter(|(a, b)| a < b)
                .collect();
            prop_assert!(sort(n, &edges).is_ok());
        }
    }
}
