#!/usr/bin/env python3
"""`zoo bench lm` beside the PyTorch reference, in one run, as ratios.

The reference is transformers' MambaForCausalLM / Mamba2ForCausalLM on the CPU (its pure-PyTorch
path: mamba_ssm's CUDA kernels do not run on a CPU), with random weights at the same shape as
`zoo bench lm`. Both sides are timed alternately, `--rounds` times each, and the medians compared,
so a change in the machine's load during the run touches both. Needs torch and transformers
(pip, outside the repository) and a release build of `zoo`:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers
    cargo build --release -p ssm-examples   # or ./zoo once
    /tmp/ref/bin/python benches/reference/lm_vs_pytorch.py --arch mamba

Prints one JSON object: each side's prefill tokens/s (all logits, and the last position's only)
and decode tokens/s, the ratios zoo / PyTorch, torch's thread count and the machine's steal time
over the run (from /proc/stat).

With `--llama-cpp DIR` (a built llama.cpp source tree: `DIR/build/bin/llama-bench` and
`DIR/convert_hf_to_gguf.py`, with the tree's `gguf-py` installed in the same Python), the same
random-weight model is saved, converted to an f32 GGUF and timed by `llama-bench -p PREFILL
-n DECODE -t THREADS` in each round as well: llama.cpp's prompt processing computes the last
position's logits only, so it is compared with zoo's last-only prefill, and its token
generation with zoo's decode. llama.cpp is not vendored or built by this repository; its
sources come with the `llama-cpp-python` sdist on PyPI (`vendor/llama.cpp`), for example:

    pip download --no-deps --no-binary :all: llama-cpp-python   # or the sdist's URL on PyPI
    tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON
    cmake --build build --target llama-bench -j
    /tmp/ref/bin/pip install ./gguf-py sentencepiece
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM


def steal_jiffies():
    with open("/proc/stat") as f:
        cpu = f.readline().split()[1:]
    values = [int(v) for v in cpu]
    return values[7] if len(values) > 7 else 0, sum(values)


def reference_model(a):
    torch.manual_seed(0)
    if a.arch == "mamba":
        cfg = MambaConfig(
            hidden_size=a.d_model,
            num_hidden_layers=a.layers,
            vocab_size=a.vocab,
            state_size=a.d_state or 16,
            expand=2,
            use_mambapy=False,
        )
        model = MambaForCausalLM(cfg)
    else:
        cfg = Mamba2Config(
            hidden_size=a.d_model,
            num_hidden_layers=a.layers,
            vocab_size=a.vocab,
            state_size=a.d_state or 128,
            head_dim=a.head_dim,
            num_heads=2 * a.d_model // a.head_dim,
            n_groups=1,
            chunk_size=a.chunk_size,
            tie_word_embeddings=True,
        )
        model = Mamba2ForCausalLM(cfg)
    return model.eval()


def ids(n, vocab):
    # The token ids zoo bench uses.
    return torch.tensor([[(i * 7919 + 13) % vocab for i in range(n)]], dtype=torch.long)


def time_reference(model, a):
    prompt = ids(a.prompt_len, a.vocab)
    long = ids(a.prefill_len, a.vocab)
    out = {}
    with torch.inference_mode():
        model(prompt[:, :8])  # warm-up
        for key, keep in (("prefill_tokens_per_s", 0), ("prefill_last_tokens_per_s", 1)):
            t = time.perf_counter()
            logits = model(long, logits_to_keep=keep).logits
            _ = logits[0, -1, 0].item()
            out[key] = a.prefill_len / (time.perf_counter() - t)

        def gen(n):
            t = time.perf_counter()
            model.generate(
                prompt,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
            return time.perf_counter() - t

        gen(2)
        # Decode time: the difference between generating 1 and 1 + N tokens.
        out["decode_tokens_per_s"] = a.decode_tokens / (gen(1 + a.decode_tokens) - gen(1))
    return out


def time_zoo(a):
    cmd = [
        a.zoo, "bench", "lm", "--arch", a.arch, "--device", "cpu",
        "--d-model", str(a.d_model), "--layers", str(a.layers), "--vocab", str(a.vocab),
        "--prefill-len", str(a.prefill_len), "--prompt-len", str(a.prompt_len),
        "--decode-tokens", str(a.decode_tokens), "--repeats", "1",
        "--head-dim", str(a.head_dim), "--chunk-size", str(a.chunk_size),
    ]
    if a.d_state:
        cmd += ["--d-state", str(a.d_state)]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {
        "prefill_tokens_per_s": report["prefill_tokens_per_s"],
        "prefill_last_tokens_per_s": report["prefill_last_tokens_per_s"],
        "decode_tokens_per_s": report["decode_tokens_per_s"],
    }


def llama_gguf(model, a, work):
    """Saves the reference model and converts it to an f32 GGUF; returns the GGUF's path."""
    hf = os.path.join(work, "hf")
    model.save_pretrained(hf)
    out = os.path.join(work, "model-f32.gguf")
    subprocess.run(
        [sys.executable, os.path.join(a.llama_cpp, "convert_hf_to_gguf.py"), hf,
         "--outtype", "f32", "--outfile", out],
        check=True, capture_output=True, text=True,
    )
    return out


