//! The README, run as a newcomer would: every `sh` block in order, in one bash session, in
//! a fresh directory, against a fresh playground, with the keyward this build made on PATH
//! (standing in for `cargo install`) and the suite's kubectl. A block may carry a marker
//! comment on the line before it:
//! - `<!-- readme-test: skip: WHY -->` is not run (a real cluster, the suite itself);
//! - `<!-- readme-test: stand-in: WHY -->` is replaced by what the test already did;
//! - `<!-- readme-test: background -->` runs in the background; the next block starts once
//!   it has printed its banner (the playground, "in a terminal of its own").
//!
//! Any other marker (`take-kubectl`, …) names a block other tests use; it runs here too.

mod common;

use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Run,
    Skip(String),
    StandIn(String),
    Background,
}

#[derive(Debug)]
struct Block {
    line: usize,
    mode: Mode,
    body: String,
}

/// Every fenced `sh` block of `text`, with the marker on the line before it.
fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == "```sh" {
            let marker = i
                .checked_sub(1)
                .map(|j| lines[j].trim())
                .and_then(|l| l.strip_prefix("<!-- readme-test:"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(str::trim)
                .unwrap_or("");
            let mode = if let Some(why) = marker.strip_prefix("skip:") {
                Mode::Skip(why.trim().to_string())
            } else if let Some(why) = marker.strip_prefix("stand-in:") {
                Mode::StandIn(why.trim().to_string())
            } else if marker == "background" {
                Mode::Background
            } else {
                Mode::Run
            };
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim_end() != "```" {
                end += 1;
            }
            out.push(Block {
                line: i + 1,
                mode,
                body: lines[start..end].join("\n"),
            });
            i = end;
        }
        i += 1;
    }
    out
}

fn readme() -> String {
    std::fs::read_to_string(common::root().join("README.md")).expect("README.md")
}

#[test]
fn markers_say_why_and_the_walk_through_has_no_skips() {
    let text = readme();
    let all = blocks(&text);
    assert!(all.len() >= 10, "{} sh blocks", all.len());
    for b in &all {
        if let Mode::Skip(why) | Mode::StandIn(why) = &b.mode {
            assert!(
                why.len() > 10,
                "README line {}: the marker must say why",
                b.line
            );
        }
    }
    let walk_start = text.find("## First steps").expect("a First steps section");
    let walk_end = walk_start + text[walk_start..].find("\n## ").expect("a next section");
    let first_line = text[..walk_start].lines().count() + 1;
    let last_line = text[..walk_end].lines().count();
    let in_walk: Vec<&Block> = all
        .iter()
        .filter(|b| (first_line..=last_line).contains(&b.line))
        .collect();
    assert!(in_walk.len() >= 5);
    assert!(
        in_walk.iter().all(|b| !matches!(b.mode, Mode::Skip(_))),
        "the walk-through skips nothing"
    );
}

/// The whole README as one bash script.
fn script(all: &[Block]) -> String {
    let mut s =
        String::from("set -eo pipefail\ntrap 'kill $PLAYGROUND 2>/dev/null || true' EXIT\n");
    for b in all {
        match &b.mode {
            Mode::Skip(why) => {
                s.push_str(&format!(
                    "echo '### README line {}: skipped ({})'\n",
                    b.line,
                    why.replace('\'', "")
                ));
            }
            Mode::StandIn(why) => {
                s.push_str(&format!(
                    "echo '### README line {}: stand-in ({})'\n",
                    b.line,
                    why.replace('\'', "")
                ));
            }
            Mode::Background => {
                s.push_str(&format!(
                    "echo '### README line {}: in the background'\n",
                    b.line
                ));
                // One command, so `$!` is its process (a subshell's would not stop it).
                assert_eq!(
                    b.body.trim().lines().count(),
                    1,
                    "README line {}: one command in the background",
                    b.line
                );
                s.push_str(&format!(
                    "{} > background.out 2>&1 &\nPLAYGROUND=$!\n",
                    b.body.trim()
                ));
                s.push_str(
                    "for _ in $(seq 600); do grep -q 'Press Ctrl-C' background.out && break; \
                     kill -0 $PLAYGROUND || { cat background.out; exit 1; }; sleep 0.1; done\n\
                     grep -q 'Press Ctrl-C' background.out || { cat background.out; exit 1; }\n",
                );
            }
            Mode::Run => {
                s.push_str(&format!("echo '### README line {}'\n{}\n", b.line, b.body));
            }
        }
    }
    s.push_str("echo '### README done'\n");
    s
}

#[test]
fn every_sh_block_of_the_readme_runs_in_order_against_a_fresh_playground() {
    let all = blocks(&readme());
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    // `cargo install` stands in: the keyward this build made, on PATH.
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyward"), bin.join("keyward"))
        .expect("keyward on PATH");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    std::os::unix::fs::symlink(common::root().join("examples"), work.join("examples"))
        .expect("examples");
    let kubectl_dir = common::kubectl_path()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        kubectl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script_path = dir.path().join("readme.sh");
    std::fs::write(&script_path, script(&all)).expect("script");
    let out = Command::new("bash")
        .arg(&script_path)
        .current_dir(&work)
        .env("PATH", path)
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let background = std::fs::read_to_string(work.join("background.out")).unwrap_or_default();
    assert!(
        out.status.success() && stdout.contains("### README done"),
        "the README stopped working (exit {:?}).\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- playground\n{background}",
        out.status.code()
    );
    // What the walk-through promises a newcomer sees.
    assert!(stdout.contains("VALID default/billing-api"), "{stdout}");
    assert!(stdout.contains("\"valid\":true"), "{stdout}");
    assert!(stdout.contains("Rotated"), "{stdout}");
    assert!(background.contains("export KUBECONFIG="), "{background}");
    // Not 8080, where kubectl without a kubeconfig looks for an API server.
    assert!(
        background.contains("verifier:        http://127.0.0.1:8180"),
        "{background}"
    );
    // The keys the README wrote to files never reached the terminal.
    for file in ["acme.key", "token.txt"] {
        let key = std::fs::read_to_string(work.join(file)).expect(file);
        let key = key.trim();
        assert!(key.len() >= 20, "{file} holds a key");
        assert!(!stdout.contains(key) && !stderr.contains(key) && !background.contains(key));
    }
}
