//! The `keyward` command line (DESIGN §8).

mod playground;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::crd;
use crate::telemetry::{self, LogFormat};

pub use playground::{FIELD_MANAGER, install_crds};

#[derive(Parser, Debug)]
#[command(
    name = "keyward",
    version,
    about = "API keys as Kubernetes custom resources"
)]
pub struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the three CustomResourceDefinitions as multi-document YAML.
    Crds {
        /// Write one file per CRD (`apikeys.yaml`, …) into this folder instead.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Try keyward with no cluster: an in-memory Kubernetes API, the CRDs and the
    /// controllers, until interrupted.
    Playground(playground::PlaygroundArgs),
}

/// Parses the command line, runs the command and maps failures to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { output_dir: None } => {
            print!("{}", crd::all_yaml());
            Ok(())
        }
        Command::Crds {
            output_dir: Some(dir),
        } => write_crds(&dir),
        Command::Playground(args) => {
            telemetry::init(cli.log_format, "info,kube=warn,hyper=warn,tower=warn");
            runtime().and_then(|rt| {
                rt.block_on(playground::run(args))
                    .map_err(|e| e.to_string())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keyward: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))
}

fn write_crds(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for crd in crd::crds() {
        let path = dir.join(crd::file_name(&crd));
        std::fs::write(&path, crd::to_yaml(&crd))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
