#!/usr/bin/env bash
# The GPU path measured on one machine (issue 18, point 4), every figure from this one run,
# written as one JSON file.
#
#   benches/gpu/run.sh [--reduced] [OUT.json]      (default OUT: gpu-results.json in the
#                                                   target folder)
#
# Full mode, on a machine with an NVIDIA GPU (nvidia-smi), the Rust toolchain and the crates
# (network, or a filled cargo cache; the CUDA build's LLVM as README "Building with --features
# cuda" says), in under 10 minutes on a 16-core host:
#   1. builds the workspace with --features cuda;
#   2. runs the GPU kernel tests (backends: wgpu, packed, ssd, fallback; models:
#      small_bindings) on CUDA (SSM_ZOO_TEST_GPU=cuda) and on wgpu (Vulkan);
#   3. the scan_gpu criterion bench on CUDA: the kernels against the portable body, the scan's
#      effective bandwidth as a fraction of a copy's measured in the same run, and the
#      sequence-parallel forward against one pass;
#   4. zoo bench lm for Mamba and Mamba2 at mamba-130m's shape (d_model 768, 24 layers, vocab
#      50280), prefill 2,048 at batch 1 and 16, decode 64 tokens, in f32 and bf16 (weights and
#      activations; the state in f32): tokens/s and kernel launches per token;
#   5. with several GPUs, zoo train lm --devices over all of them against one (tokens/s).
# Reduced mode (CI, no GPU: Mesa's lavapipe): no CUDA build, tests left to the test command,
# the same steps on wgpu at a tiny shape (f32 and f16: WGSL has no bf16), so that the script and
# every figure it reads keep working.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mode=full
if [ "${1:-}" = "--reduced" ]; then
    mode=reduced
    shift
