#!/usr/bin/env bash
# The GPU run (docs/gpu.md), in two stages that each fit the device tool's 10-minute limit:
#   scripts/gpu_run.sh grade   # autograde the reference solutions of Exercises 4-5 on CUDA + the figures
#   scripts/gpu_run.sh prove   # the grader tests for Exercises 4-5, CUDA-only cells included
#   scripts/gpu_run.sh class   # Exercise 5 submissions (good and broken) through GPU workers sharing the GPU,
#                              # without and with the clean-room verdict
#   scripts/gpu_run.sh cpu     # class-grading throughput of Exercise 1 on this machine's cores (docs/grading.md)
#   scripts/gpu_run.sh notebooks  # each solution notebook run top to bottom on the GPU, timed (and kept, outputs
#                                 # included: Exercise 5's QLoRA comparison, perplexities and 7B figures)
# Results go to $OUT (the device tool's output folder) or ./gpu-results.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
OUT="${OUT:-gpu-results}"; mkdir -p "$OUT"
GPU_EXERCISES="ex4_peft_finetuning ex5_quantized_inference"
case "${1:-grade}" in
  grade)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    ( time python3 -m instructor all $GPU_EXERCISES ) 2>&1 | tee "$OUT/instructor.txt"
    cp -r autograded/reference "$OUT/reference"
    python3 benchmarks/gpu_figures.py --json "$OUT/gpu_figures.json" 2>&1 \
      | grep -v -i -e MatMul8bitLt -e warn | tail -15 | tee "$OUT/figures.txt" ;;
  prove)
    ( time python3 -m pytest tests/test_autograde.py tests/test_answers.py -k "ex4 or ex5" -n 12 -rfs -q ) \
      > "$OUT/pytest.txt" 2>&1
    grep -E "^(FAILED|SKIPPED|ERROR)|passed|failed|^real" "$OUT/pytest.txt" ;;
  class)
    python3 benchmarks/grading_throughput.py --assignment ex5_quantized_inference --count 4 --skip-stock \
      --kinds "correct;partial;exhausts memory;os._exit kills the kernel" --workers 4 --gpu-workers "${GPU_WORKERS:-4}" \
      --json "$OUT/throughput_ex5.json" 2>&1 | grep --line-buffered -v -i -e warn -e MatMul8bitLt -e "grading:" \
      | tee "$OUT/class.txt" ;;
  cpu)
    python3 benchmarks/grading_throughput.py --assignment ex1_memory --count "${COUNT:-16}" --workers "${WORKERS:-4,16}" \
      --json "$OUT/throughput_ex1.json" 2>&1 | grep --line-buffered -v "grading:" | tee "$OUT/cpu.txt" ;;
  notebooks)
    mkdir -p "$OUT/notebooks"
    for nb in solution/*/*.ipynb; do
      name=$(basename "$nb" .ipynb)
      start=$SECONDS
      COURSE_ROOT="$PWD" MPLBACKEND=Agg timeout 420 python3 -m jupyter nbconvert --to notebook --execute \
        --ExecutePreprocessor.timeout=400 --output-dir "$OUT/notebooks" "$nb" > "$OUT/notebooks/$name.log" 2>&1
      rc=$?
      printf "%-28s %4d s  rc=%s\n" "$name" "$((SECONDS - start))" "$rc" | tee -a "$OUT/notebook_times.txt"
    done
    python3 - "$OUT/notebooks/ex5_quantized_inference.ipynb" <<'PY' | tee "$OUT/ex5_outputs.txt"
import json, sys
for cell in json.load(open(sys.argv[1]))["cells"]:
    if cell.get("id") in ("code_q4", "code_ppl", "code_q5", "code_q6", "code_q8"):
        print(f"--- {cell['id']}")
        for out in cell.get("outputs", []):
            print("".join(out.get("text", "")), end="")
PY
    ;;
  *) echo "usage: $0 grade|prove|class|cpu|notebooks" >&2; exit 2 ;;
esac
