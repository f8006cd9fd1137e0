//! `ft`: fine-tune open-weight LLMs from one declarative YAML file.
//!
//! The binary is a thin layer over `ft-pipeline`: it parses arguments, sets
//! up logging, loads and validates the config, and maps outcomes to exit
//! codes: 0 success, 1 invalid input (config problems) or a failed stage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ft_pipeline::{Loaded, load_file};

mod generate;
mod import;
mod progress;
mod train_ui;

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
        /// GGUF tensor type (default: `export.gguf` of the config, else q8_0).
        #[arg(long, value_enum)]
        gguf: Option<ft_export::GgufType>,
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
    /// Chat with the config's base model: one `--prompt`, or interactive.
    Generate(generate::GenerateArgs),
    /// Translate an axolotl YAML config into an ft config (stdout); keys
    /// that cannot be carried over are listed on stderr.
    ImportAxolotl {
        /// The axolotl config.
        config: PathBuf,
    },
    /// Compare finished runs: one row per `run_summary.json` (model,
    /// adapter, rank, losses, speed, memory). A directory without one
    /// contributes its subdirectories that have one.
    Runs {
        /// Run output directories, or directories holding them.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

/// mimalloc instead of the system allocator (see benches/RESULTS.md,
/// preprocessing).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Runs { dirs } => {
            let runs = ft_pipeline::runs::find_runs(&dirs)?;
            print!("{}", ft_pipeline::runs::table(&runs));
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(c) => {
            let Some(loaded) = load(&c.config, &c.set) else {
                return Ok(ExitCode::FAILURE);
            };
            run_pipeline(&loaded)
        }
        Command::Preprocess { cfg, debug } => {
            let Some(loaded) = load(&cfg.config, &cfg.set) else {
                return Ok(ExitCode::FAILURE);
            };
            preprocess(&loaded, debug)
        }
        Command::MergeLora(c) => {
            let Some(loaded) = load(&c.config, &c.set) else {
                return Ok(ExitCode::FAILURE);
            };
            merge(&loaded)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => generate::run(args),
        Command::Export {
            config,
            set,
            gguf,
            model,
        } => {
            let spinner = progress::spinner("exporting GGUF");
            let report = if let Some(dir) = model {
                ft_pipeline::export::export_dir(&dir, gguf.unwrap_or_default(), None)
            } else {
                let Some(config) = config else {
                    spinner.finish_and_clear();
                    anyhow::bail!(
                        "give a config file, or `--model DIR` to export an HF model directory"
                    );
                };
                let Some(loaded) = load(&config, &set) else {
                    spinner.finish_and_clear();
                    return Ok(ExitCode::FAILURE);
                };
                ft_pipeline::export::run_export(&loaded, gguf)
            };
            spinner.finish_and_clear();
            print_export(&report?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ft run`: prepare, train; Ctrl-C saves a checkpoint and stops.
fn run_pipeline(loaded: &Loaded) -> Result<ExitCode> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = std::sync::Arc::clone(&stop);
        // A second Ctrl-C exits at once.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\nstopping after this step and saving a checkpoint (Ctrl-C again to quit now)"
            );
        });
    }
    let train = &loaded.config.train;
    let sampler: Option<train_ui::Sampler> = if train.sample_prompts.is_empty() {
        None
    } else {
        match ft_pipeline::generate::sampler(
            loaded,
            train.sample_prompts.clone(),
            train.sample_max_new_tokens as usize,
        ) {
            Ok(f) => Some(Box::new(f)),
            Err(e) => {
                eprintln!("warning: `train.sample_prompts` will not be generated: {e}");
                None
            }
        }
    };
    let mut ui = train_ui::TrainUi::new(sampler);
    let result = ft_pipeline::train::run_training(loaded, &mut ui, Some(stop));
    ui.finish();
    let report = result?;
    let out = loaded.output_dir();
    println!(
        "trained {} steps: final loss {}, eval loss {}; {:.2} s/step, {:.0} tokens/s",
        report.steps,
        report.final_loss.map_or("-".into(), |l| format!("{l:.4}")),
        report
            .final_eval_loss
            .map_or("-".into(), |l| format!("{l:.4}")),
        report.seconds_per_step,
        report.tokens_per_s
    );
    println!(
        "adapter:  {}",
        out.join("adapter_model.safetensors").display()
    );
    println!("metrics:  {}", out.join("metrics.jsonl").display());
    println!("plot:     {}", out.join("training.svg").display());
    if loaded.config.merge.is_some() || loaded.config.export.is_some() {
        merge(loaded)?;
    }
    if loaded.config.export.is_some() {
        let spinner = progress::spinner("exporting GGUF");
        let report = ft_pipeline::export::run_export(loaded, None);
        spinner.finish_and_clear();
        print_export(&report?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `ft merge-lora`: writes `output_dir/merged/` and prints the fidelity
/// summary.
fn merge(loaded: &Loaded) -> Result<()> {
    let spinner = progress::spinner("merging the adapter into the base");
    let report = ft_pipeline::merge::run_merge(loaded);
    spinner.finish_and_clear();
    let merged = report?;
    let report = &merged.report;
    let delta = report
        .tensors
        .iter()
        .map(|t| t.max_abs_lora_delta)
        .fold(0f32, f32::max);
    println!(
        "merged {} tensors ({} changed) into {} ({} shard(s), {:.1} MB); largest adapter update |s·BA| {:.3e}; max |ΔW| vs an f32 merge on the original base {:.3e}",
        report.num_tensors,
        report.num_tensors - report.copied_tensors,
        report.output.display(),
        report.shards.len(),
        report.total_size as f64 / 1e6,
        delta,
        report.max_abs_vs_f32_merge()
    );
    if let Some(q) = report
        .tensors
        .iter()
        .filter_map(|t| t.max_abs_dequantized_vs_original)
        .reduce(f32::max)
    {
        println!(
            "merged onto the NF4-dequantized base QLoRA trained against (max |W_nf4 - W| {q:.3e}; `merge.base: original` for the other choice)"
        );
    }
    for f in &merged.logit_fidelity {
        let a = &f.agreement;
        println!(
            "merged vs {}: top-1 agreement {:.1}%, KL mean {:.2e} max {:.2e} nats over {} held-out positions",
            f.reference,
            100.0 * a.top1_agreement,
            a.mean_kl,
            a.max_kl,
            a.positions
        );
    }
    Ok(())
}

fn print_export(r: &ft_export::ExportReport) {
    println!(
        "wrote {} ({:.1} MB, {} tensors, arch {}, tokenizer {}/{})",
        r.path.display(),
        r.file_bytes as f64 / 1e6,
        r.n_tensors,
        r.arch,
        r.tokenizer.0,
        r.tokenizer.1
    );
    if let Some(m) = &r.modelfile {
        println!("Ollama:    ollama create my-model -f {}", m.display());
    }
    println!("llama.cpp: llama-cli -m {} -cnv", r.path.display());
}
