//! Hub ids as `base_model`, against a local stand-in for the Hugging Face
//! hub: an HTTP server on 127.0.0.1 that answers the requests huggingface.co
//! answers (`/api/models/{id}/revision/main` with the file list and commit, and
//! `/{id}/resolve/{rev}/{file}` with `x-repo-commit`, `etag` and ranges),
//! serving the sharded tiny Mistral fixture. `HF_ENDPOINT` points ft at it,
//! as it would at a mirror; the download code is the real one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use ft_model::hub::{
    HubError, HubSettings, Want, cached, cached_model, fetch_model, fetch_tokenizer,
};

const ID: &str = "test-org/tiny-mistral";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository the stand-in serves: file name → bytes.
fn tiny_mistral_repo() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let model = repo().join("tests/fixtures/models/mistral_sharded");
    let tok = repo().join("tests/fixtures/export/mistral");
    for dir in [&model, &tok] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if !name.starts_with("reference") {
                files.insert(name, std::fs::read(&p).unwrap());
            }
        }
    }
    files.insert("README.md".into(), b"# tiny mistral\n".to_vec());
    files
}

/// What the stand-in saw: request lines and Authorization headers.
#[derive(Default)]
struct Seen {
    requests: Vec<String>,
    auth: Vec<String>,
}

/// Serves `files` as hub repository `ID` at commit `SHA` until the test
/// process ends; returns the endpoint URL and the request log.
fn serve(files: BTreeMap<String, Vec<u8>>) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let (mut range, mut auth) = (None, None);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "range" => range = Some(v.trim().to_string()),
                    "authorization" => auth = Some(v.trim().to_string()),
                    _ => {}
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            {
                let mut s = log.lock().unwrap();
                s.requests.push(path.clone());
                s.auth.extend(auth);
            }
            let api = format!("/api/models/{ID}/revision/main");
            let resolve = format!("/{ID}/resolve/{SHA}/");
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if path == api {
                let siblings: Vec<_> = files
                    .keys()
                    .map(|f| serde_json::json!({ "rfilename": f }))
                    .collect();
                let body = serde_json::json!({ "id": ID, "sha": SHA, "siblings": siblings });
                ("200 OK", vec![], body.to_string().into_bytes())
            } else if let Some(bytes) = path.strip_prefix(&resolve).and_then(|f| files.get(f)) {
                // `bytes=a-b` or `bytes=a-`, as hf-hub asks.
                let (a, b) = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split_once('-'))
                    .map(|(a, b)| {
                        let a: usize = a.parse().unwrap_or(0);
                        let b = b.parse().unwrap_or(bytes.len().saturating_sub(1));
                        (a, b.min(bytes.len().saturating_sub(1)))
                    })
                    .unwrap_or((0, bytes.len().saturating_sub(1)));
                // Any content hash serves as the blob name (the hub's is a
                // sha256 or git oid); FNV-1a here.
                let fnv = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                let etag = format!("\"{fnv:016x}{}\"", bytes.len());
                (
                    "206 Partial Content",
                    vec![
                        format!("x-repo-commit: {SHA}"),
                        format!("etag: {etag}"),
                        format!("content-range: bytes {a}-{b}/{}", bytes.len()),
                    ],
                    bytes[a..=b].to_vec(),
                )
            } else {
                ("404 Not Found", vec![], b"Entry not found".to_vec())
            };
            let mut head = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for h in headers {
                head.push_str(&h);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (endpoint, seen)
}

fn settings(cache: &Path, endpoint: &str) -> HubSettings {
    HubSettings {
        cache: cache.to_path_buf(),
        endpoint: endpoint.to_string(),
        offline: false,
        token: Some("hf_test_token".into()),
        progress: false,
    }
}

/// A download lands as the Python tools lay it out, byte for byte, with the
/// shards the index names; offline use finds it; the model loads from it.
#[test]
fn hub_model_downloads_into_the_hub_cache_and_loads() {
    let files = tiny_mistral_repo();
    let (endpoint, seen) = serve(files.clone());
    let cache = tempfile::tempdir().unwrap();
    let dir = fetch_model(ID, &settings(cache.path(), &endpoint)).unwrap();
    assert_eq!(
        dir,
        cache
            .path()
            .join("models--test-org--tiny-mistral/snapshots")
            .join(SHA)
    );
    for (name, bytes) in &files {
        let local = dir.join(name);
        if name == "README.md" {
            assert!(!local.exists(), "fetched a file ft does not need");
        } else {
            assert_eq!(&std::fs::read(&local).unwrap(), bytes, "{name}");
        }
    }
    let main = cache
        .path()
        .join("models--test-org--tiny-mistral/refs/main");
    assert_eq!(std::fs::read_to_string(main).unwrap(), SHA);
    assert!(
        seen.lock()
            .unwrap()
            .auth
            .iter()
            .all(|a| a == "Bearer hf_test_token")
    );
    assert!(!seen.lock().unwrap().auth.is_empty());

    // Offline: the same snapshot from the cache alone.
    assert_eq!(cached_model(ID, cache.path()).unwrap(), dir);
    let device = ft_model::resolve_device(ft_model::DeviceChoice::Cpu).unwrap();
    let from_hub = ft_model::load_model(&dir, &device, None).unwrap();
    assert_eq!(from_hub.spec.vocab_size, 256);

    // A second fetch downloads nothing again (only the file list is asked).
    let before = seen.lock().unwrap().requests.len();
    fetch_model(ID, &settings(cache.path(), &endpoint)).unwrap();
    let again: Vec<String> = seen.lock().unwrap().requests[before..].to_vec();
    assert_eq!(again, vec![format!("/api/models/{ID}/revision/main")]);
}

