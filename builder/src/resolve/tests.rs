use super::*;
use crate::recipe::SourceLocation;

/// A channel in a temporary directory, written recipe by recipe. Shared with the plan and
/// lockfile tests.
pub(crate) struct TestChannel {
    _dir: tempfile::TempDir,
    pub channel: Channel,
}

impl TestChannel {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs_err::create_dir_all(dir.path().join("pkgs")).expect("mkdir");
        let channel = Channel::open(dir.path()).expect("open");
        Self { _dir: dir, channel }
    }

    /// Writes `pkgs/<name>/<version>.toml` with these dependencies and `extra` TOML appended.
    pub fn recipe_with(&self, name: &str, version: &str, deps: &[(&str, &str)], extra: &str) {
        let mut text = format!("name = \"{name}\"\nversion = \"{version}\"\n\n[dependencies]\n");
        for (dep, req) in deps {
            text.push_str(&format!("{dep} = \"{req}\"\n"));
        }
        text.push_str(&format!("\n[build]\nscript = \"echo {name}\"\n{extra}"));
        let path = self
            .channel
            .recipe_path(name, &version.parse().expect("version"));
        fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs_err::write(path, text).expect("write");
    }

    pub fn recipe(&self, name: &str, version: &str, deps: &[(&str, &str)]) {
        self.recipe_with(name, version, deps, "");
    }

    pub fn resolve(
        &self,
        targets: &[&str],
        lock: Option<&Lockfile>,
        update: &[&str],
    ) -> Result<Graph, ResolveError> {
        let targets: Vec<Target> = targets
            .iter()
            .map(|t| Target::parse(t).expect("target"))
            .collect();
        let update = update.iter().map(|s| (*s).to_owned()).collect();
        resolve(&self.channel, &targets, lock, &update)
    }
}

pub(crate) fn id(text: &str) -> PkgId {
    let (name, version) = text.split_once('@').expect("name@version");
    PkgId::new(name, version.parse().expect("version"))
}

