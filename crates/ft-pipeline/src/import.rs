//! `ft import-axolotl`: axolotl's flat YAML → ft's sectioned config.
//!
//! Every axolotl key either maps onto an ft key (often renamed or moved into
//! its section) or is reported as [`Dropped`] with the reason, so nothing is
//! lost silently. The output starts with the schema line for editors.

use serde_yaml::{Mapping, Value};

/// An axolotl key that could not be carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The key (with list index for dataset entries), e.g.
    /// `datasets[0].data_files`.
    pub key: String,
    /// Why it was not carried over, and what to do instead.
    pub reason: String,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The ft config as YAML text.
    pub yaml: String,
    /// Keys not carried over.
    pub dropped: Vec<Dropped>,
}

/// Errors importing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is not YAML.
    #[error("not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The input's top level is not a mapping.
    #[error("an axolotl config is a mapping of keys at the top level")]
    NotAMapping,
}

#[derive(Default)]
struct Out {
    top: Mapping,
    dropped: Vec<Dropped>,
}

impl Out {
    fn set(&mut self, section: Option<&str>, key: &str, v: Value) {
        let target = match section {
            None => &mut self.top,
            Some(s) => {
                let entry = self
                    .top
                    .entry(Value::String(s.to_string()))
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                match entry {
                    Value::Mapping(m) => m,
                    _ => return,
                }
            }
        };
        target.insert(Value::String(key.to_string()), v);
    }