/// The tokenizer-only fetch (what `ft preprocess` needs) leaves the weights
/// on the hub; a later full fetch completes the same snapshot.
#[test]
fn tokenizer_fetch_skips_the_weights() {
    let (endpoint, _) = serve(tiny_mistral_repo());
    let cache = tempfile::tempdir().unwrap();
    let dir = fetch_tokenizer(ID, &settings(cache.path(), &endpoint)).unwrap();
    assert!(dir.join("tokenizer.json").is_file() && dir.join("config.json").is_file());
    let weights = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".safetensors")
            })
            .count()
    };
    assert_eq!(weights(&dir), 0);
    assert_eq!(cached(ID, cache.path(), Want::Tokenizer).unwrap(), dir);
    assert!(matches!(
        cached_model(ID, cache.path()),
        Err(HubError::NotCached { .. })
    ));
    assert_eq!(
        fetch_model(ID, &settings(cache.path(), &endpoint)).unwrap(),
        dir
    );
    assert_eq!(weights(&dir), 3);
}

#[test]
fn hub_errors_name_the_id_the_file_and_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    // Offline and not cached.
    let e = cached_model(ID, cache.path()).unwrap_err();
    assert!(matches!(e, HubError::NotCached { ref file, .. } if file == "config.json"));
    let msg = e.to_string();
    assert!(msg.contains(ID) && msg.contains("HF_HUB_OFFLINE"), "{msg}");

    // Unknown repository (the stand-in serves another id).
    let (endpoint, _) = serve(tiny_mistral_repo());
    let e = fetch_model("test-org/nope", &settings(cache.path(), &endpoint)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("test-org/nope") && msg.contains("HF_TOKEN") && msg.contains(&endpoint),
        "{msg}"
    );

    // No safetensors: the error lists what the repository has.
    let mut bin_only = tiny_mistral_repo();
    bin_only.retain(|k, _| !k.contains("safetensors"));
    bin_only.insert("pytorch_model.bin".into(), vec![0; 8]);
    let (endpoint, _) = serve(bin_only);
    let e = fetch_model(ID, &settings(cache.path(), &endpoint)).unwrap_err();
    assert!(matches!(e, HubError::NoWeights { .. }), "{e}");
    assert!(e.to_string().contains("pytorch_model.bin"), "{e}");

    // An index naming a path outside the snapshot is refused.
    let mut evil = tiny_mistral_repo();
    evil.insert(
        "model.safetensors.index.json".into(),
        br#"{"weight_map": {"lm_head.weight": "../../../escape.safetensors"}}"#.to_vec(),
    );
    let (endpoint, _) = serve(evil);
    let other = tempfile::tempdir().unwrap();
    let e = fetch_model(ID, &settings(other.path(), &endpoint)).unwrap_err();
    assert!(matches!(e, HubError::Corrupt { .. }), "{e}");
}

fn ft(args: &[&str], env: &[(&str, &Path)], endpoint: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ft"));
    c.args(args)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env("HF_ENDPOINT", endpoint);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `base_model: org/name` through the binary: `ft preprocess` fetches the
/// tokenizer, `ft generate` the weights, then runs offline from the cache
/// with the hub gone.
#[test]
fn ft_generate_with_a_hub_id() {
    let (endpoint, seen) = serve(tiny_mistral_repo());
    let work = tempfile::tempdir().unwrap();
    let hf_home = work.path().join("hf");
    let row = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}"#;
    std::fs::write(work.path().join("d.jsonl"), format!("{row}\n{row}\n")).unwrap();
    let cfg = work.path().join("train.yml");
    std::fs::write(
        &cfg,
        format!(
            "output_dir: out\nmodel:\n  base_model: {ID}\n  device: cpu\ndata:\n  datasets:\n    - {{path: d.jsonl, type: chat_template}}\nadapter:\n  type: lora\ntrain:\n  max_steps: 1\n"
        ),
    )
    .unwrap();
    let args = [
        "generate",
        cfg.to_str().unwrap(),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "4",
    ];
    let snapshot = hf_home
        .join("hub/models--test-org--tiny-mistral/snapshots")
        .join(SHA);
    // `ft preprocess` fetches the tokenizer, not the weights.
    let o = ft(
        &["preprocess", cfg.to_str().unwrap()],
        &[("HF_HOME", &hf_home)],
        &endpoint,
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("2 samples read"), "{out}");
    assert!(snapshot.join("tokenizer.json").is_file());
    assert!(!snapshot.join("model-00001-of-00003.safetensors").exists());

    let o = ft(&args, &[("HF_HOME", &hf_home)], &endpoint);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("tokens/s"), "{err}");
    assert!(snapshot.join("model-00003-of-00003.safetensors").is_file());
    let asked = seen.lock().unwrap().requests.len();

    // Offline, hub unreachable: answered from the cache.
    // HF_HUB_OFFLINE with the hub unreachable.
    let run_offline = |home: &Path| {
        ft(
            &args,
            &[("HF_HOME", home), ("HF_HUB_OFFLINE", Path::new("1"))],
            "http://127.0.0.1:9",
        )
    };
    let offline = run_offline(&hf_home);
    let err = String::from_utf8_lossy(&offline.stderr);
    assert_eq!(offline.status.code(), Some(0), "{err}");
    assert_eq!(seen.lock().unwrap().requests.len(), asked);

    // Offline with an empty cache: exit 1, the id and the fix.
    let empty = work.path().join("empty");
    let o = run_offline(&empty);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(ID) && err.contains("HF_HUB_OFFLINE"), "{err}");
}
