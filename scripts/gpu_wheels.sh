#!/usr/bin/env bash
# Fill .gpu/wheels with what the GPU machine lacks (it has PyTorch and many packages, no registry),
# small enough for the device tool's 64 MiB carry: run once, here, where PyPI is reachable.
# scripts/gpu_env.sh installs them there. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.gpu/wheels
mkdir -p "$DEST"
PLATFORMS="--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"
python3 -m pip download -q -d "$DEST" --python-version 3.12 --implementation cp --only-binary=:all: $PLATFORMS \
    nbgrader==0.9.6 ipykernel psutil
python3 -m pip download -q -d "$DEST" --no-deps --python-version 3.12 --implementation cp --only-binary=:all: \
    --platform manylinux_2_24_x86_64 transformers==5.23.0 peft==0.21.2 bitsandbytes==0.50.2

# Drop what the GPU image already has (docs: the device tool's KINDS.md package list) and what grading
# never imports (the Jupyter front ends, the debugger, completion).
ALREADY_THERE="anyio attrs certifi charset-normalizer click filelock fsspec h11 httpcore httpx huggingface-hub
idna jinja2 markupsafe matplotlib numpy packaging pillow pip psutil pygments python-dateutil pyyaml regex
requests rich safetensors setuptools six tokenizers tqdm typing-extensions urllib3 wheel zipp tzdata lxml
simplejson msgpack prometheus-client"
NOT_IMPORTED="jupyterlab widgetsnbextension jupyterlab-widgets babel debugpy jupyter-builder jedi parso ipywidgets
jupyter-lsp notebook-shim json5 async-lru jupyterlab-server jupyter-console jupyter"
for wheel in "$DEST"/*.whl; do
  name=$(basename "$wheel"); name=${name%%-[0-9]*}; name=$(echo "$name" | tr '_A-Z' '-a-z')
  for drop in $ALREADY_THERE $NOT_IMPORTED; do
    [ "$name" = "$drop" ] && rm "$wheel" && break
  done
done

# bitsandbytes ships a library per CUDA version; the machine's torch is built for CUDA 13.
python3 - "$DEST" <<'EOF'
import pathlib, re, sys, zipfile
for wheel in pathlib.Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not re.search(r"libbitsandbytes_(cuda1[12]\d|rocm|xpu)", item.filename):
                dst.writestr(item, src.read(item))
    slim.replace(wheel)
EOF
du -sh "$DEST"
