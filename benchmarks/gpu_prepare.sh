#!/usr/bin/env bash
# Prepare local/gpu/ (git-ignored) for benchmarks/gpu_check.sh on a GPU machine that has no
# network: the wheels its image lacks (torchdyn and what torchdyn.numerics imports), the offline
# data and the vendored upstream snapshots. Run here, in the repository root:
#
#     benchmarks/gpu_prepare.sh [SHARED_DIR]      # SHARED_DIR holds data/ and vendor/ (default ../shared)
#
# Result (about 12 MB): local/gpu/wheels/*.whl, local/gpu/shared/{data,vendor}; carry "local/gpu".
set -euo pipefail
shared=${1:-../shared}
dest=local/gpu
for sub in data/mnist/t10k-images-idx3-ubyte.gz data/miniboone/first_rows.npy vendor/torchprune-v2.2.0 vendor/ffjord/lib; do
    [ -e "$shared/$sub" ] || { echo "error: $shared/$sub is missing; pass the folder that holds data/ and vendor/" >&2; exit 2; }
done
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/wheels" "$dest.tmp/shared"
cp -r "$shared/data" "$shared/vendor" "$dest.tmp/shared/"
chmod -R u+w "$dest.tmp"
# pure-Python wheels, pinned to the versions this repository is tested with; the GPU image has
# torch, torchdiffeq, numpy, scipy, attrs, pyyaml, tqdm, matplotlib, pandas, h5py, pytest
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest.tmp/wheels" torchdyn==1.0.6 torchcde==0.2.5 torchsde==0.2.6 trampoline==0.1.2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
du -sh "$dest"
