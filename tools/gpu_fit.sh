#!/usr/bin/env bash
# celltrain fit --backend keras3 on a lent GPU machine that has Python with JAX (or PyTorch), click, numpy and
# OpenCV, but no TensorFlow and no network (docs/gpu-training.md). Run there, from a copy of this repository:
#
#   tools/gpu_fit.sh OUT [celltrain fit options ...]
#   e.g. tools/gpu_fit.sh $OUT/g1 --epochs 140 --augment strong --mixup 0.3 --batch-size 128 --lr 2e-3 \
#        --weight-decay 0.05 --warmup-epochs 5 --label-smoothing 0.1 --ema 0.999 --mixed-precision --seed 0
#
# It needs, carried beside the repository (ignored by git):
#   .whl/  the wheels of Keras 3 and what it needs that such machines lack (keras, namex, optree), downloaded here:
#          pip download --no-deps --only-binary :all: --python-version 3.12 \
#              --platform manylinux_2_28_x86_64 --dest .whl keras namex optree   (match the device's Python)
#   .gpu/pbc96.npz  celltrain pack ../shared/data/pbc96 SPLIT .gpu/pbc96.npz (train and val images only)
# The --data default below is that pack; a --data option given after OUT wins.
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "Error: give OUT (a folder for the weights, e.g. \$OUT/g1) first, then celltrain fit's options" >&2
    exit 2
fi
out=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
ls "$root"/.whl/*.whl >/dev/null 2>&1 || { echo "Error: no wheels in $root/.whl (see the top of $0)" >&2; exit 2; }
[ -f "$root/.gpu/pbc96.npz" ] || { echo "Error: no pack at $root/.gpu/pbc96.npz (see the top of $0)" >&2; exit 2; }
site=$(mktemp -d /tmp/scopelite-site.XXXXXX)
pkg=$(mktemp -d /tmp/scopelite-pkg.XXXXXX)
python3 -m pip install -q --no-index --no-deps --target "$site" "$root"/.whl/*.whl
mkdir "$pkg/scopelite"  # the layout pip install makes of train/, edge/ and compress/ (package-dir)
for part in train edge compress; do ln -s "$root/$part" "$pkg/scopelite/$part"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>/dev/null || true
cd "$root"
PYTHONPATH="$site:$pkg" KERAS_BACKEND="${KERAS_BACKEND:-jax}" python3 -c \
    'import sys; from scopelite.edge._entry import celltrain; sys.argv[0] = "celltrain"; celltrain()' \
    fit --backend keras3 --data .gpu/pbc96.npz --out "$out" "$@"
