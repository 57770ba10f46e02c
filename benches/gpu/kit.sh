#!/usr/bin/env bash
# Builds the GPU kit: everything a lent GPU machine without a Rust toolchain or a network needs
# to check and measure the zoo's kernels in one call (issue 33), in one git-ignored folder under
# 64 MiB:
#   zoo.xz          the release `zoo` binary, stripped and compressed;
#   debs/*.deb      the Vulkan loader (libvulkan1), for a machine whose system has none;
#   on-device.sh    what runs there (see its header);
#   lm_vs_pytorch.py  the PyTorch reference timed on the same GPU.
#
#   benches/gpu/kit.sh [KIT_DIR]        (default: .gpu-kit in the repository root)
#
# Run here (Debian/Ubuntu with cargo and apt-get); the last line of output is the kit folder's
# path, the line before it its size. Then on the GPU machine: `bash KIT_DIR/on-device.sh`.
# CI builds it and runs on-device.sh --reduced against Mesa's lavapipe, so the kit keeps
# working between lent machines.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kit=${1:-$root/.gpu-kit}
target="${CARGO_TARGET_DIR:-$root/target}"
limit=$((64 * 1024 * 1024))

cd "$root"
# The workspace's targets, tests included: the same feature resolution as README's test command
# (dev-dependencies unify features of shared crates), so after the tests this rebuilds nothing;
# `-p ssm-zoo-cli` alone would resolve other features and rebuild Burn (20+ minutes).
echo "== build: cargo build --release --workspace --all-targets" >&2
cargo build --release --workspace --all-targets >&2
rm -rf "$kit"
mkdir -p "$kit/debs"
strip -o "$kit/zoo" "$target/release/zoo"
echo "zoo: $(stat -c %s "$target/release/zoo") bytes, $(stat -c %s "$kit/zoo") stripped" >&2
xz -T0 -6 -f "$kit/zoo"
echo "zoo.xz: $(stat -c %s "$kit/zoo.xz") bytes" >&2

# The Vulkan loader for x86-64 (the GPU machine's processor, whatever this one's is), from the
# distribution's archive: lists of amd64 packages of their own, so this machine's apt state is
# untouched.
echo "== apt-get download libvulkan1 (amd64)" >&2
lists=$(mktemp -d)
trap 'rm -rf "$lists"' EXIT
mkdir -p "$lists/partial"
apt_opts=(-o APT::Architecture=amd64 -o APT::Architectures=amd64 -o "Dir::State::Lists=$lists"
    -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$kit/debs" && apt-get "${apt_opts[@]}" download libvulkan1 >&2)

cp benches/gpu/on-device.sh benches/reference/lm_vs_pytorch.py "$kit/"
chmod +x "$kit/on-device.sh"

size=$(du -sb "$kit" | cut -f1)
if [ "$size" -ge "$limit" ]; then
    echo "kit.sh: the kit is $size bytes, over the 64 MiB a device call carries" >&2
    exit 1
fi
echo "$size"
echo "$kit"
