#!/usr/bin/env bash
# Runs on a GPU machine from the kit folder that benches/gpu/kit.sh builds, needing only bash,
# coreutils, xz and the machine's own python3 (no Rust toolchain, no network):
#   1. unpacks `zoo` and, where the system has no Vulkan loader, the carried one;
#   2. prints nvidia-smi and the devices zoo sees; refuses to go on when wgpu sees only a
#      software adapter (unless --reduced);
#   3. zoo selftest on that adapter (every kernel against its portable body, the model
#      fixtures against the reference logits);
#   4. zoo bench scan (the scan's bandwidth against a copy's, B = 1 and 16, D = 1536, L = 2048,
#      one pass and spans) and zoo bench lm at mamba-130m's shape for Mamba, Mamba2 and
#      Mamba-3: prefill of 2,048 tokens and decode of 64 at batch 1 and 16, f32 and f16,
#      kernel launches per token, and one training step's tokens/s (batch 8 x 2,048);
#   5. the PyTorch reference on the same GPU (transformers' Mamba and Mamba2 on cuda at the
#      same shape and lengths, without mamba_ssm: transformers' own path), when python3 has
#      torch with CUDA;
#   6. writes under $OUT (or --out DIR) gpu-results.json (every figure, the goals of issue 33
#      checked), selftest.json, devices.jsonl, nvidia-smi.csv and on-device.log: five files (a
#      device call brings back at most eight).
# Runs in priority order inside a time budget (--budget SECONDS, default 420): what does not fit
# is listed as skipped. The exit code is non-zero when the selftest failed or a step broke.
#
#   bash on-device.sh [--reduced] [--carried-loader] [--out DIR] [--budget SECONDS]
#
# --reduced (CI, no GPU: Mesa's lavapipe): the adapter check relaxed, a tiny shape, f32 only.
# --carried-loader: the kit's Vulkan loader even where the system has one (CI: so that the
# unpacking is exercised).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=full
out=${OUT:-$here/out}
budget=420
carried=no
while [ $# -gt 0 ]; do
    case "$1" in
    --reduced) mode=reduced ;;
    --carried-loader) carried=yes ;;
    --out) out=$2; shift ;;
    --budget) budget=$2; shift ;;
    *) echo "on-device.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$out/on-device.log"
: >"$log"
started=$(date +%s)
say() { echo "$*" | tee -a "$log" >&2; }
elapsed() { echo $(($(date +%s) - started)); }
status=0

say "== on-device.sh ($mode), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -m)"
xz -dc "$here/zoo.xz" >"$work/zoo" && chmod +x "$work/zoo" || { say "cannot unpack zoo.xz"; exit 1; }
zoo="$work/zoo"

