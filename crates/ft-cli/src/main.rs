//! `ft`: fine-tune open-weight LLMs from one declarative YAML file.
//!
//! The binary is a thin layer over `ft-pipeline`: it parses arguments, sets
//! up logging, loads and validates the config, and maps outcomes to exit
//! codes: 0 success, 1 invalid input (config problems), 2 a stage that is
//! not built yet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ft_pipeline::{Loaded, load_file};

mod import;
mod progress;

/// Fine-tune open-weight LLMs (Llama, Qwen, Mistral, SmolLM) from one YAML
/// file: prepare data, train QLoRA/LoRA, merge, export GGUF.
#[derive(Parser, Debug)]
#[command(name = "ft", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// A config file plus `--set` overrides.
#[derive(Args, Debug)]
struct ConfigArgs {
    /// The config file (train.yml).
    config: PathBuf,
    /// Override a config value, e.g. `--set train.learning_rate=1e-4`
    /// (repeatable; validated like the file).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline: prepare → train → merge/export when configured.
    Run(ConfigArgs),
    /// Prepare data only (load, render templates, tokenize, mask, pack).
    Preprocess {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Print N prepared samples with the trained tokens marked.
        #[arg(long, value_name = "N")]
        debug: Option<usize>,
    },
    /// Merge the trained adapter in `output_dir` into the base model.
    MergeLora(ConfigArgs),
    /// Export a GGUF file for llama.cpp / Ollama.
    Export {
        /// The config file (or use --model).
        config: Option<PathBuf>,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        /// GGUF tensor type.
        #[arg(long, value_enum, default_value = "q8_0")]
        gguf: ft_export::GgufType,
        /// Export this HF model directory instead of a config's output.
        #[arg(long, conflicts_with = "config")]
        model: Option<PathBuf>,
    },
    /// Check config files; prints every problem, exits 1 if any.
    Validate {
        /// Config files.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
    },
    /// Print the config's JSON Schema, or rewrite `schemas/`.
    Schema {
        /// Write `ft.schema.json` and one file per section into DIR.
        #[arg(long)]
        write: bool,
        /// Directory for --write.
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
    /// Chat with the base model, base + adapter, or the merged model.
    Generate {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// One prompt; without it, an interactive session.
        #[arg(long)]
        prompt: Option<String>,
    },
    /// Translate an axolotl YAML config into an ft config (stdout); keys
    /// that cannot be carried over are listed on stderr.
    ImportAxolotl {
        /// The axolotl config.
        config: PathBuf,
    },
}

/// Exit code for a stage that is not implemented yet.
const NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,ft={level},ft_core={level},ft_pipeline={level},ft_model={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Loads a config, printing its problems; `None` when invalid.
fn load(path: &Path, set: &[String]) -> Option<Loaded> {
    match load_file(path, set) {
        Ok(l) => Some(l),
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!(
                "{} problem{} in {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                path.display()
            );
            None
        }
    }
}

fn not_implemented(what: &str, issue: &str) -> ExitCode {
    eprintln!("error: `ft {what}` is not implemented yet ({issue}); the config is valid");
    ExitCode::from(NOT_IMPLEMENTED)
}

/// `ft preprocess`: prepare (or reuse) the data, print the report and,
/// with `--debug N`, N samples with the trained tokens marked.
fn preprocess(loaded: &Loaded, debug: Option<usize>) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let spin = progress::spinner("preparing data (load → template → tokenize → mask → pack)");
    let result = ft_pipeline::prepare::preprocess(loaded);
    spin.finish_and_clear();
    let (prepared, fresh, report) = result?;
    let verb = match fresh {
        ft_core::stage::Freshness::Reused => "reused (inputs and options unchanged)",
        ft_core::stage::Freshness::Ran => "written",
    };
    println!("prepared data {verb}: {}", prepared.dir.display());
    print!("{report}");
    if let Some(n) = debug.filter(|n| *n > 0) {
        let tok =
            ft_pipeline::prepare::HfTokenizer::load(&ft_pipeline::prepare::tokenizer_dir(loaded)?)?;
        let colour = std::io::stdout().is_terminal();
        println!();
        println!(
            "{} trained tokens are {}",
            if colour { "legend:" } else { "legend: [[...]]" },
            if colour {
                "\x1b[1;32mgreen\x1b[0m, others dim"
            } else {
                "bracketed"
            }
        );
        for (i, pieces) in ft_pipeline::prepare::debug_pieces(&prepared, &tok, n)?
            .iter()
            .enumerate()
        {
            println!("--- sample {i}");
            let mut line = String::new();
            for (text, trained) in pieces {
                match (trained, colour) {
                    (true, true) => line.push_str(&format!("\x1b[1;32m{text}\x1b[0m")),
                    (false, true) => line.push_str(&format!("\x1b[2m{text}\x1b[0m")),
                    (true, false) => line.push_str(&format!("[[{text}]]")),
                    (false, false) => line.push_str(text),
                }
            }
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { configs, set } => {
            let mut ok = true;
            for c in &configs {
                match load(c, &set) {
                    Some(_) => println!("ok: {}", c.display()),
                    None => ok = false,
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Schema { write, dir } => {
            if write {
                let written = ft_pipeline::schema::write_all(&dir)
                    .with_context(|| format!("writing schemas into {}", dir.display()))?;
                for w in written {
                    println!("wrote {}", dir.join(w).display());
                }
            } else {
                print!(
                    "{}",
                    ft_pipeline::schema::render(&ft_pipeline::schema::combined())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportAxolotl { config } => import::run(&config),
        Command::Run(c) => Ok(match load(&c.config, &c.set) {
            None => ExitCode::FAILURE,
            Some(_) => not_implemented("run", "training lands with the training issue"),
        }),
        Command::Preprocess { cfg, debug } => {
            let Some(loaded) = load(&cfg.config, &cfg.set) else {
                return Ok(ExitCode::FAILURE);
            };
            preprocess(&loaded, debug)
        }
        Command::MergeLora(c) => Ok(match load(&c.config, &c.set) {
            None => ExitCode::FAILURE,
            Some(_) => not_implemented("merge-lora", "merging lands with the merge issue"),
        }),
        Command::Generate { cfg, prompt: _ } => Ok(match load(&cfg.config, &cfg.set) {
            None => ExitCode::FAILURE,
            Some(_) => not_implemented("generate", "generation lands with the models issue"),
        }),
        Command::Export {
            config,
            set,
            gguf: _,
            model,
        } => {
            if model.is_none() {
                let Some(config) = config else {
                    anyhow::bail!(
                        "give a config file, or `--model DIR` to export an HF model directory"
                    );
                };
                if load(&config, &set).is_none() {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(not_implemented(
                "export",
                "GGUF export lands with the export issue",
            ))
        }
    }
}
