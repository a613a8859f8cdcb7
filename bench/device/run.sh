#!/usr/bin/env bash
# The GPU checks of a lent device machine in one call: the CUDA tests, then the
# benchmarks that have GPU rows. See docs/performance.md, "GPU figures on a lent machine".
#
# Run by the device tool from the repository root, carrying .devkit (made here first by
# `python bench/device/make_kit.py`):
#     bash bench/device/run.sh [SECONDS] [BENCHMARK...]
# SECONDS (default 520) bounds the whole script, so it ends inside the tool's 600-second
# call with its results; each step gets at most what is left. BENCHMARK defaults to
# "hand_object detector model pipeline" (first the ones open issues wait on).
# QUICK=1 runs the benchmarks' --quick variants. Results land in $OUT (the tool's folder
# that comes back; /tmp/hflpipe-device elsewhere): the benchmarks' JSON, steps.log with
# each step's status and seconds, gpu.txt, cuda_tests.log and bench.log.
set -uo pipefail

budget=${1:-520}
shift $(( $# > 0 ? 1 : 0 ))
benchmarks=("$@")
[ ${#benchmarks[@]} -gt 0 ] || benchmarks=(hand_object detector model pipeline)
out=${OUT:-/tmp/hflpipe-device}
mkdir -p "$out"
started=$SECONDS

note() { echo "[$(( SECONDS - started )) s] $*" | tee -a "$out/steps.log"; }
left() { echo $(( budget - (SECONDS - started) )); }

# A step runs for at most its cap or what is left of the budget, whichever is less.
step() {
    local name=$1 cap=$2 log=$3
    shift 3
    local limit
    limit=$(left)
    (( limit > cap )) && limit=$cap
    if (( limit < 20 )); then
        note "$name: skipped, $(left) s left"
        return
    fi
    local begun=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local status=$?
    note "$name: exit $status after $(( SECONDS - begun )) s (limit $limit s)"
}

site=/tmp/hflpipe-site
fixtures=/tmp/hflpipe-fixtures/hflnet
mkdir -p "$site" "$fixtures"
tar -xJf .devkit/site.tar.xz -C "$site" && tar -xJf .devkit/fixtures.tar.xz -C "$fixtures" \
    || { note "unpacking .devkit failed (made by bench/device/make_kit.py?)"; exit 1; }
# The fixture files the package also ships (make_kit.py leaves them out of the kit).
cp model/data/mano_synthetic_right.npz model/data/checkpoint_manifest.json \
    model/data/ycb_bbox21.json "$fixtures"/
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export HFLPIPE_FIXTURES="$fixtures"
export PYTHONUNBUFFERED=1
if ! python3 -m pip install --quiet --no-deps --no-build-isolation --no-index -e . \
        >>"$out/steps.log" 2>&1; then
    # pyproject's package-dir by hand: hflpipe's own modules, model/, pipeline/ and bench/
    # linked into one hflpipe package.
    shim=/tmp/hflpipe-src/hflpipe
    mkdir -p "$shim"
    ln -sf "$PWD"/hflpipe/*.py "$shim"/
    for part in model pipeline bench; do ln -sfn "$PWD/$part" "$shim/$part"; done
    export PYTHONPATH="/tmp/hflpipe-src:$PYTHONPATH"
    note "pip could not install hflpipe (see above); it runs from links in /tmp/hflpipe-src"
fi
note "installed: $(python3 -c 'import torch, ray, av, pydantic, hflpipe;
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "ray", ray.__version__,
      "av", av.__version__, "hflpipe", hflpipe.__version__)' 2>&1 | tail -1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1

step "CUDA tests" 150 "$out/cuda_tests.log" \
    python3 -m pytest -n 0 -m needs_cuda -p no:cacheprovider -q -o addopts="-ra"
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
for name in "${benchmarks[@]}"; do
    step "bench $name" 300 "$out/bench.log" python3 -m bench "$name" --out "$out" "${quick[@]}"
done
note "done; results in $out"
