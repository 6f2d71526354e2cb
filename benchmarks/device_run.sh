#!/bin/bash
# One prepared run on a lent machine, from the kit benchmarks/device_kit.py made (carried as $KIT):
# the machine's facts, the extension built there, the kernel and ISA tests, then bench.py with
# every engine interleaved (threads 1, 2, 4, 8, 16 as the machine has cores; batch 1 and 8).
# Then benchmarks/scaling.py: per op, what each thread count loses against perfect scaling
# (benchmarks/balance.py's model of the schedule before the bench, seconds).
# Everything goes to $OUT (log.txt, machine.txt, tests.txt, settle.json, balance.json, bench.json,
# scaling.json, plan_ab-N.json); each step has its own time limit, cut to what is left of the
# call's CALL_SECONDS (590, less 10 s to hand the files back) so the whole stays under one 10-minute
# call: the steps before the bench leave it its limit, the ones after get the rest or are skipped.  Before the bench, settle.py times the first variant back to back for
# SETTLE_SECONDS: whether the fresh machine runs slow at first (and a settled machine for the bench).
#   KIT=.device bash benchmarks/device_run.sh
# Environment: KIT (default .device), OUT (default /tmp/device-out), PYTHON (python3),
# TEST_SECONDS (90; 0 skips the tests), BENCH_SECONDS (360), RUNS (60), ROUNDS (2),
# THREADS (1,2,4,8,16, capped at the CPUs), VARIANTS (the kit's), SCALING_SECONDS (60; 0 skips),
# SCALING_VARIANT (the first of VARIANTS), AB (plan_ab.py experiments, below; none by default),
# AB_SECONDS (60 each), AB_VARIANTS, AB_THREADS, AB_BATCHES (1), AB_EACH (2 s per row and side),
# SETTLE_SECONDS (20; 0 skips: the first variant at 1 thread back to back before the bench, settle.py),
# CALL_SECONDS (590: the timeout_s of the call).
set -u -o pipefail
KIT=${KIT:-.device}
OUT=${OUT:-/tmp/device-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
[ -f "$KIT/site.tar.xz" ] || { echo "device_run: no kit at $KIT (make it with benchmarks/device_kit.py)"; exit 2; }
case "$KIT" in /*) ;; *) KIT="$PWD/$KIT" ;; esac
start=$(date +%s)
CALL_SECONDS=${CALL_SECONDS:-590}
# cap N: N seconds, or what is left of the call (10 s kept to hand the files back) where less;
# 0 where nothing is left (the step is then skipped)
cap() {
    local left=$(( CALL_SECONDS - 10 - ($(date +%s) - start) ))
    if [ "$left" -lt 1 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}
# run_capped NAME N COMMAND...: COMMAND under timeout (cap N), or a line saying it was skipped
run_capped() {
    local name=$1 limit
    limit=$(cap "$2")
    shift 2
    if [ "$limit" = 0 ]; then
        echo "# $name: skipped, no time left of the call's $CALL_SECONDS s"
        return 124
    fi
    timeout "$limit" "$@"
}
{
    date -u
    echo "nproc: $(nproc)"
    grep -m1 "model name" /proc/cpuinfo
    grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' | grep -E "^(avx|amx|fma)" | tr '\n' ' '
    echo
    lscpu 2>/dev/null
    for i in /sys/devices/system/cpu/cpu0/cache/index*; do
        echo "cache L$(cat "$i/level") $(cat "$i/type"): $(cat "$i/size")"
    done 2>/dev/null
    $PY --version
    gcc --version 2>/dev/null | head -1
} | tee "$OUT/machine.txt"

SITE=$(mktemp -d /tmp/mnv2-site.XXXXXX)
# Python's own tarfile and lzma: the machine's image need not have the xz program
$PY -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$KIT/site.tar.xz" "$SITE" \
    || { echo "device_run: could not unpack $KIT/site.tar.xz"; exit 2; }
export PYTHONPATH="$PWD:$SITE"
export MOBILENETV2_SHARED="$KIT/shared"
if ! $PY setup.py -q build_ext --inplace >"$OUT/build.txt" 2>&1; then
    tail -20 "$OUT/build.txt"
    echo "device_run: the C extension did not build (see build.txt)"
    exit 3
fi
$PY -c "import mobilenetv2; print('mobilenetv2 backend:', mobilenetv2.backend())" || exit 3
echo "# built after $(( $(date +%s) - start )) s"

TEST_SECONDS=${TEST_SECONDS:-90}
if [ "$TEST_SECONDS" != 0 ]; then
    run_capped tests "$TEST_SECONDS" $PY -m pytest -q -p no:cacheprovider tests/test_c_kernels.py tests/test_isa.py \
        tests/test_c_grids.py 2>&1 | tee "$OUT/tests.txt" | tail -5
    echo "# tests: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
fi

CPUS=$($PY -c "import os; print(len(os.sched_getaffinity(0)))")
THREADS=${THREADS:-$($PY -c "print(','.join(str(t) for t in (1, 2, 4, 8, 16) if t <= $CPUS))")}
VARIANTS=${VARIANTS:-$(cat "$KIT/VARIANTS")}
# whether the fresh machine runs slow at first (benchmarks/settle.py; it also settles it for the bench)
SETTLE_SECONDS=${SETTLE_SECONDS:-20}
if [ "$SETTLE_SECONDS" != 0 ]; then
    run_capped settle $((SETTLE_SECONDS + 30)) $PY benchmarks/settle.py --variant "${VARIANTS%%,*}" --seconds "$SETTLE_SECONDS" \
        --json "$OUT/settle.json"
    echo "# settle: exit $? after $(( $(date +%s) - start )) s"
fi
# the schedule as a model (no timing, seconds): how evenly this machine's plan shares each variant
run_capped balance 30 $PY benchmarks/balance.py --variants "$VARIANTS" --threads "$THREADS" --stages \
    --json "$OUT/balance.json" 2>&1 | tee "$OUT/balance.txt" | grep -v "^#   "
run_capped bench "${BENCH_SECONDS:-360}" $PY benchmarks/bench.py --variants "$VARIANTS" --threads "$THREADS" --batch8 \
    --engines c,ort,openvino,litert --runs "${RUNS:-60}" --rounds "${ROUNDS:-2}" --json "$OUT/bench.json" 2>&1 \
    | grep -v "^INFO: Created TensorFlow Lite XNNPACK delegate"
status=${PIPESTATUS[0]}
echo "# bench: exit $status after $(( $(date +%s) - start )) s"

# per op, what the threads lose against perfect scaling (benchmarks/scaling.py), for one variant
SCALING_SECONDS=${SCALING_SECONDS:-60}
if [ "$SCALING_SECONDS" != 0 ]; then
    run_capped scaling "$SCALING_SECONDS" $PY benchmarks/scaling.py --variant "${SCALING_VARIANT:-${VARIANTS%%,*}}" \
        --threads "$THREADS" --rounds 2 --runs 50 --json "$OUT/scaling.json" 2>&1 | tee "$OUT/scaling.txt"
    echo "# scaling: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
fi
# the plan's rules against other settings of them (benchmarks/plan_ab.py), one A/B per ';'-separated
# item of AB, each a ','-separated list of NAME=VALUE, e.g. AB="WEIGHTS_CACHED_BYTES=65536;FUSE_MIN_BYTES=inf"
if [ -n "${AB:-}" ]; then
    IFS=';' read -r -a experiments <<< "$AB"
    i=0
    for experiment in "${experiments[@]}"; do
        i=$((i + 1))
        sets=()
        IFS=',' read -r -a items <<< "$experiment"
        for item in "${items[@]}"; do sets+=(--set "$item"); done
        run_capped "plan_ab $i" "${AB_SECONDS:-60}" $PY benchmarks/plan_ab.py "${sets[@]}" --variants "${AB_VARIANTS:-$VARIANTS}" \
            --threads "${AB_THREADS:-$THREADS}" --batches "${AB_BATCHES:-1}" --seconds "${AB_EACH:-2}" \
            --json "$OUT/plan_ab-$i.json" 2>&1 | tee "$OUT/plan_ab-$i.txt"
        echo "# plan_ab $i: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
    done
fi
rm -rf "$SITE"
exit "$status"
