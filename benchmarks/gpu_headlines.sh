#!/usr/bin/env bash
# The headline cases of the standard tier (issue 15, docs/headlines.md) trained on one CUDA device,
# one dataset per call: the 64 MiB a call carries holds the tracked files (23 MB) and one dataset
# (datasets/fashion-mnist 31 MB or datasets/cifar10-jpeg 20 MB), not both. Two steps per dataset:
#
#   benchmarks/gpu_headlines.sh carry fashion_mnist   # here: the wheel the GPU image lacks (.whl/),
#                                                     # and the paths to carry for that dataset
#   benchmarks/gpu_headlines.sh run fashion_mnist     # there, with those paths carried; results under $OUT
#
# fashion_mnist: the 6 `hl` cases of H1 (3 seeds + 3 single-seed ablations), 6 jobs.
# cifar10_jpeg:  the 5 `hl` cases of H2 and H3 (ResNet-20 at 92% sparsity, ResNet-56 at half the
#                MACs, and their ablations), 5 jobs.
# compress stops after 420 s so the cache is packed inside one 10-minute call. A case it stops
# resumes from its last epoch in the next call, if that call also carries .slimbench-cache
# (unpack $OUT/cache.tgz.* here first: `cat cache.tgz.* | tar -xz`).
#
# Back here: unpack $OUT/cache.tgz.* into the checkout, then measure with
#   slimbench run --tier standard --cached-only --case '*-<dataset>-*-hl*'
# and render the table with `python -m slimbench.headlines`.
set -uo pipefail
cd "$(dirname "$0")/.."

declare -A PATTERN=([fashion_mnist]='*-fashion_mnist-*-hl*' [cifar10_jpeg]='*-cifar10_jpeg-*-hl*')
declare -A JOBS=([fashion_mnist]=6 [cifar10_jpeg]=5)
declare -A CARRY=(
    [fashion_mnist]="datasets/fashion-mnist teachers/fashion_mnist_resnet56.pt teachers/fashion_mnist_resnet20.pt .whl"
    [cifar10_jpeg]="datasets/cifar10-jpeg teachers/cifar10_jpeg_resnet20.pt teachers/cifar10_jpeg_resnet56.pt .whl"
)

dataset() {
    [[ -n "${PATTERN[${1:-}]:-}" ]] || { echo "usage: $0 carry|run fashion_mnist|cifar10_jpeg" >&2; exit 2; }
}

carry() {
    mkdir -p .git/info && { grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
        "torch-pruning==$(.venv/bin/python -c 'from importlib.metadata import version; print(version("torch-pruning"))')"
    local extra=""
    [[ -d .slimbench-cache/standard ]] && extra=" .slimbench-cache  (resumes stopped cases)"
    echo "carry: ${CARRY[$1]}$extra"
    du -cshL ${CARRY[$1]} 2>/dev/null | tail -1
}

run() {
    local name=$1 out=${OUT:-/tmp/gpu-headlines} start n
    mkdir -p "$out"
    export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/run.log"
    n=$(python3 -m slimbench.cli list cases --tier standard | grep -c -- "-${name}-.*-hl" || true)
    echo "$n hl cases of $name in params.yaml" | tee -a "$out/run.log"
    if [[ "$n" -eq 0 ]]; then
        echo "no hl cases: add docs/headlines.md's entries to params.yaml" | tee -a "$out/run.log"; exit 2
    fi
    start=$(date +%s)
    python3 -m slimbench.cli prepare "$name" 2>&1 | tee -a "$out/run.log"
    timeout 420 python3 -m slimbench.cli compress --tier standard --device cuda --jobs "${JOBS[$name]}" \
        --case "${PATTERN[$name]}" --summary-json "$out/batch.json" > "$out/batch.log" 2>&1
    echo "compress exit $?; prepare + compress: $(( $(date +%s) - start )) s" | tee -a "$out/run.log"
    grep -h "epoch .* val_top1" "$out/batch.log" | tail -30
    tail -20 "$out/batch.log"
    tar -cz .slimbench-cache/standard | split -b 15M - "$out/cache.tgz."
}

case "${1:-}" in
    carry) dataset "${2:-}"; carry "$2" ;;
    run) dataset "${2:-}"; run "$2" ;;
    *) echo "usage: $0 carry|run fashion_mnist|cifar10_jpeg" >&2; exit 2 ;;
esac
