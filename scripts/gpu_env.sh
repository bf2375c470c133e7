#!/usr/bin/env bash
# Source this on the GPU machine (no package registry there): installs the wheels carried in .gpu/wheels
# (nbgrader and its kernel, bitsandbytes, the course's transformers/peft versions) next to the image's
# own PyTorch, and points the course at them. See docs/gpu.md.
set -e
SITE=/tmp/course-site
if [ ! -d "$SITE" ]; then
  python3 -m pip install --quiet --no-index --no-deps --target "$SITE" .gpu/wheels/*.whl
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
export COURSE_OFFLINE=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
set +e