def time_llama(gguf, a):
    bench = os.path.join(a.llama_cpp, "build", "bin", "llama-bench")
    cmd = [bench, "-m", gguf, "-p", str(a.prefill_len), "-n", str(a.decode_tokens),
           "-t", str(torch.get_num_threads()), "-r", "1", "-o", "json"]
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    out = {}
    for row in rows:
        if row["n_prompt"] > 0 and row["n_gen"] == 0:
            out["prefill_last_tokens_per_s"] = row["avg_ts"]
        elif row["n_gen"] > 0 and row["n_prompt"] == 0:
            out["decode_tokens_per_s"] = row["avg_ts"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["mamba", "mamba2"], default="mamba")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--layers", type=int, default=24)
    # The published checkpoints' padded vocabularies: mamba-130m 50280 (a multiple of 8),
    # mamba2-130m 50288 (of 16); llama.cpp's loader insists on that padding.
    p.add_argument("--vocab", type=int, help="default: 50280 for mamba, 50288 for mamba2")
    p.add_argument("--d-state", type=int, default=0)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--prefill-len", type=int, default=512)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--zoo", default=os.environ.get("ZOO", "target/release/zoo"))
    p.add_argument("--llama-cpp", help="a built llama.cpp tree: time llama-bench too")
    a = p.parse_args()
    if a.vocab is None:
        a.vocab = 50280 if a.arch == "mamba" else 50288

    model = reference_model(a)
    work = tempfile.TemporaryDirectory()
    gguf = llama_gguf(model, a, work.name) if a.llama_cpp else None
    steal0, total0 = steal_jiffies()
    runs = {"zoo": [], "pytorch": []}
    if gguf:
        runs["llama.cpp"] = []
    for _ in range(a.rounds):
        runs["pytorch"].append(time_reference(model, a))
        runs["zoo"].append(time_zoo(a))
        if gguf:
            runs["llama.cpp"].append(time_llama(gguf, a))
    steal1, total1 = steal_jiffies()
    medians = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()
    }
    report = {
        "arch": a.arch,
        "shape": {"d_model": a.d_model, "layers": a.layers, "vocab": a.vocab},
        "prefill_len": a.prefill_len,
        "decode_tokens": a.decode_tokens,
        "rounds": a.rounds,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "steal_percent": round(100 * (steal1 - steal0) / max(1, total1 - total0), 1),
        "zoo": medians["zoo"],
        "pytorch": medians["pytorch"],
        "ratio_zoo_over_pytorch": {
            k: round(medians["zoo"][k] / medians["pytorch"][k], 2) for k in medians["zoo"]
        },
    }
    if gguf:
        report["llama.cpp"] = medians["llama.cpp"]
        report["ratio_zoo_over_llama_cpp"] = {
            k: round(medians["zoo"][k] / v, 2) for k, v in medians["llama.cpp"].items()
        }
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