    fn drop_key(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.dropped.push(Dropped {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(x) => x == "true" || x == "auto",
        Value::Mapping(_) => true,
        _ => false,
    }
}

/// Where a flat axolotl key goes in ft: `(section, ft key)`.
fn direct(key: &str) -> Option<(Option<&'static str>, &'static str)> {
    Some(match key {
        "output_dir" => (None, "output_dir"),
        "seed" => (None, "seed"),
        "base_model" => (Some("model"), "base_model"),
        "revision_of_model" => (Some("model"), "revision"),
        "tokenizer_config" => (Some("model"), "tokenizer"),
        "load_in_4bit" => (Some("model"), "load_in_4bit"),
        "val_set_size" => (Some("data"), "val_set_size"),
        "shuffle_merged_datasets" => (Some("data"), "shuffle"),
        "chat_template_jinja" => (Some("template"), "chat_template_jinja"),
        "chat_template_kwargs" => (Some("template"), "chat_template_kwargs"),
        "train_on_inputs" => (Some("template"), "train_on_inputs"),
        "roles_to_train" => (Some("template"), "roles_to_train"),
        "train_on_eos" => (Some("template"), "train_on_eos"),
        "sequence_len" => (Some("tokenize"), "sequence_len"),
        "sample_packing" => (Some("tokenize"), "sample_packing"),
        "excess_length_strategy" => (Some("tokenize"), "excess_length_strategy"),
        "dataset_prepared_path" => (Some("tokenize"), "dataset_prepared_path"),
        "lora_r" => (Some("adapter"), "lora_r"),
        "lora_alpha" => (Some("adapter"), "lora_alpha"),
        "lora_dropout" => (Some("adapter"), "lora_dropout"),
        "peft_use_rslora" => (Some("adapter"), "use_rslora"),
        "micro_batch_size" => (Some("train"), "micro_batch_size"),
        "gradient_accumulation_steps" => (Some("train"), "gradient_accumulation_steps"),
        "num_epochs" => (Some("train"), "num_epochs"),
        "max_steps" => (Some("train"), "max_steps"),
        "learning_rate" => (Some("train"), "learning_rate"),
        "warmup_steps" => (Some("train"), "warmup_steps"),
        "warmup_ratio" => (Some("train"), "warmup_ratio"),
        "cosine_min_lr_ratio" => (Some("train"), "cosine_min_lr_ratio"),
        "weight_decay" => (Some("train"), "weight_decay"),
        "adam_beta1" => (Some("train"), "adam_beta1"),
        "adam_beta2" => (Some("train"), "adam_beta2"),
        "adam_epsilon" => (Some("train"), "adam_epsilon"),
        "max_grad_norm" => (Some("train"), "max_grad_norm"),
        "logging_steps" => (Some("train"), "logging_steps"),
        "eval_steps" => (Some("train"), "eval_steps"),
        "save_steps" => (Some("train"), "save_steps"),
        "save_total_limit" => (Some("train"), "save_total_limit"),
        "resume_from_checkpoint" => (Some("train"), "resume_from_checkpoint"),
        _ => return None,
    })
}

/// Keys dropped with a known reason.
fn known_drop(key: &str) -> Option<&'static str> {
    Some(match key {
        "base_model_config"
        | "model_type"
        | "tokenizer_type"
        | "trust_remote_code"
        | "is_llama_derived_model"
        | "is_mistral_derived_model"
        | "is_qwen_derived_model" => {
            "not needed: ft reads the architecture from the model's config.json"
        }
        "load_in_8bit" => {
            "8-bit bases are not supported; use `model.load_in_4bit: true` with `adapter.type: qlora`, or neither"
        }
        "strict" => "not needed: ft always validates every key",
        "tf32" => "not applicable: ft picks matmul precision itself",
        "flash_attention" | "sdp_attention" | "xformers_attention" | "flex_attention"
        | "eager_attention" => "not needed: ft always uses its own block-diagonal attention kernel",
        "pad_to_sequence_len" | "eval_sample_packing" => {
            "not needed: ft pads and packs evaluation batches like training ones"
        }
        "wandb_project"
        | "wandb_entity"
        | "wandb_watch"
        | "wandb_name"
        | "wandb_log_model"
        | "wandb_mode"
        | "mlflow_tracking_uri"
        | "use_tensorboard" => {
            "ft writes metrics.jsonl and a loss plot into output_dir; no external tracker"
        }
        "deepspeed" | "fsdp" | "fsdp_config" | "ddp_timeout" | "local_rank" => {
            "ft trains on a single GPU"
        }
        "lora_fan_in_fan_out" => "not needed: ft's adapters always use PEFT's [out, in] layout",
        "lora_modules_to_save" => "not supported: ft trains only the LoRA matrices",
        "lora_model_dir" => {
            "not supported yet: ft starts a fresh adapter (use train.resume_from_checkpoint for ft checkpoints)"
        }
        "evals_per_epoch" | "saves_per_epoch" => {
            "use train.eval_steps / train.save_steps (a step count)"
        }
        "special_tokens" | "tokens" | "added_tokens_overrides" => {
            "not supported yet: ft uses the tokenizer's tokens as they are"
        }
        "group_by_length"
        | "torch_compile"
        | "debug"
        | "logging_dir"
        | "hub_model_id"
        | "hub_strategy"
        | "push_dataset_to_hub"
        | "dataset_processes"
        | "dataloader_num_workers"
        | "dataloader_pin_memory"
        | "dataloader_prefetch_factor"
        | "early_stopping_patience"
        | "gptq"
        | "xformers"
        | "auto_find_batch_size"
        | "save_safetensors"
        | "save_strategy"
        | "eval_strategy"
        | "fp8"
        | "unfrozen_parameters"
        | "neftune_noise_alpha"
        | "bnb_config_kwargs"
        | "plugins"
        | "liger_rope"
        | "liger_rms_norm"
        | "liger_glu_activation"
        | "liger_fused_linear_cross_entropy"
        | "eval_table_size"
        | "eval_max_new_tokens"
        | "loss_watchdog_threshold"
        | "loss_watchdog_patience"
        | "gradient_checkpointing_kwargs"
        | "save_first_step" => "not supported by ft",
        _ => return None,
    })
}

fn dataset(
    i: usize,
    list: &str,
    entry: &Value,
    out: &mut Out,
    template: &mut Mapping,
) -> Option<Value> {
    let Value::Mapping(m) = entry else {
        out.drop_key(format!("{list}[{i}]"), "a dataset entry must be a mapping");
        return None;
    };
    let get = |k: &str| m.get(Value::String(k.into()));
    let ty = get("type")
        .and_then(Value::as_str)
        .unwrap_or("chat_template")
        .to_string();
    let mut d = Mapping::new();
    let ft_type = match ty.as_str() {
        "chat_template" | "alpaca" | "completion" | "input_output" => ty.clone(),
        "sharegpt" => {
            d.insert(s("field_messages"), s("conversations"));
            d.insert(s("message_field_role"), s("from"));
            d.insert(s("message_field_content"), s("value"));
            let mut roles = Mapping::new();
            roles.insert(s("user"), Value::Sequence(vec![s("human")]));
            roles.insert(s("assistant"), Value::Sequence(vec![s("gpt")]));
            d.insert(s("roles"), Value::Mapping(roles));
            "chat_template".to_string()
        }
        other => {
            out.drop_key(
                format!("{list}[{i}]"),
                format!("dataset type `{other}` has no ft equivalent (ft has chat_template, alpaca, completion, input_output); convert the data to one of those"),
            );
            return None;
        }
    };
    let mut entry = Mapping::new();
    entry.insert(s("path"), get("path").cloned().unwrap_or(Value::Null));
    entry.insert(s("type"), s(&ft_type));
    for (k, v) in m {
        let Some(k) = k.as_str() else { continue };
        let key = format!("{list}[{i}].{k}");
        match k {
            "path" | "type" => {}
            "split" => {
                entry.insert(s("split"), v.clone());
            }
            "field_messages" | "message_field_role" | "message_field_content" | "roles"
                if ft_type == "chat_template" =>
            {
                entry.insert(s(k), v.clone());
            }
            "message_property_mappings" if ft_type == "chat_template" => {
                if let Value::Mapping(mp) = v {
                    if let Some(r) = mp.get(s("role")) {
                        entry.insert(s("message_field_role"), r.clone());
                    }
                    if let Some(c) = mp.get(s("content")) {
                        entry.insert(s("message_field_content"), c.clone());
                    }
                }
            }
            "field_instruction" | "field_input" | "field_output" | "field_system"
                if ft_type == "alpaca" =>
            {
                entry.insert(s(k), v.clone());
            }
            "field" if ft_type == "completion" => {
                entry.insert(s("field"), v.clone());
            }
            "roles_to_train" | "train_on_eos" => {
                template.insert(s(k), v.clone());
            }
            "chat_template" => {
                template.insert(s("chat_template"), v.clone());
            }
            "ds_type" | "data_files" | "name" => out.drop_key(
                key,
                "not needed: ft reads the file format from the path's extension",
            ),
            _ => out.drop_key(key, "no ft equivalent for this dataset key"),
        }
    }
    for (k, v) in d {
        entry.entry(k).or_insert(v);
    }
    if let Some(p) = entry.get(s("path")).and_then(Value::as_str)
        && !p.contains('.')
        && p.matches('/').count() == 1
    {
        out.drop_key(
            format!("{list}[{i}].path"),
            format!("`{p}` looks like a hub dataset id; ft reads local parquet/jsonl files: download it and point `path` at the file (kept as written)"),
        );
    }
    Some(Value::Mapping(entry))
}

/// Translates axolotl YAML text into an ft config.
pub fn axolotl(text: &str, source_name: &str) -> Result<Imported, ImportError> {
    let root: Value = serde_yaml::from_str(text)?;
    let Value::Mapping(root) = root else {
        return Err(ImportError::NotAMapping);
    };
    let mut out = Out::default();
    let mut template = Mapping::new();
    // Sections in pipeline order.
    for sec in ["model", "data", "template", "tokenize", "adapter", "train"] {
        out.top.insert(s(sec), Value::Mapping(Mapping::new()));
    }
    let mut adapter_kind: Option<String> = None;
    for (k, v) in &root {
        let Some(key) = k.as_str() else {
            out.drop_key(format!("{k:?}"), "keys must be strings");
            continue;
        };
        if let Some((sec, name)) = direct(key) {
            out.set(sec, name, v.clone());
            continue;
        }
        match key {
            "adapter" => match v.as_str() {
                Some(a @ ("lora" | "qlora")) => adapter_kind = Some(a.to_string()),
                _ => out.drop_key("adapter", "only `lora` and `qlora` adapters are supported"),
            },
            "lora_target_modules" => {
                let mods: Vec<Value> = match v {
                    Value::Sequence(items) => items.clone(),
                    Value::String(x) => vec![s(x)],
                    _ => vec![],
                };
                out.set(
                    Some("adapter"),
                    "lora_target_modules",
                    Value::Sequence(mods),
                );
            }
            "lora_target_linear" => {
                if truthy(v) {
                    out.set(
                        Some("adapter"),
                        "lora_target_modules",
                        Value::Sequence(vec![s("all-linear")]),
                    );
                }
            }
            "datasets" | "test_datasets" => {
                let items = match v {
                    Value::Sequence(items) => items.clone(),
                    _ => vec![],
                };
                let converted: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| dataset(i, key, e, &mut out, &mut template))
                    .collect();
                out.set(Some("data"), key, Value::Sequence(converted));
            }
            "chat_template" => {
                template.insert(s("chat_template"), v.clone());
            }
            "bf16" | "fp16" => {
                if truthy(v) {
                    out.set(
                        Some("model"),
                        "dtype",
                        s(if key == "bf16" { "bf16" } else { "f16" }),
                    );
                }
            }
            "gradient_checkpointing" => out.set(
                Some("train"),
                "gradient_checkpointing",
                Value::Bool(truthy(v)),
            ),
            "optimizer" => {
                let o = v.as_str().unwrap_or("");
                if !o.contains("adamw") {
                    out.drop_key(
                        "optimizer",
                        format!("`{o}` is not supported; ft uses AdamW"),
                    );
                } else if o.contains("8bit") {
                    out.drop_key("optimizer", format!("`{o}`: ft keeps AdamW state in f32 (LoRA states are small); using adamw"));
                }
                out.set(Some("train"), "optimizer", s("adamw"));
            }
            "lr_scheduler" => match v.as_str() {
                Some(x @ ("cosine" | "linear" | "constant")) => {
                    out.set(Some("train"), "lr_scheduler", s(x))
                }
                Some("constant_with_warmup") => {
                    out.set(Some("train"), "lr_scheduler", s("constant"))
                }
                _ => out.drop_key(
                    "lr_scheduler",
                    "only cosine, linear and constant schedules are supported",
                ),
            },
            "auto_resume_from_checkpoints" => {
                if truthy(v) {
                    out.set(Some("train"), "resume_from_checkpoint", Value::Bool(true));
                }
            }
            other => match known_drop(other) {
                Some(reason) => out.drop_key(other, reason),
                None => out.drop_key(
                    other,
                    "unknown to ft's importer; check `ft schema` for an equivalent",
                ),
            },
        }
    }
    // Template keys that came from dataset entries or the top level.
    for (k, v) in template {
        if let Some(name) = k.as_str() {
            let v = if name == "chat_template" {
                match v.as_str() {
                    Some(t @ ("chatml" | "llama3" | "qwen3" | "tokenizer_default" | "jinja")) => {
                        s(t)
                    }
                    Some("qwen_25") => s("chatml"),
                    Some(other) => {
                        out.drop_key("chat_template", format!("template `{other}` is not built into ft; using the tokenizer's own (tokenizer_default)"));
                        s("tokenizer_default")
                    }
                    None => continue,
                }
            } else {
                v
            };
            out.set(Some("template"), name, v);
        }
    }
    let kind = adapter_kind.unwrap_or_else(|| {
        out.drop_key(
            "adapter",
            "missing: ft trains adapters only; assuming `lora` (full fine-tuning is not supported)",
        );
        "lora".into()
    });
    // `type` first inside the adapter section.
    if let Some(Value::Mapping(a)) = out.top.get_mut(s("adapter")) {
        let mut m = Mapping::new();
        m.insert(s("type"), s(&kind));
        for (k, v) in a.iter() {
            m.insert(k.clone(), v.clone());
        }
        *a = m;
    }
    if !out.top.contains_key(s("output_dir")) {
        out.set(None, "output_dir", s("./outputs"));
    }
    // output_dir and seed first, then the sections; drop empty optional ones.
    let mut ordered = Mapping::new();
    for k in ["output_dir", "seed"] {
        if let Some(v) = out.top.get(s(k)) {
            ordered.insert(s(k), v.clone());
        }
    }
    for (k, v) in &out.top {
        let name = k.as_str().unwrap_or("");
        if name == "output_dir" || name == "seed" {
            continue;
        }
        if matches!(name, "template" | "tokenize") && v.as_mapping().is_some_and(Mapping::is_empty)
        {
            continue;
        }
        ordered.insert(k.clone(), v.clone());
    }
    let body = serde_yaml::to_string(&Value::Mapping(ordered))?;
    let yaml = format!(
        "# yaml-language-server: $schema=../schemas/ft.schema.json\n# Imported from axolotl config `{source_name}` by `ft import-axolotl`.\n{body}"
    );
    Ok(Imported {
        yaml,
        dropped: out.dropped,
    })
}
