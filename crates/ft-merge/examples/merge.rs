//! Merges a PEFT LoRA adapter into an HF model from the command line and
//! prints the [`ft_merge::MergeReport`] as JSON.
//!
//! ```text
//! cargo run --release -p ft-merge --example merge -- BASE ADAPTER OUT \
//!     [--dtype auto|bf16|f16|f32] [--max-shard-size 5GB] [--dequantized]
//! ```

use std::process::ExitCode;

use ft_merge::{BaseWeights, MergeDtype, MergeOptions, merge_lora, parse_size};

const USAGE: &str = "usage: merge BASE ADAPTER OUT [--dtype auto|bf16|f16|f32] \
                     [--max-shard-size 5GB] [--dequantized]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut dtype = MergeDtype::Auto;
    let mut shard = 5_000_000_000u64;
    let mut base_weights = BaseWeights::Original;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dtype" => {
                dtype = match it.next().map(String::as_str) {
                    Some("auto") => MergeDtype::Auto,
                    Some("bf16") => MergeDtype::Bf16,
                    Some("f16") => MergeDtype::F16,
                    Some("f32") => MergeDtype::F32,
                    _ => return usage(),
                }
            }
            "--max-shard-size" => match it.next().and_then(|s| parse_size(s)) {
                Some(s) => shard = s,
                None => return usage(),
            },
            "--dequantized" => base_weights = BaseWeights::Dequantized { double_quant: true },
            _ => positional.push(a.clone()),
        }
    }
    let [base, adapter, out] = positional.as_slice() else {
        return usage();
    };
    let mut opts = MergeOptions::new(base, adapter, out);
    opts.dtype = dtype;
    opts.max_shard_size = shard;
    opts.base_weights = base_weights;
    match merge_lora(&opts) {
        Ok(report) => {
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("report: {e}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
