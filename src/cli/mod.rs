//! The `keyward` command line (DESIGN §8).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::crd;

#[derive(Parser, Debug)]
#[command(
    name = "keyward",
    version,
    about = "API keys as Kubernetes custom resources"
)]
pub struct Cli {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keyward: {message}");
            ExitCode::FAILURE
        }
    }
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
