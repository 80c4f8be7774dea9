//! The `keyward` command line (DESIGN §8).

mod connect;
mod error;
mod lookup;
mod playground;
pub mod pool;
pub mod providers;
mod reveal;
mod rotate;
mod run;
mod serve;
mod signals;
mod status;
mod table;
mod verifier;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::crd;
use crate::telemetry::{self, LogFormat};

pub use connect::{ConnectArgs, NamespaceArg};
pub use error::CliError;
pub use playground::install_crds;

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
    #[command(flatten)]
    pub connect: ConnectArgs,
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
    /// Run the controllers against the cluster of the kubeconfig, until interrupted.
    Run(run::RunArgs),
    /// Ask a verifier whether a key is valid (exit 0 if it is). The key is read from stdin
    /// when KEY is `-` or absent, so it never shows in process lists.
    Verify {
        /// The key, or `-` for stdin.
        key: Option<String>,
        /// The verifier.
        #[arg(long, default_value = "http://127.0.0.1:8180")]
        url: String,
        /// Trust this PEM CA bundle too, for an https:// verifier with its own CA.
        #[arg(long, value_name = "PATH")]
        ca_file: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Serve the verifier alone: answers gateways' "is this key valid?".
    Verifier(verifier::VerifierArgs),
    /// Print a ShowOnce key once; afterwards only its hash exists.
    Reveal {
        /// The ApiKey.
        name: String,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
    /// Rotate an ApiKey now (sets the keyward.dev/rotate annotation to a new value).
    Rotate {
        /// The ApiKey.
        name: String,
        #[command(flatten)]
        namespace: NamespaceArg,
        /// Also end every previous key's grace at once (a leaked key).
        #[arg(long)]
        revoke_previous: bool,
    },
    /// Show an ApiKey's key history (never a key).
    History {
        /// The ApiKey.
        name: String,
        #[command(flatten)]
        namespace: NamespaceArg,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Single-use key pools: take a key, or show the pools.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Validate a ProviderCredential now and print the verdict (exit 0 only when Valid).
    Validate {
        /// The ProviderCredential.
        name: String,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
    /// The provider dashboard: display name, provider, phase, masked key, last validated,
    /// capabilities.
    Providers {
        #[command(flatten)]
        namespace: NamespaceArg,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Print a shell completion script: `source <(keyward completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// List the namespace's ApiKeys: owner, preview, readiness, issue time, next rotation, usage.
    Status {
        #[command(flatten)]
        namespace: NamespaceArg,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

/// `keyward pool …`
#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Take the oldest key of a pool, exactly once: prints only the key on stdout; exits 1
    /// when the pool is empty.
    Take {
        /// The ApiKeyPool.
        pool: String,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
    /// Show pools: readiness, available / size, keys generated and consumed, oldest key.
    Status {
        /// One pool (default: all in the namespace).
        pool: Option<String>,
        #[command(flatten)]
        namespace: NamespaceArg,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

/// Output formats of commands that print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Parses the command line, runs the command and maps failures to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let connect = cli.connect.clone();
    let result = match cli.command {
        Command::Crds { output_dir: None } => {
            print!("{}", crd::all_yaml());
            Ok(())
        }
        Command::Crds {
            output_dir: Some(dir),
        } => write_crds(&dir),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut script);
            std::io::stdout()
                .write_all(&script)
                .map_err(CliError::output("the completion script"))
        }
        Command::Playground(args) => {
            telemetry::init(cli.log_format, "info,kube=warn,hyper=warn,tower=warn");
            block_on(async { Ok(playground::run(args).await?) })
        }
        Command::Run(args) => {
            telemetry::init(cli.log_format, "info,kube=warn,hyper=warn,tower=warn");
            block_on(async { Ok(run::run(args, connect).await?) })
        }
        Command::Verify {
            key,
            url,
            ca_file,
            output,
        } => {
            let key = match verify::read_key(key.as_deref()) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("keyward: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut valid = false;
            let result = block_on(async {
                let answer = verify::ask(&url, ca_file.as_deref(), &key).await?;
                valid = answer["valid"].as_bool() == Some(true);
                match output {
                    Output::Json => println!("{answer}"),
                    Output::Table => println!("{}", verify::describe(&answer)),
                }
                Ok(())
            });
            return match result {
                Ok(()) if valid => ExitCode::SUCCESS,
                Ok(()) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("keyward: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Verifier(args) => {
            telemetry::init(cli.log_format, "info,kube=warn,hyper=warn,tower=warn");
            block_on(async { Ok(verifier::run(args, connect).await?) })
        }
        Command::Reveal { name, namespace } => {
            telemetry::init(cli.log_format, "warn");
            block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let key = reveal::reveal(&client, &ns, &name).await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", key.expose()).map_err(CliError::output("the key"))?;
                eprintln!(
                    "keyward: this is the only time the key of {ns}/{name} is shown; only its hash remains."
                );
                Ok(())
            })
        }
        Command::Rotate {
            name,
            namespace,
            revoke_previous,
        } => {
            telemetry::init(cli.log_format, "warn");
            block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let value = rotate::request(&client, &ns, &name, revoke_previous).await?;
                let also = if revoke_previous {
                    " and revocation of previous keys"
                } else {
                    ""
                };
                println!(
                    "apikey.keyward.dev/{name} rotation{also} requested ({}={value})",
                    crd::annotations::ROTATE
                );
                Ok(())
            })
        }
        Command::History {
            name,
            namespace,
            output,
        } => {
            telemetry::init(cli.log_format, "warn");
            block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let entries = rotate::history(&client, &ns, &name).await?;
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
                    Output::Table => println!("{}", rotate::history_table(&entries)),
                }
                Ok(())
            })
        }
        Command::Pool {
            command: PoolCommand::Take { pool, namespace },
        } => {
            telemetry::init(cli.log_format, "warn");
            block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let key = pool::take(&client, &ns, &pool).await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", key.expose()).map_err(CliError::output("the key"))
            })
        }
        Command::Pool {
            command:
                PoolCommand::Status {
                    pool,
                    namespace,
                    all_namespaces,
                },
        } => {
            telemetry::init(cli.log_format, "warn");
            block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let scope = (!all_namespaces).then_some(ns.as_str());
                let pools = pool::list(&client, scope, pool.as_deref())
                    .await
                    .map_err(CliError::list("ApiKeyPools"))?;
                if pools.is_empty() {
                    eprintln!("No ApiKeyPools.");
                } else {
                    println!("{}", pool::table(&pools, all_namespaces));
                }
                Ok(())
            })
        }
        Command::Validate { name, namespace } => {
            telemetry::init(cli.log_format, "warn");
            let mut valid = false;
            let result = block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let pc = providers::validate(&client, &ns, &name).await?;
                valid = providers::is_valid(&pc);
                println!("{}", providers::describe(&pc));
                Ok(())
            });
            return match result {
                Ok(()) if valid => ExitCode::SUCCESS,
                Ok(()) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("keyward: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Providers {
            namespace,
            all_namespaces,
        } => {
            telemetry::init(cli.log_format, "warn");
            block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let scope = (!all_namespaces).then_some(ns.as_str());
                let items = providers::list(&client, scope)
                    .await
                    .map_err(CliError::list("ProviderCredentials"))?;
                if items.is_empty() {
                    eprintln!("No ProviderCredentials.");
                } else {
                    println!("{}", providers::table(&items, all_namespaces));
                }
                Ok(())
            })
        }
        Command::Status {
            namespace,
            all_namespaces,
        } => {
            telemetry::init(cli.log_format, "warn");
            block_on(async {
                let (client, ns) = connect.connect(namespace.namespace.as_deref()).await?;
                let scope = (!all_namespaces).then_some(ns.as_str());
                let items = status::list(&client, scope)
                    .await
                    .map_err(CliError::list("ApiKeys"))?;
                if items.is_empty() {
                    eprintln!(
                        "No ApiKeys in {}.",
                        if all_namespaces {
                            "any namespace".to_string()
                        } else {
                            format!("namespace {ns}")
                        }
                    );
                } else {
                    println!("{}", status::table(&items, all_namespaces));
                }
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyward: {error}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(work: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(work)
}

fn write_crds(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    for crd in crd::crds() {
        let path = dir.join(crd::file_name(&crd));
        std::fs::write(&path, crd::to_yaml(&crd))
            .map_err(|source| CliError::File { path, source })?;
    }
    Ok(())
}
