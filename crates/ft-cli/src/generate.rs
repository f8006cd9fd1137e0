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
    let session = ChatSession::load(&loaded, opts, !args.no_chat_template);
    spin.finish_and_clear();
    let mut session = session.context("setting up generation")?;
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
