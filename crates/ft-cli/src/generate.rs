//! `ft generate`: one answer to `--prompt`, or an interactive chat when
//! stdin is a terminal (else stdin is the prompt). The answer streams to
//! stdout as it is generated; load progress and speed go to stderr.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use ft_model::GenerateOptions;
use ft_pipeline::generate::{ChatSession, Reply};

use crate::{ConfigArgs, load, progress};

/// `ft generate` arguments.
#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// One prompt; without it, an interactive session (stdin a terminal)
    /// or the prompt read from stdin.
    #[arg(long)]
    prompt: Option<String>,
    /// Stop after this many new tokens.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling: keep the most probable tokens up to this mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sample among the K most probable tokens only.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Send the prompt as raw text instead of through the chat template.
    #[arg(long)]
    no_chat_template: bool,
    /// Answer with base + this PEFT LoRA adapter (e.g. the `output_dir` of
    /// `ft run`).
    #[arg(long, value_name = "DIR")]
    adapter: Option<std::path::PathBuf>,
    /// Answer the first user turn of every line of this jsonl file
    /// (`messages` or `conversations`), one conversation each, and print a
    /// score with `--expect`.
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    prompts_file: Option<std::path::PathBuf>,
    /// With `--prompts-file`: count the answers containing this text.
    #[arg(long, value_name = "TEXT", requires = "prompts_file")]
    expect: Option<String>,
}

/// Runs `ft generate`.
pub(crate) fn run(args: GenerateArgs) -> Result<ExitCode> {
    let Some(loaded) = load(&args.cfg.config, &args.cfg.set) else {
        return Ok(ExitCode::FAILURE);
    };
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        stop_token_ids: Vec::new(),
    };
    let spin = progress::spinner(&format!("loading {}", loaded.config.model.base_model));
    let session = ChatSession::load(
        &loaded,
        opts,
        !args.no_chat_template,
        args.adapter.is_some(),
    );
    spin.finish_and_clear();
    let mut session = session.context("setting up generation")?;
    if let Some(dir) = &args.adapter {
        session = session
            .with_adapter(dir)
            .with_context(|| format!("loading the adapter in {}", dir.display()))?;
    }
    if let Some(file) = &args.prompts_file {
        return score(&mut session, file, args.expect.as_deref());
    }
    let interactive = args.prompt.is_none() && std::io::stdin().is_terminal();
    if interactive {
        return chat(&mut session);
    }
    let prompt = match args.prompt {
        Some(p) => p,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            s
        }
    };
    if prompt.trim().is_empty() {
        anyhow::bail!("the prompt is empty; give `--prompt TEXT` or text on stdin");
    }
    let reply = answer(&mut session, &prompt)?;
    report(&reply, false);
    Ok(ExitCode::SUCCESS)
}

/// Streams the answer to `prompt` to stdout.
fn answer(session: &mut ChatSession, prompt: &str) -> Result<Reply> {
    let mut out = std::io::stdout().lock();
    let reply = session.reply(prompt, &mut |piece| {
        // A closed stdout (e.g. `| head`) must not abort generation here;
        // the final write reports it.
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    })?;
    writeln!(out).context("writing to stdout")?;
    Ok(reply)
}

/// Speed on stderr: info for one prompt, debug in a chat.
fn report(reply: &Reply, chat: bool) {
    let g = &reply.generation;
    let speed = g
        .decode_tokens_per_sec()
        .map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    let msg = format!(
        "{} new tokens ({:?}); prompt {} tokens ({} reused) + first token in {:.2} s; then {} tokens in {:.2} s = {} tokens/s",
        g.tokens.len(),
        g.stop,
        g.prompt_tokens + reply.reused_tokens,
        reply.reused_tokens,
        g.prefill_time.as_secs_f64(),
        g.decode_steps,
        g.decode_time.as_secs_f64(),
        speed,
    );
    if chat {
        tracing::debug!("{msg}");
    } else {
        tracing::info!("{msg}");
    }
}

/// The interactive loop: a line per user turn; `/reset` forgets the
/// conversation, `/exit` or end of input (Ctrl-D) quits.
fn chat(session: &mut ChatSession) -> Result<ExitCode> {
    eprintln!(
        "chat ({}); /reset forgets the conversation, /exit or Ctrl-D quits",
        session
            .template_name()
            .unwrap_or("raw prompts, no chat template")
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.next() else {
            eprintln!();
            break;
        };
        let line = line.context("reading stdin")?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                session.reset();
                eprintln!("(conversation cleared)");
            }
            text => {
                let reply = answer(session, text)?;
                report(&reply, true);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The first user turn of each jsonl line.
fn first_user_turns(file: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", file.display(), i + 1))?;
        let turns = v
            .get("messages")
            .or_else(|| v.get("conversations"))
            .and_then(|m| m.as_array())
            .with_context(|| {
                format!(
                    "{}:{}: no `messages` or `conversations` list",
                    file.display(),
                    i + 1
                )
            })?;
        let user = turns.iter().find(|t| {
            let role = t
                .get("role")
                .or_else(|| t.get("from"))
                .and_then(|r| r.as_str());
            matches!(role, Some("user" | "human"))
        });
        let content = user
            .and_then(|t| t.get("content").or_else(|| t.get("value")))
            .and_then(|c| c.as_str())
            .with_context(|| format!("{}:{}: no user turn", file.display(), i + 1))?;
        out.push(content.to_string());
    }
    Ok(out)
}

/// `--prompts-file`: one fresh conversation per prompt; prints each answer
/// and, with `expect`, how many contain it.
fn score(
    session: &mut ChatSession,
    file: &std::path::Path,
    expect: Option<&str>,
) -> Result<ExitCode> {
    let prompts = first_user_turns(file)?;
    let mut hits = 0usize;
    for p in &prompts {
        session.reset();
        let reply = session.reply(p, &mut |_| {})?;
        let text = reply.text.trim().replace('\n', " ");
        let hit = expect.is_some_and(|e| text.contains(e));
        hits += usize::from(hit);
        let mark = match expect {
            Some(_) if hit => "✓ ",
            Some(_) => "✗ ",
            None => "",
        };
        println!("{mark}{p}\n    → {text}");
    }
    if let Some(e) = expect {
        let pct = 100.0 * hits as f64 / prompts.len().max(1) as f64;
        println!(
            "score: {hits}/{} answers contain {e:?} ({pct:.0}%)",
            prompts.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
