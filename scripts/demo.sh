#!/usr/bin/env bash
# The main job on a fresh machine: set up, then segment everything (automatic masks) in
# the bundled synthetic nuclei sample with the bundled demo model, headless. Writes
# out/demo/labels.tif and out/demo/labels_overlay.png and prints the object F1 against
# the sample's ground truth.
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/napari-sam amg --sample nuclei-2d --model demo --out out/demo/labels.tif
