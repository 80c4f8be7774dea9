//! `docs/api.md` is generated from the CRDs and must match the generator, like `crds/`.
//! With `KEYWARD_UPDATE_DOCS=1` the first test rewrites the generated pages instead of
//! comparing, and removes generated pages the generator no longer writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use keyward::crd::{self, reference};

const UPDATE: &str = "KEYWARD_UPDATE_DOCS";

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

/// File name under `docs/` → contents, for every page the generator writes.
fn generated() -> BTreeMap<String, String> {
    BTreeMap::from([("api.md".to_string(), reference::markdown(&crd::crds()))])
}

/// The pages in `docs/` that carry the generated marker; hand-written pages are left alone.
fn generated_on_disk(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    let mut found = BTreeMap::new();
    for entry in entries {
        let path = entry.expect("readable entry").path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if text.lines().next() == Some(reference::GENERATED_MARKER) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            found.insert(name, text);
        }
    }
    found
}

/// Where two texts first differ, to point at the stale part of a long page.
fn first_difference(expected: &str, found: &str) -> String {
    let mut found_lines = found.lines();
    for (i, want) in expected.lines().enumerate() {
        match found_lines.next() {
            Some(got) if got == want => {}
            got => {
                return format!(
                    "line {}: expected\n  {want}\nfound\n  {}",
                    i + 1,
                    got.unwrap_or("(end of file)")
                );
            }
        }
    }
    "the end of the file".to_string()
}

#[test]
fn docs_folder_matches_the_generator() {
    let dir = docs_dir();
    let expected = generated();
    let on_disk = generated_on_disk(&dir);
    if std::env::var(UPDATE).is_ok_and(|v| !v.is_empty() && v != "0") {
        std::fs::create_dir_all(&dir).expect("docs/ can be created");
        for (name, text) in &expected {
            std::fs::write(dir.join(name), text).expect("docs/ is writable");
        }
        for name in on_disk.keys().filter(|n| !expected.contains_key(*n)) {
            std::fs::remove_file(dir.join(name)).expect("stale page can be removed");
        }
        return;
    }
    let stale: Vec<&String> = on_disk
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/ holds generated pages the generator no longer writes (a kind removed or \
         renamed?): {stale:?}; run `{}` to remove them",
        reference::REGENERATE
    );
    for (name, text) in &expected {
        let Ok(found) = std::fs::read_to_string(dir.join(name)) else {
            panic!(
                "docs/{name} is missing: run `{}` to write it",
                reference::REGENERATE
            );
        };
        assert!(
            found == *text,
            "docs/{name} differs from the CRDs in src/crd/ at {}\nrun `{}` to regenerate it",
            first_difference(text, &found),
            reference::REGENERATE
        );
    }
}

/// Every `](#…)` link on the page reaches an anchor, and no anchor is defined twice.
#[test]
fn links_within_the_page_reach_an_anchor() {
    let page = reference::markdown(&crd::crds());
    let mut anchors = BTreeSet::new();
    for line in page.lines() {
        // Kind sections are found by their heading, as GitHub spells a one-word heading.
        if let Some(kind) = line.strip_prefix("## ") {
            assert!(
                kind.chars().all(|c| c.is_ascii_alphanumeric()),
                "kind heading {kind:?}"
            );
            assert!(anchors.insert(kind.to_lowercase()), "two sections {kind}");
        }
        for (start, _) in line.match_indices("<a id=\"") {
            let rest = &line[start + 7..];
            let id = &rest[..rest.find('"').expect("closing quote")];
            assert!(anchors.insert(id.to_string()), "anchor {id} defined twice");
        }
    }
    let mut links = 0;
    for (start, _) in page.match_indices("](#") {
        let rest = &page[start + 3..];
        let target = &rest[..rest.find(')').expect("closing parenthesis")];
        assert!(
            anchors.contains(target),
            "link to #{target}, which is not on the page"
        );
        links += 1;
    }
    // The contents list, and each kind's spec and status.
    assert!(links >= 9, "only {links} links");
}

/// Walks a schema and collects the path of every field, as the page spells it.
fn field_paths(node: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    for (name, field) in node.properties.iter().flatten() {
        let here = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        out.push(here.clone());
        field_paths(field, &here, out);
        if let Some(JSONSchemaPropsOrArray::Schema(items)) = &field.items {
            field_paths(items, &format!("{here}[]"), out);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(values)) = &field.additional_properties {
            field_paths(values, &format!("{here}.*"), out);
        }
    }
}

#[test]
fn every_field_of_every_kind_has_a_row() {
    let page = reference::markdown(&crd::crds());
    for crd in crd::crds() {
        let kind = &crd.spec.names.kind;
        let section = page
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{kind}\n")))
            .unwrap_or_else(|| panic!("no section for {kind}"));
        let root = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("every version has a schema");
        let mut paths = Vec::new();
        field_paths(root, "", &mut paths);
        assert!(paths.len() > 10, "{kind} has only {paths:?}");
        for path in paths {
            assert!(
                section.contains(&format!("\n| `{path}` |")),
                "{kind}: no row for {path}"
            );
        }
    }
}

/// An example whose header points at the page points at its own kind's section.
#[test]
fn examples_point_to_their_kind_on_the_page() {
    let page = reference::markdown(&crd::crds());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut pointers = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        let Some((_, anchor)) = text
            .lines()
            .next()
            .and_then(|l| l.split_once("docs/api.md#"))
        else {
            continue;
        };
        let kind = text
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .map(str::trim)
            .expect("an example has a kind");
        assert_eq!(anchor, kind.to_lowercase(), "{}", path.display());
        assert!(
            page.contains(&format!("\n## {kind}\n")),
            "{}: no section for {kind}",
            path.display()
        );
        pointers += 1;
    }
    assert!(pointers >= 3, "only {pointers} examples point to the page");
}
