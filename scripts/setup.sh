#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian/Ubuntu machine for napari-sam.
#   bash scripts/setup.sh            # runtime (CLI, engine, demo model)
#   bash scripts/setup.sh testing    # + test tools, Qt, virtual X server, oracles
# Creates .venv/ in the repository root. Needs python3 (>= 3.10) with venv.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA="${1:-}"

SYS_PKGS=(xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1)
if [ "$EXTRA" = "testing" ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${SYS_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned to the builds we test with (CPU use needs nothing else)
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
# one Qt binding: venvs made before the move to PyQt6 still hold PyQt5, which qtpy
# would pick first
if .venv/bin/python -c "import PyQt5" 2>/dev/null; then
  .venv/bin/python -m pip uninstall -y -q pyqt5 pyqt5-qt5 pyqt5-sip
fi
if [ "$EXTRA" = "testing" ]; then
  "${PIP[@]}" -e ".[testing]"
else
  "${PIP[@]}" -e ".[qt]"
fi