fn deps_of(graph: &Graph, pkg: &str) -> Vec<String> {
    graph.packages[&id(pkg)]
        .deps
        .values()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn edges_take_the_highest_satisfying_version() {
    let t = TestChannel::new();
    t.recipe("app", "1.0.0", &[("lib", "1.2")]);
    for v in ["1.1.0", "1.2.0", "1.4.2", "2.0.0", "1.5.0-beta.1"] {
        t.recipe("lib", v, &[]);
    }
    let graph = t.resolve(&["app"], None, &[]).expect("resolves");
    assert_eq!(graph.roots, [id("app@1.0.0")]);
    // ^1.2: not 2.0.0, and not the pre-release either.
    assert_eq!(deps_of(&graph, "app@1.0.0"), ["lib@1.4.2"]);
    assert_eq!(graph.packages.len(), 2);
    let app = &graph.packages[&id("app@1.0.0")];
    assert_eq!(
        app.recipe_hash,
        Blake3::of(&fs_err::read(&app.recipe_path).expect("read"))
    );
}

#[test]
fn roots_pick_highest_release_or_exactly_what_was_named() {
    let t = TestChannel::new();
    for v in ["1.0.0", "1.2.3", "1.2.4", "2.0.0-rc.1"] {
        t.recipe("hello", v, &[]);
    }
    let root = |target: &str| t.resolve(&[target], None, &[]).expect(target).roots;
    assert_eq!(root("hello"), [id("hello@1.2.4")]);
    assert_eq!(root("hello@1.2.3"), [id("hello@1.2.3")]);
    assert_eq!(root("hello@^1.0"), [id("hello@1.2.4")]);
    assert_eq!(root("hello@2.0.0-rc.1"), [id("hello@2.0.0-rc.1")]);
    let path = t.channel.recipe_path("hello", &"1.0.0".parse().expect("v"));
    assert_eq!(root(&path.to_string_lossy()), [id("hello@1.0.0")]);
    let dir = t.channel.pkgs_dir().join("hello");
    assert_eq!(root(&dir.to_string_lossy()), [id("hello@1.2.4")]);
    let graph = t
        .resolve(&["hello", "hello@1.2.4", "hello@1.0.0"], None, &[])
        .expect("ok");
    assert_eq!(
        graph.roots,
        [id("hello@1.2.4"), id("hello@1.0.0")],
        "deduplicated, in order"
    );
    let err = t
        .resolve(&["hello@1.2.5"], None, &[])
        .expect_err("no such version");
    assert_eq!(
        err.to_string(),
        "no version of `hello` satisfies `=1.2.5` (available: 1.0.0, 1.2.3, 1.2.4, 2.0.0-rc.1); asked for on the command line"
    );
}

#[test]
fn different_packages_may_use_different_versions() {
    let t = TestChannel::new();
    t.recipe("top", "1.0.0", &[("a", "1"), ("b", "1")]);
    t.recipe("a", "1.0.0", &[("ssl", "1")]);
    t.recipe("b", "1.0.0", &[("ssl", "2")]);
    t.recipe("ssl", "1.1.0", &[]);
    t.recipe("ssl", "2.3.0", &[]);
    let graph = t.resolve(&["top"], None, &[]).expect("resolves");
    assert_eq!(deps_of(&graph, "a@1.0.0"), ["ssl@1.1.0"]);
    assert_eq!(deps_of(&graph, "b@1.0.0"), ["ssl@2.3.0"]);
    let order: Vec<String> = graph.topo_order().iter().map(ToString::to_string).collect();
    assert_eq!(
        order,
        ["ssl@1.1.0", "a@1.0.0", "ssl@2.3.0", "b@1.0.0", "top@1.0.0"]
    );
    let closure: Vec<String> = graph
        .closure_of(&id("a@1.0.0"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(closure, ["a@1.0.0", "ssl@1.1.0"]);
    assert_eq!(graph.closure_of(&id("top@1.0.0")).len(), 5);
}

fn locked(graph: &Graph) -> Lockfile {
    let pins = pin_sources(graph, None, &BTreeSet::new(), &mut |_,
                                                                _,
                                                                _|
     -> Result<Pin, ()> {
        panic!("no sources")
    })
    .expect("no sources");
    let store = noodle_store::StoreDir::new("/noodle/store").expect("dir");
    let plans = crate::plan::make_plans(graph, &pins, &store).expect("plans");
    let mut lock = Lockfile::default();
    lock.update(graph, &plans, &store).expect("update");
    lock
}

#[test]
fn locked_edges_stay_until_updated() {
    let t = TestChannel::new();
    t.recipe("app", "1.0.0", &[("lib", "1")]);
    t.recipe("lib", "1.0.0", &[]);
    let lock = locked(&t.resolve(&["app"], None, &[]).expect("resolves"));
    t.recipe("lib", "1.1.0", &[]);

    let graph = t.resolve(&["app"], Some(&lock), &[]).expect("resolves");
    assert_eq!(
        deps_of(&graph, "app@1.0.0"),
        ["lib@1.0.0"],
        "a new version does not move a locked edge"
    );
    for update in ["lib", "app"] {
        let graph = t
            .resolve(&["app"], Some(&lock), &[update])
            .expect("resolves");
        assert_eq!(
            deps_of(&graph, "app@1.0.0"),
            ["lib@1.1.0"],
            "--update {update}"
        );
    }
    let graph = t.resolve(&["app"], None, &[]).expect("resolves");
    assert_eq!(
        deps_of(&graph, "app@1.0.0"),
        ["lib@1.1.0"],
        "without a lock"
    );

    // Editing the recipe releases its edges.
    t.recipe_with("app", "1.0.0", &[("lib", "1")], "# edited\n");
    let graph = t.resolve(&["app"], Some(&lock), &[]).expect("resolves");
    assert_eq!(deps_of(&graph, "app@1.0.0"), ["lib@1.1.0"]);

    // A locked version that no longer satisfies the requirement, or was deleted, is not used.
    t.recipe("app", "1.0.0", &[("lib", "1")]);
    fs_err::remove_file(t.channel.recipe_path("lib", &"1.0.0".parse().expect("v"))).expect("rm");
    let graph = t.resolve(&["app"], Some(&lock), &[]).expect("resolves");
    assert_eq!(deps_of(&graph, "app@1.0.0"), ["lib@1.1.0"]);
}

#[test]
fn unknown_packages_name_who_asked() {
    let t = TestChannel::new();
    t.recipe("hello", "1.0.0", &[("bar", "1")]);
    t.recipe("bar", "1.0.0", &[("foo", "1")]);
    let err = t
        .resolve(&["hello"], None, &[])
        .expect_err("foo is missing");
    assert_eq!(
        err.to_string(),
        "unknown package `foo` (asked for by bar@1.0.0 ← hello@1.0.0); the channel has: bar, hello"
    );
    let err = t.resolve(&["helo"], None, &[]).expect_err("typo");
    assert_eq!(
        err.to_string(),
        "unknown package `helo` (asked for on the command line); the channel has: bar, hello"
    );
}

#[test]
fn unsatisfiable_requirement_shows_the_chain() {
    let t = TestChannel::new();
    t.recipe("app", "1.0.0", &[("mid", "1")]);
    t.recipe("mid", "1.0.0", &[("busybox", ">=1.36, <2")]);
    t.recipe("busybox", "1.34.0", &[]);
    t.recipe("busybox", "1.35.0", &[]);
    let err = t.resolve(&["app"], None, &[]).expect_err("unsatisfiable");
    assert_eq!(
        err.to_string(),
        "no version of `busybox` satisfies `>=1.36, <2` (available: 1.34.0, 1.35.0); required by app@1.0.0 → mid@1.0.0"
    );
}

#[test]
fn cycles_are_named() {
    let t = TestChannel::new();
    t.recipe("top", "1.0.0", &[("a", "1")]);
    t.recipe("a", "1.0.0", &[("b", "1")]);
    t.recipe("b", "1.0.0", &[("a", "1")]);
    let err = t.resolve(&["top"], None, &[]).expect_err("cycle");
    assert_eq!(
        err.to_string(),
        "dependency cycle: a@1.0.0 → b@1.0.0 → a@1.0.0"
    );
    t.recipe("self", "1.0.0", &[("self", "1")]);
    let err = t.resolve(&["self"], None, &[]).expect_err("cycle");
    assert_eq!(err.to_string(), "dependency cycle: self@1.0.0 → self@1.0.0");
}

#[test]
fn recipe_errors_keep_their_position() {
    let t = TestChannel::new();
    t.recipe("app", "1.0.0", &[("lib", "1")]);
    t.recipe_with("lib", "1.0.0", &[], "timeout = \"x\"\n");
    let err = t.resolve(&["app"], None, &[]).expect_err("bad recipe");
    let text = err.to_string();
    assert!(
        text.contains("pkgs/lib/1.0.0.toml:8:11: key `build.timeout`"),
        "{text}"
    );
}

#[test]
fn source_pins_prefer_recipe_then_lock_then_pinner() {
    let t = TestChannel::new();
    let hex = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
    t.recipe_with(
        "app",
        "1.0.0",
        &[],
        &format!("[sources.fixed]\nurl = \"http://h/f\"\npin = \"f@1#blake3={hex}\"\n[sources.loose]\npath = \"/bin/sh\"\n"),
    );
    let graph = t.resolve(&["app"], None, &[]).expect("resolves");
    let mut calls = Vec::new();
    let mut pinner = |r: &Resolved, key: &str, spec: &SourceSpec| -> Result<Pin, String> {
        calls.push(format!("{}/{key}", r.id));
        assert_eq!(spec.location, SourceLocation::Path("/bin/sh".into()));
        Ok(Pin {
            name: "sh".into(),
            version: "0".into(),
            hash: Blake3::of(b"sh"),
        })
    };
    let pins = pin_sources(&graph, None, &BTreeSet::new(), &mut pinner).expect("pins");
    assert_eq!(calls, ["app@1.0.0/loose"]);
    assert_eq!(
        pins[&(id("app@1.0.0"), "fixed".into())].to_string(),
        format!("f@1#blake3={hex}")
    );
    assert_eq!(
        pins[&(id("app@1.0.0"), "loose".into())].store_name(),
        "sh-0"
    );

    let store = noodle_store::StoreDir::new("/noodle/store").expect("dir");
    let plans = crate::plan::make_plans(&graph, &pins, &store).expect("plans");
    let mut lock = Lockfile::default();
    lock.update(&graph, &plans, &store).expect("update");
    let mut fail = |_: &Resolved, _: &str, _: &SourceSpec| -> Result<Pin, String> {
        Err("fetched again".into())
    };
    let again =
        pin_sources(&graph, Some(&lock), &BTreeSet::new(), &mut fail).expect("lock pin reused");
    assert_eq!(again, pins);
    let update = BTreeSet::from(["app".to_owned()]);
    let err = pin_sources(&graph, Some(&lock), &update, &mut fail).expect_err("--update re-pins");
    assert_eq!(err, "fetched again");

    // A moved source is re-pinned.
    t.recipe_with("app", "1.0.0", &[], &format!("[sources.fixed]\nurl = \"http://h/f\"\npin = \"f@1#blake3={hex}\"\n[sources.loose]\npath = \"/bin/ls\"\n"));
    let moved = t.resolve(&["app"], Some(&lock), &[]).expect("resolves");
    let err = pin_sources(&moved, Some(&lock), &BTreeSet::new(), &mut fail).expect_err("moved");
    assert_eq!(err, "fetched again");
}

/// The fast path: a locked channel of 100 recipes resolves, pins and plans with no fetching.
/// (Release builds take a few ms; the bound only catches pathological regressions.)
#[test]
fn a_hundred_locked_recipes_are_quick() {
    let t = TestChannel::new();
    for i in 0..100usize {
        let deps: Vec<(String, String)> = (i.saturating_sub(3)..i)
            .map(|d| (format!("p{d}"), "1".to_owned()))
            .collect();
        let deps: Vec<(&str, &str)> = deps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let source = format!("[sources.src]\nurl = \"http://h/{i}\"\n");
        t.recipe_with(&format!("p{i}"), "1.0.0", &deps, &source);
    }
    let store = noodle_store::StoreDir::new("/noodle/store").expect("dir");
    let pin = |r: &Resolved, _: &str, _: &SourceSpec| -> Result<Pin, ()> {
        Ok(Pin {
            name: r.id.name.clone(),
            version: "1".into(),
            hash: Blake3::of(r.id.name.as_bytes()),
        })
    };
    let run =
        |lock: Option<&Lockfile>,
         pinner: &mut dyn FnMut(&Resolved, &str, &SourceSpec) -> Result<Pin, ()>| {
            let graph = t.resolve(&["p99"], lock, &[]).expect("resolves");
            let pins = pin_sources(&graph, lock, &BTreeSet::new(), pinner).expect("pins");
            let plans = crate::plan::make_plans(&graph, &pins, &store).expect("plans");
            (graph, plans)
        };
    let (graph, plans) = run(None, &mut { pin });
    assert_eq!(graph.packages.len(), 100);
    let mut lock = Lockfile::default();
    lock.update(&graph, &plans, &store).expect("update");

    let start = std::time::Instant::now();
    let mut never = |_: &Resolved, _: &str, _: &SourceSpec| -> Result<Pin, ()> { Err(()) };
    let (graph, plans) = run(Some(&lock), &mut never);
    assert!(lock
        .clone()
        .update(&graph, &plans, &store)
        .expect("update")
        .is_empty());
    let took = start.elapsed();
    eprintln!("100 locked recipes: {took:?}");
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}
