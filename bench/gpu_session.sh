#!/usr/bin/env bash
# Everything the GPU benchmarks and kernel tests need, in one call on an H100/H200, each step under its own time
# limit so one slow or failing step cannot take the others' time. Logs and reports go to $OUT (default
# ./gpu-results). Run from the repository root with mixarch importable, e.g. through the device tool:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#   bash bench/gpu_session.sh [STEP ...]         # steps: tests gluon_tests lightning skip_ab sweep infllm infllm_profile pdl rank_ab topk_ab early_ab ab tma_ab eager_ab e2e
#                                                # (default: tests lightning infllm e2e)
#
# The limits add up to about 28 minutes; a device call allows 10, so split the steps over calls (e.g.
# "tests lightning", then "infllm", then "e2e").
#
# tests: the Triton kernel tests and the full conformance matrix (fp32, bf16, fp16) with CUDA_LAUNCH_BLOCKING=1,
#        so an illegal memory access fails the test whose kernel made it (not a later test of the same worker).
#        The repository's pytest addopts are replaced by -ra there, so that an older pytest-xdist on the GPU image
#        (without --dist worksteal) cannot stop the run.
# gluon_tests: only the Gluon Lightning tests (every WIDE / ORDER variant bit for bit against the Triton kernels).
# lightning / infllm: bench/lightning.py (128K first) and bench/infllm_v2.py. fla autotunes dozens of configs per
#        kernel at its first call, compiled one after another (minutes on a fresh machine), so lightning runs
#        without fla unless WITH_FLA=1, which first compiles them in 14 processes (bench/fla_precompile.py, ~80 s).
# skip_ab: bench/lightning_skip_ab.py (the state passes with and without skipping underflowing chunks, segment lengths;
#        with fla when WITH_FLA=1, after its precompile).
# sweep: bench/lightning_sweep.py (launch configurations of the Lightning kernels at 128K; SWEEP_ROWS="0 11" picks rows).
# infllm_profile: bench/infllm_v2_profile.py --sweep (per-kernel profile, backward launch variants, decode, eager host time).
# pdl:   bench/pdl_ab.py (programmatic dependent launch on and off: decode step, layer forward).
# rank_ab: bench/decode_rank_ab.py (the decode op, top-k by rank counting, against select + stage 2; OWN).
# topk_ab: bench/topk_launch_ab.py (launch configurations of the prefill top-k: rows per program, warps).
# early_ab: bench/early_scores_ab.py (decode: the score kernel's first key tile before its PDL wait, on / off).
# ab:    bench/decode_split_sweep.py (decode stage 2: programs per split) and bench/window_ab.py (stage 2: blocks per
#        key tile of the window kernels), the A/B scripts behind SPLIT_SLOTS and WINDOW_STEP.
# tma_ab: bench/tma_ab.py (the gather kernels' key / value tiles by TMA against per-thread loads, same process),
#        then bench/gather_probe.py (the gathers on small working sets: what bounds them).
# eager_ab: bench/eager_launch_ab.py (direct launches against the custom ops' wrap_triton, same process), then
#        bench/lightning_host.py (GPU time with launches queued against host time).
# e2e:   bench/e2e.py with its measurement budget (E2E_BUDGET seconds, default 300).
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests lightning infllm e2e)

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, keep the log, print its tail
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s"
    tail -n 30 "$OUT/$name.log"
}

nvidia-smi -L
for s in "${steps[@]}"; do
    case $s in
        tests) CUDA_LAUNCH_BLOCKING=1 step tests 540 python3 -m pytest -q -n 8 -p no:cacheprovider -o addopts=-ra \
                   tests/test_triton_lightning.py tests/test_triton_infllm_v2.py tests/test_triton_infllm_v2_decode.py \
                   tests/test_kernel_conformance.py \
                   tests/test_triton_mutation_analysis.py ;;
        gluon_tests) CUDA_LAUNCH_BLOCKING=1 step gluon_tests 300 python3 -m pytest -q -n 8 -p no:cacheprovider -o addopts=-ra \
                         tests/test_triton_lightning.py -k gluon ;;
        lightning) if [ "${WITH_FLA:-0}" = 1 ]; then
                       fla=()
                       step fla_precompile 210 python3 bench/fla_precompile.py 14
                   else
                       fla=(--no-fla)
                   fi
                   step lightning 290 python3 bench/lightning.py "${fla[@]}" --lengths 131072 65536 32768 16384 4096 \
                       --out "$OUT/lightning.md" ;;
        skip_ab) if [ "${WITH_FLA:-0}" = 1 ]; then
                     step fla_precompile 210 python3 bench/fla_precompile.py 14
                     step skip_ab 240 python3 bench/lightning_skip_ab.py --fla
                 else
                     step skip_ab 240 python3 bench/lightning_skip_ab.py
                 fi ;;
        sweep) step sweep 240 python3 bench/lightning_sweep.py ${SWEEP_ROWS:+--rows $SWEEP_ROWS} ;;
        infllm) step infllm 300 python3 bench/infllm_v2.py --out "$OUT/infllm_v2.md" ;;
        infllm_profile) step infllm_profile 240 python3 bench/infllm_v2_profile.py --sweep ;;
        pdl) step pdl 150 python3 bench/pdl_ab.py ;;
        rank_ab) step rank_ab 200 python3 bench/decode_rank_ab.py ;;
        topk_ab) step topk_ab 200 python3 bench/topk_launch_ab.py ;;
        early_ab) step early_ab 200 python3 bench/early_scores_ab.py ;;
        ab) step decode_split 120 python3 bench/decode_split_sweep.py
            step window_ab 240 python3 bench/window_ab.py ;;
        tma_ab) step tma_ab 200 python3 bench/tma_ab.py
                step gather_probe 150 python3 bench/gather_probe.py ;;
        eager_ab) step eager_ab 180 python3 bench/eager_launch_ab.py
                  step lightning_host 120 python3 bench/lightning_host.py ;;
        e2e) step e2e $(( ${E2E_BUDGET:-300} + 150 )) python3 bench/e2e.py --budget "${E2E_BUDGET:-300}" --breakdown \
                 --out "$OUT/e2e.md" ;;
        *) echo "unknown step $s (tests, gluon_tests, lightning, skip_ab, sweep, infllm, infllm_profile, pdl, rank_ab, ab, tma_ab, eager_ab, e2e)" >&2; exit 2 ;;
    esac
done
