//! Server-side apply as property tests (issue 20 fuzzing), through the store's own apply
//! path: applying the same configuration twice changes nothing, and a field another
//! manager set (by apply or by update) that a non-forced apply changes is always reported
//! as a conflict, and only such fields are
//! (https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts).
//!
//! Seeded: every run draws the same cases (or those of `PROPTEST_RNG_SEED`); a failure
//! prints the minimal configurations. `PROPTEST_CASES=N` runs more cases.

use std::collections::{BTreeMap, BTreeSet};

use keyward_emulator::Store;
use keyward_emulator::resources::ResourceType;
use keyward_emulator::ssa::Part;
use keyward_emulator::store::{PatchType, WriteOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Value, json};

const SEED: u64 = 20;

fn config(cases: u32) -> Config {
    let env = Config::default();
    let config = Config {
        cases: if std::env::var("PROPTEST_CASES").is_ok() {
            env.cases
        } else {
            cases
        },
        rng_seed: if std::env::var("PROPTEST_RNG_SEED").is_ok() {
            env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        failure_persistence: None,
        ..env
    };
    eprintln!(
        "proptest: {} cases, seed {:?}",
        config.cases, config.rng_seed
    );
    config
}

/// A leaf field a configuration may set; few names, so managers often meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Label(u8),
    Annotation(u8),
    Data(u8),
    Replicas,
    Image(u8),
    Env(u8, u8),
}

impl Slot {
    /// The field as a conflict names it.
    fn path(self) -> String {
        match self {
            Slot::Label(k) => format!(".metadata.labels.l{k}"),
            Slot::Annotation(k) => format!(".metadata.annotations.a{k}"),
            Slot::Data(k) => format!(".data.d{k}"),
            Slot::Replicas => ".spec.replicas".into(),
            Slot::Image(c) => format!(".spec.template.spec.containers[name=\"c{c}\"].image"),
            Slot::Env(c, e) => {
                format!(".spec.template.spec.containers[name=\"c{c}\"].env[name=\"E{e}\"].value")
            }
        }
    }

    /// Where it is in the object, for fields outside lists.
    fn pointer(self) -> Option<String> {
        match self {
            Slot::Label(k) => Some(format!("/metadata/labels/l{k}")),
            Slot::Annotation(k) => Some(format!("/metadata/annotations/a{k}")),
            Slot::Data(k) => Some(format!("/data/d{k}")),
            Slot::Replicas => Some("/spec/replicas".into()),
            Slot::Image(_) | Slot::Env(..) => None,
        }
    }

    /// Whether a merge patch can change it alone (list items cannot: merge patch replaces
    /// whole lists).
    fn patchable(self) -> bool {
        !matches!(self, Slot::Image(_) | Slot::Env(..))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ConfigMap,
    Deployment,
}

type Fields = BTreeMap<Slot, u8>;

fn slot(kind: Kind) -> BoxedStrategy<Slot> {
    let common = prop_oneof![
        (0u8..3).prop_map(Slot::Label),
        (0u8..3).prop_map(Slot::Annotation),
    ];
    match kind {
        Kind::ConfigMap => prop_oneof![common, (0u8..4).prop_map(Slot::Data)].boxed(),
        Kind::Deployment => prop_oneof![
            common,
            Just(Slot::Replicas),
            (0u8..2).prop_map(Slot::Image),
            (0u8..2, 0u8..3).prop_map(|(c, e)| Slot::Env(c, e)),
        ]
        .boxed(),
    }
}

fn fields(kind: Kind) -> impl Strategy<Value = Fields> {
    prop::collection::btree_map(slot(kind), 0u8..3, 0..6)
}

/// The configuration that sets `fields` (and what every manager of the kind must send).
fn render(kind: Kind, name: &str, fields: &Fields) -> Value {
    let mut object = match kind {
        Kind::ConfigMap => {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
        }
        Kind::Deployment => json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": "o"}},
                     "template": {"metadata": {"labels": {"app": "o"}}, "spec": {"containers": []}}}}),
    };
    let mut containers: BTreeMap<u8, Value> = BTreeMap::new();
    for (slot, value) in fields {
        let text = format!("v{value}");
        match *slot {
            Slot::Label(k) => object["metadata"]["labels"][format!("l{k}")] = json!(text),
            Slot::Annotation(k) => object["metadata"]["annotations"][format!("a{k}")] = json!(text),
            Slot::Data(k) => object["data"][format!("d{k}")] = json!(text),
            Slot::Replicas => object["spec"]["replicas"] = json!(value + 1),
            Slot::Image(c) => {
                containers
                    .entry(c)
                    .or_insert_with(|| json!({"name": format!("c{c}")}))["image"] =
                    json!(format!("img:{value}"))
            }
            Slot::Env(c, e) => {
                let container = containers
                    .entry(c)
                    .or_insert_with(|| json!({"name": format!("c{c}")}));
                if container["env"].is_null() {
                    container["env"] = json!([]);
                }
                container["env"]
                    .as_array_mut()
                    .expect("env list")
                    .push(json!({"name": format!("E{e}"), "value": text}));
            }
        }
    }
    if kind == Kind::Deployment {
        object["spec"]["template"]["spec"]["containers"] = json!(if containers.is_empty() {
            vec![json!({"name": "c9", "image": "base"})]
        } else {
            containers.into_values().collect::<Vec<_>>()
        });
    }
    object
}

fn resource(store: &Store, kind: Kind) -> ResourceType {
    match kind {
        Kind::ConfigMap => store.resource("", "v1", "configmaps"),
        Kind::Deployment => store.resource("apps", "v1", "deployments"),
    }
    .expect("served")
}

