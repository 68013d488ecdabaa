#!/usr/bin/env bash
# Studies 2-4 of the standard tier (27 cifar10_jpeg cases: 9 configurations x 3 seeds) trained on
# one CUDA device in one command, then the trainer's GPU throughput. Two steps:
#
#   benchmarks/gpu_studies.sh carry     # here: wheels the GPU image lacks, into .whl/ (git-ignored)
#   benchmarks/gpu_studies.sh run       # there, with datasets/cifar10-jpeg, the three teachers and
#                                       # .whl carried; results under $OUT
#
# Back here: unpack $OUT/cache.tgz.* into .slimbench-cache/, `slimbench throughput --merge
# $OUT/throughput.json`, then measure with `slimbench run --tier standard --cached-only`.
# The cases are keyed as on this CPU (same data md5, teachers, code and the tier's thread count),
# so the CPU run finds them; run.log says which data md5 the device prepared.
# A dry run of the same steps on the CPU: PYTHON=.venv/bin/python DEVICE=cpu TIER=smoke CASE='quant_*' \
#   OUT=/tmp/dry benchmarks/gpu_studies.sh run
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3} DEVICE=${DEVICE:-cuda} TIER=${TIER:-standard}
CASES=(--case 'scratch-cifar10_jpeg-*' --case 'kd_logits-cifar10_jpeg-*' --case 'arch_*-cifar10_jpeg-*'
       --case 'lowrank_svd-cifar10_jpeg-*')
if [ -n "${CASE:-}" ]; then  # one or more space-separated patterns, e.g. CASE='prune_*-rt* prune_structured-*-resnet56'
  set -f; CASES=(); for p in $CASE; do CASES+=(--case "$p"); done; set +f
fi
CARRY=(datasets/cifar10-jpeg teachers/cifar10_jpeg_resnet56.pt teachers/cifar10_jpeg_resnet20.pt
       teachers/cifar10_jpeg_resnet20_weak.pt .whl)

carry() {
    mkdir -p .git/info && { grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
        "torch-pruning==$(.venv/bin/python -c 'from importlib.metadata import version; print(version("torch-pruning"))')"
    echo "carry: ${CARRY[*]}"
}

run() {
    local out=${OUT:-/tmp/gpu-studies} start
    mkdir -p "$out"
    export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } | tee "$out/run.log"
    start=$(date +%s)
    "$PYTHON" -m slimbench.cli prepare cifar10_jpeg 2>&1 | tee -a "$out/run.log"
    timeout 400 "$PYTHON" -m slimbench.cli compress --tier "$TIER" --device "$DEVICE" --jobs 9 "${CASES[@]}" \
        --summary-json "$out/batch.json" > "$out/batch.log" 2>&1
    echo "compress exit $?; prepare + compress: $(( $(date +%s) - start )) s" | tee -a "$out/run.log"
    tail -40 "$out/batch.log"
    tar -cz ".slimbench-cache/$TIER" | split -b 15M - "$out/cache.tgz."
    timeout 120 "$PYTHON" -m slimbench.cli throughput --device "$DEVICE" --threads 2 --rounds 5 --steps 20 \
        --warmup 5 --out "$out/throughput.json" 2>&1 | tee -a "$out/run.log"
}

case "${1:-}" in
    carry) carry ;;
    run) run ;;
    *) echo "usage: $0 carry|run" >&2; exit 2 ;;
esac