fi
target="${CARGO_TARGET_DIR:-$root/target}"
out=${1:-$target/gpu-results.json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"

if [ "$mode" = full ]; then
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >"$work/gpus.txt"; then
        echo "run.sh: no NVIDIA GPU here (nvidia-smi); on a machine without one run --reduced" >&2
        exit 1
    fi
    features=(--features cuda)
    device=cuda
    export SSM_ZOO_REQUIRE_WGPU=1
else
    echo "reduced mode (lavapipe)" >"$work/gpus.txt"
    features=()
    device=wgpu
    export CUBECL_WGPU_DEFAULT_DEVICE="${CUBECL_WGPU_DEFAULT_DEVICE:-Cpu}"
fi

echo "== build ($mode)" >&2
started=$(date +%s)
# One build of every target; the bench and zoo executables from cargo's own report.
cargo build --release --workspace --all-targets "${features[@]}" --message-format=json \
    >"$work/build.json"
# `executable NAME KIND`: the program a target of that kind builds (a bin's own, not its unit
# tests' harness, which has the same name).
executable() {
    python3 - "$work/build.json" "$1" "$2" <<'EOF'
import json, sys
path, name, kind = sys.argv[1:4]
found = None
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == name and kind in m["target"]["kind"] \
            and (kind == "bench" or not m["profile"]["test"]):
        found = m["executable"]
if not found:
    sys.exit(f"run.sh: the build made no executable {name}")
print(found)
EOF
}
zoo=$(executable zoo bin)
echo "zoo: $zoo" >&2
scan_gpu=$(executable scan_gpu bench)

if [ "$mode" = full ]; then
    echo "== GPU tests on cuda and on wgpu (Vulkan)" >&2
    for gpu in cuda wgpu; do
        SSM_ZOO_TEST_GPU=$gpu cargo test --release --workspace "${features[@]}" \
            --test wgpu --test packed --test ssd --test fallback --test small_bindings \
            --test half_precision \
            2>&1 | tee "$work/tests-$gpu.txt" | grep -E "^test result|FAILED|panicked" >&2
    done
    shape=(--d-model 768 --layers 24 --vocab 50280 --prefill-len 2048 --decode-tokens 64
        --repeats 3)
    batches=(1 16)
    dtypes=(f32 bf16)
    bench_args=(--bench)
else
    shape=(--d-model 64 --layers 2 --vocab 256 --prefill-len 128 --decode-tokens 8 --repeats 1)
    batches=(1 2)
    dtypes=(f32 f16)
    # Criterion's test mode (each bench once) and the ratios at a small width.
    bench_args=()
    export SCAN_BENCH_D=64 SCAN_BENCH_MAX_L=128
fi

echo "== scan_gpu on $device" >&2
SSM_BENCH_DEVICE=$device "$scan_gpu" "${bench_args[@]}" >"$work/scan_gpu.txt" 2>&1 || {
    tail -20 "$work/scan_gpu.txt" >&2
    exit 1
}
grep -E "^ +L = |decode step" "$work/scan_gpu.txt" >&2

echo "== zoo bench lm on $device" >&2
for arch in mamba mamba2; do
    for dtype in "${dtypes[@]}"; do
        for batch in "${batches[@]}"; do
            run="$arch-$dtype-$batch"
            "$zoo" bench lm --device "$device" --arch "$arch" "${shape[@]}" \
                --prefill-batch "$batch" --dtype "$dtype" >"$work/lm-$run.json" \
                2>"$work/lm-$run.err" || {
                cat "$work/lm-$run.err" >&2
                exit 1
            }
        done
    done
done

# Several GPUs: `zoo train lm --devices` over all of them against one, same steps and data
# (`--devices` keeps a replica per device and sums the gradients on the first; it is not
# NCCL DDP, which Burn 0.22.1 offers through burn-train only).
gpus=$(grep -c "^GPU " "$work/gpus.txt" || true)
if [ "$mode" = full ] && [ "$gpus" -gt 1 ]; then
    echo "== zoo train lm on 1 and $gpus GPUs" >&2
    all=$(seq -s, -f "cuda:%g" 0 $((gpus - 1)))
    for devices in cuda:0 "$all"; do
        name=$(echo "$devices" | tr ':,' '__')
        "$zoo" train lm --devices "$devices" --d-model 512 --layers 8 --seq-len 512 \
            --batch-size 8 --steps 20 --eval-every 1000 --val-batches 1 \
            --out "$work/train-$name" >"$work/train-$name.log" 2>&1 || {
            tail -5 "$work/train-$name.log" >&2
            exit 1
        }
        cp "$work/train-$name/metrics.json" "$work/multi-$name.json"
    done
fi

python3 - "$work" "$mode" "$device" "$(($(date +%s) - started))" "$out" <<'EOF'
import glob, json, os, sys
work, mode, device, seconds, out = sys.argv[1:6]
scan = None
for line in open(os.path.join(work, "scan_gpu.txt")):
    if line.startswith("scan_gpu_json: "):
        scan = json.loads(line[len("scan_gpu_json: "):])
if scan is None:
    sys.exit("run.sh: scan_gpu printed no scan_gpu_json line")
lm = []
for path in sorted(glob.glob(os.path.join(work, "lm-*.json"))):
    r = json.load(open(path))
    lm.append({k: r[k] for k in (
        "arch", "dtype", "prefill_batch", "prefill_len", "prefill_tokens_per_s",
        "prefill_last_tokens_per_s", "prefill_last_kernel_launches", "decode_tokens_per_s",
        "kernel_launches_per_token", "parameters")})
result = {
    "mode": mode,
    "device": device,
    "gpus": open(os.path.join(work, "gpus.txt")).read().strip().splitlines(),
    "seconds": int(seconds),
    "scan": scan,
    "lm": lm,
}
# Half precision against f32, same arch and batch, from this run.
f32 = {(r["arch"], r["prefill_batch"]): r for r in lm if r["dtype"] == "f32"}
result["half_vs_f32"] = [
    {"arch": r["arch"], "dtype": r["dtype"], "prefill_batch": r["prefill_batch"],
     "prefill_speedup": r["prefill_last_tokens_per_s"]
        / f32[(r["arch"], r["prefill_batch"])]["prefill_last_tokens_per_s"],
     "decode_speedup": r["decode_tokens_per_s"]
        / f32[(r["arch"], r["prefill_batch"])]["decode_tokens_per_s"]}
    for r in lm if r["dtype"] != "f32" and (r["arch"], r["prefill_batch"]) in f32]

multi = sorted(glob.glob(os.path.join(work, "multi-*.json")))
if multi:
    runs = [(os.path.basename(p)[len("multi-"):-len(".json")], json.load(open(p))) for p in multi]
    one = [m for n, m in runs if n == "cuda_0"][0]
    result["multi_gpu"] = [
        {"devices": n, "tokens_per_s": m["tokens_per_s_this_session"],
         "vs_one_gpu": m["tokens_per_s_this_session"] / one["tokens_per_s_this_session"],
         "how": "replicas, gradients summed on the first device (not NCCL DDP)"}
        for n, m in runs]
tests = {}
for path in sorted(glob.glob(os.path.join(work, "tests-*.txt"))):
    gpu = os.path.basename(path)[len("tests-"):-len(".txt")]
    tests[gpu] = [l.strip() for l in open(path) if l.startswith("test result")]
if tests:
    result["tests"] = tests
with open(out, "w") as f:
    json.dump(result, f, indent=1)
print(json.dumps(result, indent=1))
EOF
echo "written: $out" >&2
