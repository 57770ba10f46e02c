#!/usr/bin/env python3
"""`zoo bench lm` beside the PyTorch reference, in one run, as ratios.

The reference is transformers' MambaForCausalLM / Mamba2ForCausalLM on the CPU (its pure-PyTorch
path: mamba_ssm's CUDA kernels do not run on a CPU), with random weights at the same shape as
`zoo bench lm`. Both sides are timed alternately, `--rounds` times each, and the medians compared,
so a change in the machine's load during the run touches both. Needs torch and transformers
(pip, outside the repository) and a release build of `zoo`:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers
    cargo build --release -p ssm-zoo-cli   # or ./zoo once
    /tmp/ref/bin/python benches/reference/lm_vs_pytorch.py --arch mamba

Prints one JSON object: each side's prefill tokens/s (all logits, and the last position's only)
and decode tokens/s, the ratios zoo / PyTorch, torch's thread count, the CPU's model and SIMD
flags, and the machine's steal time over the run (from /proc/stat). With `--q8`, zoo with 8-bit
weights (`--quantize q8`) too, and with `--llama-cpp` llama.cpp's `q8_0` GGUF of the same
weights, each with its ratio; with `--half`, zoo with f16 and bf16 weights (`--dtype`) and
llama.cpp's f16 and bf16 GGUFs.

Both sides' decode is the same bare greedy loop: the `--prompt-len` prompt prefilled once with
the cache kept, one untimed step, then `--decode-tokens` timed calls of the model's forward on
the one last token with the cache (`model(tok, cache=cache, use_cache=True)` in transformers
5.24, which takes no `cache_position`), each taking the argmax and reading it back; decode
tokens/s = N / the time of the N steps. (Until 2026-12-07 PyTorch's side was timed through
`model.generate()`, whose per-step logits processors, stopping criteria and cache bookkeeping
zoo's loop does not pay.) Before timing, the loop's first greedy tokens are checked equal to
`generate()`'s on the benchmarked model; `--check` checks that for 34 tokens on small random
models of both archs (d_model 64, 2 layers, vocab 512) and prints, at that shape, the decode
tokens/s of the bare loop and of `generate()` (N over the time of 1 + N tokens less that of 1):

    /tmp/ref/bin/python benches/reference/lm_vs_pytorch.py --check

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
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import transformers
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


DEVICE = "cpu"


def ids(n, vocab, rows=1):
    # The token ids zoo bench uses (its rows of made-up ids: row r continues where r - 1 ends).
    return torch.tensor(
        [[((r * n + i) * 7919 + 13) % vocab for i in range(n)] for r in range(rows)],
        dtype=torch.long,
        device=DEVICE,
    )


def forward_step(model, tok, cache, pos):
    """The model's forward on one token with the cache, in whichever form this transformers
    version takes it: 5.24 takes `cache=` and no `cache_position`; earlier 5.x releases take
    `cache_params=` and, where the signature has it, `cache_position`. Returns (logits, cache)."""
    params = inspect.signature(model.forward).parameters
    kw = {"use_cache": True}
    kw["cache" if "cache" in params else "cache_params"] = cache
    if "cache_position" in params:
        kw["cache_position"] = torch.tensor([pos], device=tok.device)
    out = model(tok, **kw)
    return out.logits, getattr(out, "cache", None) or getattr(out, "cache_params", None)


def bare_greedy(model, prompt, n):
    """Greedy decoding in the loop `zoo bench lm` times: the prompt prefilled once with the cache
    kept, one untimed step, then `n` timed steps of the model's forward on the last token alone
    with the cache, each taking the argmax and reading it back. Returns all the generated tokens
    (2 + n: the prefill's, the untimed step's, the timed steps') and the seconds of the n steps.
    The cache is updated in place and returned with the outputs (see `forward_step`)."""
    with torch.inference_mode():
        out = model(prompt, use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or getattr(out, "cache_params", None)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = [nxt.item()]
        pos = prompt.shape[1]
        logits, cache = forward_step(model, nxt, cache, pos)  # untimed: warms the step path
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(nxt.item())
        t = time.perf_counter()
        for i in range(n):
            logits, cache = forward_step(model, nxt, cache, pos + 1 + i)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            # Reading the token back is what a generation loop does each step.
            tokens.append(nxt.item())
        seconds = time.perf_counter() - t
    return tokens, seconds


def generate_greedy(model, prompt, n):
    """`n` greedy tokens from transformers' `generate()`, and its wall time."""
    with torch.inference_mode():
        t = time.perf_counter()
        seq = model.generate(
            prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0
        )
        seconds = time.perf_counter() - t
    return seq[0, prompt.shape[1]:].tolist(), seconds


def check_same_tokens(model, prompt, n):
    """The bare loop's greedy tokens equal `generate()`'s (raises otherwise)."""
    bare, _ = bare_greedy(model, prompt, n)
    gen, _ = generate_greedy(model, prompt, n + 2)
    if bare != gen:
        raise AssertionError(f"bare loop {bare} != generate() {gen}")
    return bare


def time_reference(model, a):
    prompt = ids(a.prompt_len, a.vocab)
    long = ids(a.prefill_len, a.vocab, a.prefill_batch)
    out = {}
    with torch.inference_mode():
        model(prompt[:, :8])  # warm-up
        for key, keep in (("prefill_tokens_per_s", 0), ("prefill_last_tokens_per_s", 1)):
            t = time.perf_counter()
            logits = model(long, logits_to_keep=keep).logits
            _ = logits[0, -1, 0].item()
            out[key] = a.prefill_batch * a.prefill_len / (time.perf_counter() - t)
    _, seconds = bare_greedy(model, prompt, a.decode_tokens)
    out["decode_tokens_per_s"] = a.decode_tokens / seconds
    return out


def check(a):
    """`--check`: for a small random model of each arch, the bare loop's greedy tokens equal
    `generate()`'s, and both loops' decode tokens/s at that shape (generate()'s: N tokens over
    the difference between generating 1 + N and 1, as this script timed it before)."""
    report = {"torch": torch.__version__, "transformers": transformers.__version__,
              "torch_threads": torch.get_num_threads()}
    for arch in ("mamba", "mamba2"):
        b = argparse.Namespace(**vars(a))
        b.arch = arch
        b.d_model, b.layers, b.vocab, b.d_state = a.check_d_model, a.check_layers, 512, 0
        b.head_dim, b.chunk_size = 16, 64
        model = reference_model(b)
        prompt = ids(b.prompt_len, b.vocab)
        tokens = check_same_tokens(model, prompt, a.check_tokens)
        n = b.decode_tokens
        generate_greedy(model, prompt, 2)  # warm-up
        bare, gen = [], []
        for _ in range(a.rounds):
            bare.append(n / bare_greedy(model, prompt, n)[1])
            long_s = generate_greedy(model, prompt, 1 + n)[1]
            gen.append(n / (long_s - generate_greedy(model, prompt, 1)[1]))
        report[arch] = {
            "shape": {"d_model": b.d_model, "layers": b.layers, "vocab": b.vocab},
            "tokens_equal": len(tokens),
            "decode_tokens": n,
            "bare_loop_tokens_per_s": statistics.median(bare),
            "generate_tokens_per_s": statistics.median(gen),
        }
    json.dump(report, sys.stdout, indent=1)
    print()


def time_zoo(a, quantize=None, dtype=None):
    cmd = [
        a.zoo, "bench", "lm", "--arch", a.arch, "--device", a.device,
        "--prefill-batch", str(a.prefill_batch),
        "--d-model", str(a.d_model), "--layers", str(a.layers), "--vocab", str(a.vocab),
        "--prefill-len", str(a.prefill_len), "--prompt-len", str(a.prompt_len),
        "--decode-tokens", str(a.decode_tokens), "--repeats", "1",
        "--head-dim", str(a.head_dim), "--chunk-size", str(a.chunk_size),
    ]
    if a.d_state:
        cmd += ["--d-state", str(a.d_state)]
    if quantize:
        cmd += ["--quantize", quantize]
    if dtype:
        cmd += ["--dtype", dtype]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    BOUNDS.setdefault(quantize or dtype or "f32", []).append({k: report.get(k) for k in (
        "weights_bytes_per_token", "read_gb_s", "decode_bound_tokens_per_s",
        "decode_fraction_of_bound")})
    return {
        "prefill_tokens_per_s": report["prefill_tokens_per_s"],
        "prefill_last_tokens_per_s": report["prefill_last_tokens_per_s"],
        "decode_tokens_per_s": report["decode_tokens_per_s"],
    }


# The decode's memory bound as each zoo run measured it (zoo bench lm's own figures), per
# precision (f32, q8).
BOUNDS = {}


def cpu_description():
    """The CPU's model name and the SIMD flags the kernels care about (from /proc/cpuinfo)."""
    name, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name is None:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_int8"]
    return {"model": name, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def llama_gguf(model, a, work, outtype="f32"):
    """Saves the reference model (once) and converts it to a GGUF of `outtype` (f32, q8_0);
    returns the GGUF's path."""
    hf = os.path.join(work, "hf")
    if not os.path.isdir(hf):
        model.save_pretrained(hf)
    out = os.path.join(work, f"model-{outtype}.gguf")
    subprocess.run(
        [sys.executable, os.path.join(a.llama_cpp, "convert_hf_to_gguf.py"), hf,
         "--outtype", outtype, "--outfile", out],
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
    p.add_argument("--prefill-batch", type=int, default=1, help="rows prefilled together")
    p.add_argument("--device", default="cpu", help="zoo's --device")
    p.add_argument("--torch-device", default="cpu",
                   help="PyTorch's device (cuda: transformers' path without mamba_ssm)")
    p.add_argument("--reference-only", action="store_true",
                   help="time PyTorch alone (its figures as JSON), not zoo")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--zoo", default=os.environ.get("ZOO", "target/release/zoo"))
    p.add_argument("--llama-cpp", help="a built llama.cpp tree: time llama-bench too")
    p.add_argument("--half", action="store_true",
                   help="also time zoo with --dtype f16 and bf16 (16-bit weights) and, with "
                        "--llama-cpp, llama.cpp's f16 and bf16 GGUFs of the same weights")
    p.add_argument("--q8", action="store_true",
                   help="also time zoo with --quantize q8 (int8 weights, blocks of 32) and, "
                        "with --llama-cpp, llama.cpp's q8_0 GGUF of the same weights")
    p.add_argument("--check", action="store_true",
                   help="only check the bare decode loop against generate() on small random "
                        "models (both archs) and time both loops there")
    p.add_argument("--check-d-model", type=int, default=64)
    p.add_argument("--check-layers", type=int, default=2)
    p.add_argument("--check-tokens", type=int, default=32)
    a = p.parse_args()
    if a.check:
        check(a)
        return
    if a.vocab is None:
        a.vocab = 50280 if a.arch == "mamba" else 50288
    global DEVICE
    DEVICE = a.torch_device

    model = reference_model(a).to(DEVICE)
    if a.reference_only:
        check_same_tokens(model, ids(a.prompt_len, a.vocab), 4)
        runs = [time_reference(model, a) for _ in range(a.rounds)]
        json.dump({
            "arch": a.arch,
            "shape": {"d_model": a.d_model, "layers": a.layers, "vocab": a.vocab},
            "prefill_len": a.prefill_len,
            "prefill_batch": a.prefill_batch,
            "decode_tokens": a.decode_tokens,
            "rounds": a.rounds,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_device": DEVICE,
            "gpu": torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else None,
            "pytorch": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
        }, sys.stdout, indent=1)
        print()
        return
    # The timed loop decodes what generate() would (a few tokens, before any timing).
    check_same_tokens(model, ids(a.prompt_len, a.vocab), 4)
    work = tempfile.TemporaryDirectory()
    gguf = llama_gguf(model, a, work.name) if a.llama_cpp else None
    gguf_q8 = llama_gguf(model, a, work.name, "q8_0") if a.llama_cpp and a.q8 else None
    halves = ["f16", "bf16"] if a.half else []
    gguf_half = {h: llama_gguf(model, a, work.name, h) for h in halves} if a.llama_cpp else {}
    steal0, total0 = steal_jiffies()
    runs = {"zoo": [], "pytorch": []}
    if a.q8:
        runs["zoo_q8"] = []
    if gguf:
        runs["llama.cpp"] = []
    if gguf_q8:
        runs["llama.cpp_q8_0"] = []
    for h in halves:
        runs[f"zoo_{h}"] = []
        if h in gguf_half:
            runs[f"llama.cpp_{h}"] = []
    for _ in range(a.rounds):
        runs["pytorch"].append(time_reference(model, a))
        runs["zoo"].append(time_zoo(a))
        if a.q8:
            runs["zoo_q8"].append(time_zoo(a, "q8"))
        if gguf:
            runs["llama.cpp"].append(time_llama(gguf, a))
        if gguf_q8:
            runs["llama.cpp_q8_0"].append(time_llama(gguf_q8, a))
        for h in halves:
            runs[f"zoo_{h}"].append(time_zoo(a, dtype=h))
            if h in gguf_half:
                runs[f"llama.cpp_{h}"].append(time_llama(gguf_half[h], a))
    steal1, total1 = steal_jiffies()
    medians = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()
    }

    def bound(precision):
        b = BOUNDS.get(precision)
        if not b or any(v is None for v in b[0].values()):
            return None
        return {k: statistics.median(x[k] for x in b) for k in b[0]}

    def ratio(num, den):
        return {k: round(medians[num][k] / v, 2) for k, v in medians[den].items()
                if k in medians[num]}

    report = {
        "arch": a.arch,
        "shape": {"d_model": a.d_model, "layers": a.layers, "vocab": a.vocab},
        "prefill_len": a.prefill_len,
        "decode_tokens": a.decode_tokens,
        "rounds": a.rounds,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_description(),
        "steal_percent": round(100 * (steal1 - steal0) / max(1, total1 - total0), 1),
        "zoo": medians["zoo"],
        "pytorch": medians["pytorch"],
        "zoo_decode_bound": bound("f32"),
        "ratio_zoo_over_pytorch": ratio("zoo", "pytorch"),
    }
    if a.q8:
        report["zoo_q8"] = medians["zoo_q8"]
        report["zoo_q8_decode_bound"] = bound("q8")
        report["ratio_zoo_q8_over_zoo_f32"] = ratio("zoo_q8", "zoo")
    if gguf:
        report["llama.cpp"] = medians["llama.cpp"]
        report["ratio_zoo_over_llama_cpp"] = ratio("zoo", "llama.cpp")
    if gguf_q8:
        report["llama.cpp_q8_0"] = medians["llama.cpp_q8_0"]
        report["ratio_zoo_q8_over_llama_cpp_q8_0"] = ratio("zoo_q8", "llama.cpp_q8_0")
    for h in halves:
        report[f"zoo_{h}"] = medians[f"zoo_{h}"]
        report[f"zoo_{h}_decode_bound"] = bound(h)
        report[f"ratio_zoo_{h}_over_zoo_f32"] = ratio(f"zoo_{h}", "zoo")
        if h in gguf_half:
            report[f"llama.cpp_{h}"] = medians[f"llama.cpp_{h}"]
            report[f"ratio_zoo_{h}_over_llama_cpp_{h}"] = ratio(f"zoo_{h}", f"llama.cpp_{h}")
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
