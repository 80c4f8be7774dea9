//! Serves an empty emulator until interrupted, for tools that expect a cluster behind a
//! kubeconfig (e.g. keyward's end-to-end suite in KEYWARD_TEST_KUBECONFIG mode, or the real
//! `keyward run` under faults).
//!
//!     cargo run -p keyward-emulator --example serve -- /tmp/emulator.kubeconfig \
//!         [--watch-window SECONDS] [--faults SPEC]
//!
//! `--watch-window` sets how long changes stay in the watch history (default 300): watches
//! resuming from older versions get 410 Gone and must relist.
//!
//! `--faults SPEC` injects faults into a seeded random fraction of requests. SPEC is
//! comma-separated `key=value` settings, lists separated by `|`:
//!
//! | setting        | meaning                                                          | default |
//! |----------------|------------------------------------------------------------------|---------|
//! | `fraction`     | share of matching requests that get a fault, 0 to 1 (required)   |         |
//! | `seed`         | seed of the draws: the same seed and requests, the same faults   | clock   |
//! | `verbs`        | get, list, watch, create, update, patch, delete, deletecollection | all    |
//! | `resources`    | plurals; `apikeys` covers `apikeys/status`, which names only that | all    |
//! | `faults`       | kinds drawn from, uniformly among those that fit the verb (below) | all    |
//! | `hang-timeout` | answer hung requests 504 after this long, as kube-apiserver does | never   |
//!
//! Kinds of fault: `409` (writes) or a 5xx code such as `500`/`503`; `429[:Ns]` with
//! `Retry-After` (default 1s); `fail-after` (the write is done, the answer is 500);
//! `hang` (nothing done, no answer); `hang-after` (the write is done, no answer);
//! `latency[:D]` (default 200ms); `cut-watch[:D]` (a watch's connection breaks mid-stream
//! within D, default 1s); `expire-watch` (a watch gets 410 Gone and must relist).
//! Durations: `250ms`, `1.5s`, `2m`. What a request gets depends only on the seed and how
//! many requests with the same verb, resource, namespace and name came before it.
//!
//!     --faults 'fraction=0.1,seed=42,verbs=create|patch|update,resources=secrets|apikeys,faults=500|429:2s|fail-after|hang-after|latency:200ms,hang-timeout=60s'
//!
//! The spec in force (seed included) is printed at start; the faults injected, by kind, on
//! Ctrl-C.

use std::time::Duration;

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut path = None;
    let mut options = keyward_emulator::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--watch-window" => {
                let seconds = args
                    .next()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| invalid("--watch-window takes a number of seconds".into()))?;
                options.watch_window = Duration::from_secs_f64(seconds);
            }
            "--faults" => {
                let spec = args.next().ok_or_else(|| {
                    invalid("--faults takes a spec such as fraction=0.1,seed=42".into())
                })?;
                let faults = spec
                    .parse::<keyward_emulator::RandomFaults>()
                    .map_err(|e| invalid(format!("--faults: {e}")))?;
                options.faults = Some(faults);
            }
            _ if path.is_none() => path = Some(arg),
            other => return Err(invalid(format!("unexpected argument {other:?}"))),
        }
    }
    let path = path.unwrap_or_else(|| "emulator.kubeconfig".into());
    let emulator = keyward_emulator::Emulator::start_with(options).await?;
    emulator.write_kubeconfig(std::path::Path::new(&path))?;
    println!(
        "serving {} (kubeconfig {path}); Ctrl-C stops",
        emulator.url()
    );
    if let Some(faults) = emulator.hooks().random_faults() {
        println!("faults: {faults}");
    }
    tokio::signal::ctrl_c().await?;
    if emulator.hooks().random_faults().is_some() {
        let injected: Vec<String> = emulator
            .hooks()
            .injected()
            .iter()
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect();
        println!("faults injected: {}", injected.join(" "));
    }
    emulator.shutdown().await;
    Ok(())
}
