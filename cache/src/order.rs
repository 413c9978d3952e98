//! Dependency order: a path after everything it references (within the set), so each one
//! can be registered as soon as it comes (invariant 1: a valid path's references are valid).

use std::collections::{BTreeMap, BTreeSet};

/// `paths` with their references (full store paths); references outside the set are
/// ignored (they are valid already). Self-references are allowed. Deterministic.
pub fn dependency_order(paths: impl IntoIterator<Item = (String, Vec<String>)>) -> Vec<String> {
    let graph: BTreeMap<String, Vec<String>> = paths.into_iter().collect();
    let mut done = BTreeSet::new();
    let mut order = Vec::with_capacity(graph.len());
    for start in graph.keys() {
        // Iterative depth-first post-order: a closure can be deep (long dependency chains).
        let mut stack = vec![(start.clone(), false)];
        while let Some((path, expanded)) = stack.pop() {
            if done.contains(&path) {
                continue;
            }
            if expanded {
                done.insert(path.clone());
                order.push(path);
                continue;
            }
            stack.push((path.clone(), true));
            for reference in &graph[&path] {
                if *reference != path && graph.contains_key(reference) && !done.contains(reference)
                {
                    stack.push((reference.clone(), false));
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_come_first() {
        let s = |x: &str| x.to_owned();
        let order = dependency_order([
            (s("app"), vec![s("lib"), s("app"), s("outside")]),
            (s("lib"), vec![s("libc")]),
            (s("libc"), vec![]),
        ]);
        assert_eq!(order, vec![s("libc"), s("lib"), s("app")]);
    }

    #[test]
    fn a_deep_chain_does_not_overflow() {
        let n = 100_000;
        let chain = (0..n).map(|i| {
            let refs = if i + 1 < n {
                vec![format!("{:06}", i + 1)]
            } else {
                vec![]
            };
            (format!("{i:06}"), refs)
        });
        let order = dependency_order(chain);
        assert_eq!(order.first().map(String::as_str), Some("099999"));
        assert_eq!(order.len(), n);
    }
}