# The Vulkan loader: the system's, else the carried one, unpacked into a private root.
if [ "$carried" = yes ] || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    mkdir -p "$work/root"
    for deb in "$here"/debs/*.deb; do
        [ -e "$deb" ] || continue
        python3 - "$deb" "$work/root" <<'EOF' || { say "cannot unpack $deb"; exit 1; }
# A .deb is an ar archive holding data.tar.* (xz on Debian, where the kit is built): unpack that
# member with Python alone (the machine may have no dpkg).
import io, sys, tarfile
deb, root = sys.argv[1:3]
data = open(deb, "rb").read()
assert data[:8] == b"!<arch>\n", f"{deb} is not a .deb"
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(root)
    pos += 60 + size + (size % 2)
EOF
    done
    export LD_LIBRARY_PATH="$work/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "Vulkan loader: the kit's ($(ls "$here"/debs))"
else
    say "Vulkan loader: the system's"
fi
# NVIDIA's driver manifest where the loader would not look for it.
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
if [ "$mode" = reduced ]; then
    export CUBECL_WGPU_DEFAULT_DEVICE="${CUBECL_WGPU_DEFAULT_DEVICE:-Cpu}"
fi

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
        | tee "$out/nvidia-smi.csv" | tee -a "$log" >&2
else
    say "nvidia-smi: none on this machine"
fi
"$zoo" devices >"$out/devices.jsonl" 2>>"$log" || { say "zoo devices failed"; exit 1; }
tee -a "$log" <"$out/devices.jsonl" >&2
# The device: the first hardware wgpu adapter; with --reduced, the default wgpu adapter.
device=$(python3 - "$out/devices.jsonl" "$mode" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
gpus = [r for r in rows if r["device"].startswith("wgpu") and r["kind"] == "hardware"]
if gpus:
    print(gpus[0]["device"])
elif sys.argv[2] == "reduced" and any(r["device"].startswith("wgpu") for r in rows):
    print("wgpu")
EOF
)
if [ -z "$device" ]; then
    say "on-device.sh: wgpu sees no hardware GPU here (only a software adapter, or none): refusing to measure a CPU as a GPU"
    exit 1
fi
say "== device: $device"

if [ "$mode" = full ]; then
    shape=(--d-model 768 --layers 24 --vocab 50280 --prefill-len 2048 --decode-tokens 64
        --repeats 3)
    scan=()
    batch_big=16
    train=(--d-model 768 --layers 24 --vocab 50280 --prefill-len 16 --decode-tokens 1
        --repeats 1 --train-batch 8 --train-len 2048)
    dtypes=(f32 f16)
    archs=(mamba mamba2 mamba3)
    ref_shape=(--d-model 768 --layers 24 --prefill-len 2048 --decode-tokens 64 --rounds 1)
    torch_device=cuda
else
    shape=(--d-model 64 --layers 2 --vocab 256 --prefill-len 128 --decode-tokens 8 --repeats 1)
    scan=(--d 64 --len 256 --repeats 2)
    batch_big=2
    train=(--d-model 64 --layers 2 --vocab 256 --prefill-len 16 --decode-tokens 1 --repeats 1
        --train-batch 2 --train-len 64)
    dtypes=(f32)
    archs=(mamba)
    ref_shape=(--d-model 64 --layers 2 --vocab 256 --prefill-len 128 --decode-tokens 8
        --rounds 1 --head-dim 16 --chunk-size 32)
    torch_device=cpu
fi

# `step NAME SECONDS CMD...`: runs CMD with its stdout to $steps/NAME.out and its stderr to the
# log, under `timeout SECONDS`, unless the budget is spent (then NAME is listed as skipped).
steps="$work/steps"
mkdir -p "$steps"
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - $(elapsed)))
    if [ "$left" -le 10 ]; then
        say "-- $name: skipped (time budget spent)"
        echo "$name" >>"$work/skipped"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "-- $name ($(elapsed) s in; limit $limit s)"
    local t0
    t0=$(date +%s)
    timeout "$limit" "$@" >"$steps/$name.out" 2>>"$log"
    local rc=$?
    say "   $name: exit $rc after $(($(date +%s) - t0)) s"
    [ "$rc" -ne 0 ] && echo "$name $rc" >>"$work/failed"
    return 0
}

# Lavapipe compiles the portable bodies' many small kernels: 250-300 s there (a GPU: well under a minute).
step selftest 480 "$zoo" selftest --device "$device" --json "$out/selftest.json"
tee -a "$log" <"$steps/selftest.out" >&2
step scan 120 "$zoo" bench scan --device "$device" "${scan[@]}"
have_torch=no
if python3 -c "import torch, transformers, sys; sys.exit(0 if '$torch_device' == 'cpu' or torch.cuda.is_available() else 1)" 2>/dev/null; then
    have_torch=yes
else
    say "PyTorch reference: python3 has no torch and transformers with $torch_device here; not timed"
fi
reference() {
    local arch=$1 batch=$2
    if [ "$have_torch" = yes ] && [ "$arch" != mamba3 ]; then
        step "pytorch-$arch-$batch" 150 python3 "$here/lm_vs_pytorch.py" --reference-only \
            --arch "$arch" --torch-device "$torch_device" --prefill-batch "$batch" "${ref_shape[@]}"
    fi
}
lm() {
    local arch=$1 dtype=$2 batch=$3
    shift 3
    step "lm-$arch-$dtype-$batch" 150 "$zoo" bench lm --device "$device" --arch "$arch" \
        --dtype "$dtype" --prefill-batch "$batch" --decode-batch "$batch" "${shape[@]}" "$@"
}
# Priority order: each arch at batch 1 in f32 beside the reference, then batch 16, then half
# precision and the training steps.
for arch in "${archs[@]}"; do
    lm "$arch" f32 1
    reference "$arch" 1
done
for arch in "${archs[@]}"; do
    lm "$arch" f32 "$batch_big"
    reference "$arch" "$batch_big"
done
for dtype in "${dtypes[@]:1}"; do
    for arch in "${archs[@]}"; do
        lm "$arch" "$dtype" 1
        lm "$arch" "$dtype" "$batch_big"
    done
done
for arch in "${archs[@]}"; do
    step "train-$arch" 150 "$zoo" bench lm --device "$device" --arch "$arch" "${train[@]}"
done

python3 - "$out" "$work" "$mode" "$device" "$(elapsed)" <<'EOF'
import glob, json, os, sys
out, work, mode, device, seconds = sys.argv[1:6]
steps = os.path.join(work, "steps")

def load(name):
    """A step's JSON output (the whole of it, else its last line that parses)."""
    try:
        rows = [l for l in open(os.path.join(steps, name + ".out")) if l.strip()]
    except OSError:
        return None
    try:
        return json.loads("".join(rows))
    except ValueError:
        pass
    for l in reversed(rows):
        try:
            return json.loads(l)
        except ValueError:
            continue
    return None

def outputs(prefix):
    return sorted(os.path.basename(p)[:-4]
                  for p in glob.glob(os.path.join(steps, prefix + "*.out")))

def lines(name):
    try:
        return [l.split() for l in open(os.path.join(work, name)) if l.strip()]
    except OSError:
        return []

devices = [json.loads(l) for l in open(os.path.join(out, "devices.jsonl")) if l.strip()]
adapter = next((d for d in devices if d["device"] == device), None)
if adapter is None:
    adapter = next((d for d in devices if d["device"].startswith("wgpu")), None)
try:
    selftest = json.load(open(os.path.join(out, "selftest.json")))
except (OSError, ValueError):
    selftest = None
scan = load("scan")
lm = {n[3:]: load(n) for n in outputs("lm-")}
lm = {k: v for k, v in lm.items() if v}
train = {n[6:]: (load(n) or {}).get("training") for n in outputs("train-")}
torch = {n[8:]: load(n) for n in outputs("pytorch-")}
torch = {k: v for k, v in torch.items() if v}

ratios = []
for key, ref in torch.items():
    arch, batch = key.rsplit("-", 1)
    ours = lm.get(f"{arch}-f32-{batch}")
    if ours:
        p = ref["pytorch"]
        ratios.append({
            "arch": arch, "batch": int(batch),
            "prefill_last": ours["prefill_last_tokens_per_s"] / p["prefill_last_tokens_per_s"],
            "prefill_all_logits": ours["prefill_tokens_per_s"] / p["prefill_tokens_per_s"],
            # PyTorch's decode is batch 1 (its greedy loop); ours at batch 1 is compared.
            "decode": ours["decode_tokens_per_s"] / p["decode_tokens_per_s"]
                if int(batch) == 1 else None,
        })

def goal(name, value, target, at_least=True):
    ok = None if value is None else (value >= target if at_least else value <= target)
    return {"goal": name, "value": value, "target": target, "met": ok}

b1 = next((r for r in (scan or {}).get("runs", []) if r["batch"] == 1), None)
mamba = lm.get("mamba-f32-1")
goals = [
    goal("every selftest row passes",
         None if selftest is None else int(all(c["passed"] for c in selftest["checks"])), 1),
    goal("scan forward at B = 1: fraction of the copy's bandwidth",
         b1 and max(b1["one_pass_fraction_of_copy"], b1["spans_fraction_of_copy"],
                    b1["device_rule_fraction_of_copy"]), 0.6),
    goal("Mamba decode at batch 1, f32: tokens/s", mamba and mamba["decode_tokens_per_s"], 1000),
    goal("kernel launches per layer per decoded token (max over f32 batch-1 archs)",
         max((r["kernel_launches_per_token_per_layer"] or 0 for k, r in lm.items()
              if k.endswith("-f32-1")), default=None), 5, at_least=False),
    goal("Mamba decode vs PyTorch on the same GPU",
         next((r["decode"] for r in ratios if r["arch"] == "mamba" and r["batch"] == 1), None), 3),
]
result = {
    "mode": mode,
    "device": device,
    "adapter": adapter,
    "nvidia_smi": open(os.path.join(out, "nvidia-smi.csv")).read().strip().splitlines()
        if os.path.exists(os.path.join(out, "nvidia-smi.csv")) else None,
    "seconds": int(seconds),
    "selftest": None if selftest is None else {
        "passed": selftest["passed"], "seconds": selftest["seconds"],
        "checks": len(selftest["checks"]),
        "failed": [c for c in selftest["checks"] if not c["passed"]],
    },
    "scan": scan,
    "lm": lm,
    "training": train,
    "pytorch": torch,
    "zoo_over_pytorch": ratios,
    "goals": goals,
    "failed_steps": [" ".join(l) for l in lines("failed")],
    "skipped_steps": [l[0] for l in lines("skipped")],
}
with open(os.path.join(out, "gpu-results.json"), "w") as f:
    json.dump(result, f, indent=1)
for g in goals:
    print(f"goal: {g['goal']}: {g['value']} (target {g['target']}; met: {g['met']})",
          file=sys.stderr)
EOF
[ -s "$work/failed" ] && { say "failed steps: $(tr '\n' ' ' <"$work/failed")"; status=1; }
say "== written: $out/gpu-results.json ($(elapsed) s)"
exit $status
