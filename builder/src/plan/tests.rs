use std::collections::BTreeSet;

use super::*;
use crate::resolve::tests::{id, TestChannel};
use crate::resolve::{pin_sources, Graph};

fn store() -> StoreDir {
    StoreDir::new("/noodle/store").expect("valid")
}

fn sample() -> Plan {
    Plan {
        name: "hello".into(),
        version: "1.0.0".into(),
        system: SYSTEM.into(),
        script: "echo \"hi\"\n".into(),
        shell: vec!["$busybox".into(), "sh".into()],
        env: BTreeMap::from([("Z".into(), "1".into()), ("A".into(), "ü".into())]),
        dependencies: BTreeMap::from([("busybox".into(), "/noodle/store/x-busybox-1.35.0".into())]),
        sources: BTreeMap::from([(
            "src".into(),
            PlanSource {
                pin: format!("src@1#blake3={}", "ab".repeat(32))
                    .parse()
                    .expect("pin"),
                path: "/noodle/store/y-src-1".into(),
            },
        )]),
        health: vec![HealthCheck {
            name: "t".into(),
            command: vec!["bin/t".into()],
            timeout: 10,
            retries: 0,
            interval: 1,
            required: true,
            when: Default::default(),
        }],
        activation: None,
    }
}

#[test]
fn canonical_json_is_sorted_and_compact() {
    let plan = sample();
    let golden = concat!(
        r#"{"activation":null,"dependencies":{"busybox":"/noodle/store/x-busybox-1.35.0"},"#,
        r#""env":{"A":"ü","Z":"1"},"#,
        r#""health":[{"command":["bin/t"],"interval":1,"name":"t","required":true,"retries":0,"timeout":10}],"#,
        r#""name":"hello","script":"echo \"hi\"\n","shell":["$busybox","sh"],"#,
        r#""sources":{"src":{"path":"/noodle/store/y-src-1","pin":"src@1#blake3=abababababababababababababababababababababababababababababababab"}},"#,
        r#""system":"x86_64-linux","version":"1.0.0"}"#
    );
    assert_eq!(
        String::from_utf8(plan.canonical_json()).expect("utf-8"),
        golden
    );
    assert_eq!(plan.hash(), Blake3::of(golden.as_bytes()));
    let back: Plan = serde_json::from_slice(&plan.canonical_json()).expect("parses back");
    assert_eq!(back, plan);
    assert_eq!(plan.output_name(), "hello-1.0.0");
    assert_eq!(
        plan.output_path(&store()).expect("path"),
        StorePath::for_output(&store(), &plan.hash(), "hello-1.0.0").expect("path")
    );
}

fn plans_of(graph: &Graph) -> BTreeMap<PkgId, Plan> {
    let mut pinner = |_: &crate::resolve::Resolved, key: &str, _: &_| -> Result<Pin, ()> {
        Ok(Pin {
            name: key.to_owned(),
            version: "1".into(),
            hash: Blake3::of(key.as_bytes()),
        })
    };
    let pins = pin_sources(graph, None, &BTreeSet::new(), &mut pinner).expect("pins");
    make_plans(graph, &pins, &store()).expect("plans")
}

#[test]
fn plans_carry_dependency_outputs_and_source_paths() {
    let t = TestChannel::new();
    t.recipe_with(
        "app",
        "1.0.0",
        &[("lib", "1")],
        "[env]\nX = \"y\"\n[sources.src]\npath = \"/bin/sh\"\n",
    );
    t.recipe("lib", "1.0.0", &[]);
    let plans = plans_of(&t.resolve(&["app"], None, &[]).expect("resolves"));
    let app = &plans[&id("app@1.0.0")];
    let lib_out = plans[&id("lib@1.0.0")].output_path(&store()).expect("path");
    assert_eq!(app.dependencies["lib"], store().display_path(&lib_out));
    let src = &app.sources["src"];
    let expected =
        StorePath::for_source(&store(), &Blake3::of(b"src"), &[], "src-1").expect("path");
    assert_eq!(src.path, store().display_path(&expected));
    assert_eq!(app.env["X"], "y");
    assert_eq!(
        (app.script.as_str(), app.version.as_str()),
        ("echo app", "1.0.0")
    );
}

#[test]
fn a_change_below_changes_every_plan_above() {
    let t = TestChannel::new();
    t.recipe("app", "1.0.0", &[("mid", "1")]);
    t.recipe("mid", "1.0.0", &[("base", "1")]);
    t.recipe("base", "1.0.0", &[]);
    t.recipe("other", "1.0.0", &[]);
    let before = plans_of(&t.resolve(&["app", "other"], None, &[]).expect("resolves"));
    t.recipe_with("base", "1.0.0", &[], "[env]\nCHANGED = \"1\"\n");
    let after = plans_of(&t.resolve(&["app", "other"], None, &[]).expect("resolves"));
    for pkg in ["base@1.0.0", "mid@1.0.0", "app@1.0.0"] {
        assert_ne!(before[&id(pkg)].hash(), after[&id(pkg)].hash(), "{pkg}");
    }
    assert_eq!(before[&id("other@1.0.0")], after[&id("other@1.0.0")]);
}

#[test]
fn timeouts_do_not_change_the_plan() {
    let t = TestChannel::new();
    t.recipe("app", "1.0.0", &[]);
    let before = plans_of(&t.resolve(&["app"], None, &[]).expect("resolves"));
    t.recipe_with("app", "1.0.0", &[], "timeout = 5\nmax-silent = 3\n");
    let after = plans_of(&t.resolve(&["app"], None, &[]).expect("resolves"));
    assert_eq!(before, after);
}

#[test]
fn a_missing_pin_is_an_error() {
    let t = TestChannel::new();
    t.recipe_with("app", "1.0.0", &[], "[sources.src]\npath = \"/bin/sh\"\n");
    let graph = t.resolve(&["app"], None, &[]).expect("resolves");
    let err = make_plans(&graph, &BTreeMap::new(), &store()).expect_err("no pin");
    assert_eq!(
        err.to_string(),
        "app@1.0.0: source `src` has no pin (pin_sources must run before make_plans)"
    );
}
