//! Exports an HF model directory to GGUF from the command line, for manual
//! checks and timing until `ft export` is wired up:
//!
//! ```text
//! cargo run --release -p ft-export --example export_gguf -- \
//!     MODEL_DIR OUT.gguf [f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k_m|q5_k_m|q6_k] [TOKENIZER_PRE]
//! cargo run -p ft-export --example export_gguf -- --lora ADAPTER_DIR BASE_DIR OUT.gguf [f32|f16|bf16|q8_0]
//! ```
#![allow(clippy::print_stdout)]

use clap::ValueEnum;
use ft_export::{
    ExportOptions, GgufType, LoraExportOptions, ModelfileOptions, export_gguf, export_lora_gguf,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--lora") {
        if args.len() < 4 {
            return Err("usage: export_gguf --lora ADAPTER_DIR BASE_DIR OUT.gguf [TYPE]".into());
        }
        let gguf = match args.get(4) {
            Some(t) => GgufType::from_str(t, true)?,
            None => GgufType::F32,
        };
        let r = export_lora_gguf(&LoraExportOptions {
            adapter_dir: args[1].clone().into(),
            base_model_dir: args[2].clone().into(),
            output: args[3].clone().into(),
            gguf,
            name: None,
        })?;
        println!(
            "wrote {} ({} adapted matrices, r {}, alpha {})",
            r.path.display(),
            r.n_adapted,
            r.rank,
            r.alpha
        );
        return Ok(());
    }
    if args.len() < 2 {
        return Err("usage: export_gguf MODEL_DIR OUT.gguf [TYPE] [TOKENIZER_PRE]".into());
    }
    let ty = match args.get(2) {
        Some(t) => GgufType::from_str(t, true)?,
        None => GgufType::Q8_0,
    };
    let mut opts = ExportOptions::new(&args[0], &args[1], ty);
    opts.tokenizer_pre = args.get(3).cloned();
    opts.modelfile = Some(ModelfileOptions::default());
    let t = std::time::Instant::now();
    let r = export_gguf(&opts)?;
    println!(
        "wrote {} ({} tensors, {} bytes, {:?}) in {:.2} s",
        r.path.display(),
        r.n_tensors,
        r.file_bytes,
        r.types,
        t.elapsed().as_secs_f64()
    );
    for f in &r.fallbacks {
        println!("fallback: {f}");
    }
    Ok(())
}