fn apply(
    store: &Store,
    kind: Kind,
    name: &str,
    manager: &str,
    fields: &Fields,
    force: bool,
) -> Result<Value, keyward_emulator::error::ApiError> {
    let opts = WriteOptions {
        field_manager: Some(manager.into()),
        force,
        ..Default::default()
    };
    store
        .patch(
            &resource(store, kind),
            "default",
            name,
            PatchType::Apply,
            render(kind, name, fields),
            Part::Main,
            &opts,
        )
        .map(|w| w.object)
}

fn conflicts(error: &keyward_emulator::error::ApiError) -> BTreeSet<(String, String)> {
    error.details.as_ref().expect("details")["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| {
            (
                c["field"].as_str().expect("field").to_string(),
                c["message"].as_str().expect("message").to_string(),
            )
        })
        .collect()
}

/// A fresh object name per case: the cases share one store (a store per case costs more
/// than the case).
fn next_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "o{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::ConfigMap), Just(Kind::Deployment)]
}

#[test]
fn applying_the_same_configuration_twice_changes_nothing() {
    let cases = kind().prop_flat_map(|k| (Just(k), fields(k), fields(k)));
    let store = Store::new(100);
    TestRunner::new(config(2000))
        .run(&cases, |(kind, other, mine)| {
            let name = next_name();
            if !other.is_empty() {
                apply(&store, kind, &name, "other", &other, false).expect("first apply");
            }
            let first = apply(&store, kind, &name, "me", &mine, true).expect("forced apply");
            let second = apply(&store, kind, &name, "me", &mine, false);
            prop_assert!(second.is_ok(), "the same apply again refused: {:?}", second);
            prop_assert_eq!(&second.expect("checked"), &first);
            let stored = store
                .get(&resource(&store, kind), "default", &name)
                .expect("stored");
            prop_assert_eq!(
                &stored["metadata"]["resourceVersion"],
                &first["metadata"]["resourceVersion"]
            );
            Ok(())
        })
        .expect("idempotent apply");
}

#[test]
fn a_field_another_applier_set_is_a_conflict_when_changed_without_force() {
    let cases = kind().prop_flat_map(|k| (Just(k), fields(k), fields(k)));
    let store = Store::new(100);
    TestRunner::new(config(2000))
        .run(&cases, |(kind, theirs, mine)| {
            let name = next_name();
            apply(&store, kind, &name, "them", &theirs, false).expect("first apply");
            let expected: BTreeSet<(String, String)> = mine
                .iter()
                .filter(|(slot, value)| theirs.get(*slot).is_some_and(|v| v != *value))
                .map(|(slot, _)| (slot.path(), "conflict with \"them\"".to_string()))
                .collect();
            match apply(&store, kind, &name, "me", &mine, false) {
                Ok(_) => prop_assert!(expected.is_empty(), "unreported: {:?}", expected),
                Err(e) => {
                    prop_assert_eq!(e.code, 409);
                    prop_assert_eq!(conflicts(&e), expected);
                }
            }
            // Forced, it succeeds and every field has my value.
            let forced = apply(&store, kind, &name, "me", &mine, true).expect("forced apply");
            let again = render(kind, &name, &mine);
            for pointer in mine.keys().filter_map(|s| s.pointer()) {
                prop_assert_eq!(
                    forced.pointer(&pointer),
                    again.pointer(&pointer),
                    "{}",
                    pointer
                );
            }
            Ok(())
        })
        .expect("conflicts with another applier");
}

#[test]
fn a_field_an_updater_changed_is_a_conflict_for_the_applier() {
    let cases = kind().prop_flat_map(|k| {
        (
            Just(k),
            fields(k),
            fields(k).prop_map(|f| {
                f.into_iter()
                    .filter(|(s, _)| s.patchable())
                    .collect::<Fields>()
            }),
        )
    });
    let store = Store::new(100);
    TestRunner::new(config(2000))
        .run(&cases, |(kind, mine, edits)| {
            let name = next_name();
            let rt = resource(&store, kind);
            apply(&store, kind, &name, "me", &mine, false).expect("first apply");
            // An editor changes some fields with a merge patch (an Update manager).
            let mut patch = render(kind, &name, &edits);
            for drop in ["apiVersion", "kind"] {
                patch.as_object_mut().expect("object").remove(drop);
            }
            if kind == Kind::Deployment {
                patch["spec"]
                    .as_object_mut()
                    .expect("spec")
                    .remove("template");
                patch["spec"]
                    .as_object_mut()
                    .expect("spec")
                    .remove("selector");
            }
            let opts = WriteOptions {
                field_manager: Some("editor".into()),
                ..Default::default()
            };
            store
                .patch(
                    &rt,
                    "default",
                    &name,
                    PatchType::Merge,
                    patch,
                    Part::Main,
                    &opts,
                )
                .expect("merge patch");
            let expected: BTreeSet<(String, String)> = mine
                .iter()
                .filter(|(slot, value)| edits.get(*slot).is_some_and(|v| v != *value))
                .map(|(slot, _)| {
                    let message = format!("conflict with \"editor\" using {}", rt.api_version());
                    (slot.path(), message)
                })
                .collect();
            match apply(&store, kind, &name, "me", &mine, false) {
                Ok(_) => prop_assert!(expected.is_empty(), "unreported: {:?}", expected),
                Err(e) => {
                    prop_assert_eq!(e.code, 409);
                    prop_assert_eq!(conflicts(&e), expected);
                }
            }
            Ok(())
        })
        .expect("conflicts with an updater");
}
