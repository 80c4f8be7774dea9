//! Serves an empty emulator until interrupted, for tools that expect a cluster behind a
//! kubeconfig (e.g. keyward's end-to-end suite in KEYWARD_TEST_KUBECONFIG mode).
//!
//!     cargo run -p keyward-emulator --example serve -- /tmp/emulator.kubeconfig [--watch-window SECONDS]
//!
//! `--watch-window` sets how long changes stay in the watch history (default 300): watches
//! resuming from older versions get 410 Gone and must relist.

use std::time::Duration;

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
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "--watch-window takes a number of seconds",
                        )
                    })?;
                options.watch_window = Duration::from_secs_f64(seconds);
            }
            _ if path.is_none() => path = Some(arg),
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("unexpected argument {other:?}"),
                ));
            }
        }
    }
    let path = path.unwrap_or_else(|| "emulator.kubeconfig".into());
    let emulator = keyward_emulator::Emulator::start_with(options).await?;
    emulator.write_kubeconfig(std::path::Path::new(&path))?;
    println!(
        "serving {} (kubeconfig {path}); Ctrl-C stops",
        emulator.url()
    );
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    Ok(())
}
