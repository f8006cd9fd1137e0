// Runs llama.cpp (through the npm package node-llama-cpp, prebuilt CPU
// binaries) on a GGUF file for ft's tests and scripts. ft never needs it at
// runtime; it is the independent reference that the exports must satisfy.
//
// Pinned: node 20, node-llama-cpp@3.22.1 + @node-llama-cpp/linux-x64@3.22.1,
// installed by `.ci/run` (see tests/llamacpp/install.sh).
//
//   node tests/llamacpp/run.mjs NODE_LLAMA_CPP_DIR REQUEST.json
//
// REQUEST.json is one of
//   {"mode": "logits", "model": "m.gguf", "lora": "a.gguf" (optional),
//    "vocab": 256, "sequences": [[ids...], ...], "out": "logits.f32"}
//     writes, for every sequence and position, `vocab` little-endian f32
//     logits. The KV cache is kept in f32 and flash attention is off: either
//     default rounds through f16 (~1e-3 relative error on the tiny llama
//     against transformers, 5e-7 without).
//   {"mode": "chat", "model": "m.gguf", "prompts": ["...", ...],
//    "max_tokens": 48, "out": "answers.json", "expect": "text" (optional)}
//     greedy answers, one chat per prompt, with the GGUF's own chat template
//     (llama.cpp's Jinja engine), written as a JSON array of strings. The
//     prompts may instead come from a chat jsonl file ("prompts_jsonl":
//     path, "n": count): the first user message of each line. With
//     "expect", prints `score K/N`: the answers that contain the text.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [pkg, requestPath] = process.argv.slice(2);
if (!pkg || !requestPath) {
  console.error("usage: node run.mjs NODE_LLAMA_CPP_DIR REQUEST.json");
  process.exit(2);
}
const req = JSON.parse(readFileSync(requestPath, "utf8"));
const nlc = await import(pathToFileURL(join(pkg, "dist/index.js")).href);
const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: req.model });
// One thread unless told otherwise: the tests run beside each other and
// ggml's busy-waiting threads crawl on an oversubscribed CPU.
const threads = Number(process.env.FT_LLAMACPP_THREADS ?? 1);

if (req.mode === "logits") {
  const longest = Math.max(...req.sequences.map((s) => s.length));
  const size = Math.max(64, longest);
  const chunks = [];
  for (const ids of req.sequences) {
    const ctx = await model.createContext({
      contextSize: size,
      batchSize: size,
      sequences: 1,
      threads,
      flashAttention: false,
      experimentalKvCacheKeyType: "F32",
      experimentalKvCacheValueType: "F32",
      ...(req.lora ? { lora: { adapters: [{ filePath: req.lora, scale: 1 }] } } : {}),
    });
    const seq = ctx.getSequence();
    const res = await seq.controlledEvaluate(ids.map((t) => [t, { generateNext: { logits: true } }]));
    const out = new Float32Array(ids.length * req.vocab);
    res.forEach((r, p) => {
      const logits = r.next.logits;
      if (logits.size !== req.vocab) {
        throw new Error(`${req.model}: llama.cpp gave ${logits.size} logits, expected vocab ${req.vocab}`);
      }
      for (const [tok, v] of logits) out[p * req.vocab + tok] = v;
    });
    chunks.push(Buffer.from(out.buffer));
    await ctx.dispose();
  }
  writeFileSync(req.out, Buffer.concat(chunks));
} else if (req.mode === "chat") {
  let prompts = req.prompts ?? [];
  if (req.prompts_jsonl) {
    prompts = readFileSync(req.prompts_jsonl, "utf8")
      .split("\n")
      .filter((l) => l.trim())
      .slice(0, req.n ?? Infinity)
      .map((l) => JSON.parse(l).messages.find((m) => m.role === "user").content);
  }
  const answers = [];
  const ctx = await model.createContext({ contextSize: 1024, sequences: 1, threads });
  for (const prompt of prompts) {
    const seq = ctx.getSequence();
    const session = new nlc.LlamaChatSession({ contextSequence: seq });
    answers.push(await session.prompt(prompt, { maxTokens: req.max_tokens ?? 48, temperature: 0 }));
    session.dispose({ disposeSequence: true });
  }
  if (req.out) writeFileSync(req.out, JSON.stringify(answers, null, 1));
  if (req.expect !== undefined) {
    answers.forEach((a, i) => console.log(`${a.includes(req.expect) ? "+" : "-"} ${prompts[i]} -> ${a}`));
    const k = answers.filter((a) => a.includes(req.expect)).length;
    console.log(`score ${k}/${answers.length}`);
  }
} else {
  throw new Error(`unknown mode ${req.mode}`);
}
await model.dispose();
