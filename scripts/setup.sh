#!/usr/bin/env bash
# Set up t2i on a fresh machine: the CPU build of PyTorch, the package, and (with --dev) what the
# tests need: test tools, Debian's data packages and the emoji sources.
# Usage: bash scripts/setup.sh          # to generate images
#        bash scripts/setup.sh --dev    # to run the tests and train on the built-in data sets
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

python3 -m pip install --quiet torch==2.13.0   # the CPU wheel; an unpinned torch pulls a CUDA build
if [ "$dev" = 1 ]; then
  python3 -m pip install --quiet -e ".[test]"
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    # chromium + chromium-driver: the web page's browser test (driven by selenium); fonts-symbola:
    # the emoji style the emoji model never saw (t2i/data/emoji_symbola.py)
    pkgs="dataset-fashion-mnist fonts-noto-color-emoji fonts-symbola chromium chromium-driver"
    missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
  fi
  if [ -x scripts/install-emoji-sources.sh ]; then bash scripts/install-emoji-sources.sh; fi
else
  python3 -m pip install --quiet -e .
fi
echo "t2i set up: $(python3 -c 'import t2i; print(t2i.__version__)')"
