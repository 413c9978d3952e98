//! Running independent builds at the same time (`-j N`): a build starts once everything it
//! depends on is built; after a failure no new build starts, running ones finish.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use noodle_store::builds::BuildKind;

use crate::error::BuildError;
use crate::job::{self, Context, Done, Job};

pub struct Node {
    pub job: Job,
    /// Indices of the nodes this one needs built first.
    pub deps: Vec<usize>,
    pub kind: BuildKind,
}

/// How each node ended; `None` when it never started (a dependency failed or a build failed
/// elsewhere first).
pub type Results = Vec<Option<Result<Done, BuildError>>>;

struct State {
    waiting_on: Vec<usize>,
    ready: VecDeque<usize>,
    running: usize,
    failed: bool,
    results: Results,
}

pub fn run_all(
    ctx: &Context<'_>,
    nodes: &[Node],
    jobs: usize,
    on_done: &(dyn Fn(&Job, &Result<Done, BuildError>) + Sync),
) -> Results {
    let mut dependents = vec![Vec::new(); nodes.len()];
    for (index, node) in nodes.iter().enumerate() {
        for &dep in &node.deps {
            dependents[dep].push(index);
        }
    }
    let state = Mutex::new(State {
        waiting_on: nodes.iter().map(|n| n.deps.len()).collect(),
        ready: (0..nodes.len())
            .filter(|&i| nodes[i].deps.is_empty())
            .collect(),
        running: 0,
        failed: false,
        results: (0..nodes.len()).map(|_| None).collect(),
    });
    let wake = Condvar::new();
    let workers = jobs.max(1).min(nodes.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = {
                    let mut st = state.lock().expect("no worker panics holding the lock");
                    loop {
                        if st.running == 0 && (st.failed || st.ready.is_empty()) {
                            wake.notify_all();
                            break None;
                        }
                        if !st.failed {
                            if let Some(index) = st.ready.pop_front() {
                                st.running += 1;
                                break Some(index);
                            }
                        }
                        st = wake.wait(st).expect("no worker panics holding the lock");
                    }
                };
                let Some(index) = index else { return };
                let node = &nodes[index];
                let result = job::run(ctx, &node.job, node.kind);
                on_done(&node.job, &result);
                let mut st = state.lock().expect("no worker panics holding the lock");
                st.running -= 1;
                if result.is_ok() {
                    for &dependent in &dependents[index] {
                        st.waiting_on[dependent] -= 1;
                        if st.waiting_on[dependent] == 0 {
                            st.ready.push_back(dependent);
                        }
                    }
                } else {
                    st.failed = true;
                }
                st.results[index] = Some(result);
                wake.notify_all();
            });
        }
    });
    state
        .into_inner()
        .expect("no worker panics holding the lock")
        .results
}
