//! Serves an empty emulator until interrupted, for tools that expect a cluster behind a
//! kubeconfig (e.g. keyward's end-to-end suite in KEYWARD_TEST_KUBECONFIG mode).
//!
//!     cargo run -p keyward-emulator --example serve -- /tmp/emulator.kubeconfig

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "emulator.kubeconfig".into());
    let emulator = keyward_emulator::Emulator::start().await?;
    emulator.write_kubeconfig(std::path::Path::new(&path))?;
    println!(
        "serving {} (kubeconfig {path}); Ctrl-C stops",
        emulator.url()
    );
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    Ok(())
}
