#!/usr/bin/env bash
# The main job on a fresh machine: set up, then segment the bundled synthetic nuclei
# sample with the bundled demo model, headless. Writes out/demo/labels.tif and
# out/demo/overlay.png and prints the mean IoU against the sample's ground truth.
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/napari-sam segment --sample nuclei-2d --model demo --out out/demo
