//! The flush planner on any mapper graph and any changes: it must keep its contract
//! (`retort::engine::plan_check`: no panic, every dependency respected, an answer that does
//! not change from one call to the next). Run by `make fuzz`.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use retort::engine::plan_check::{build, check_plan};

#[derive(Arbitrary, Debug)]
struct Input {
    mappers: u8,
    edges: Vec<(u8, u8, bool, bool, u8)>,
    changes: Vec<(u8, u8, u8, u8, u8)>,
}

fuzz_target!(|input: Input| {
    let (graph, changes) = build(input.mappers, &input.edges, &input.changes);
    if let Err(broken) = check_plan(&changes, &graph) {
        panic!("{broken}\n{graph:?}\n{changes:?}");
    }
});
