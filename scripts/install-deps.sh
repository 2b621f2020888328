#!/usr/bin/env bash
# Installs everything unime needs on Debian 12 (run as root). A no-op when all is there.
# System packages come from Debian's archive; test assets and peers from npm (tests/node).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas-dev libgloo-dev          # tensors, autograd, oneDNN bf16, c10d (+Gloo)
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libstb-dev   # header-only
  libonig-dev libutf8proc-dev                       # tokenizer: Oniguruma regexes, Unicode normalisation
  libfaiss-dev                                      # search index
  libplplot-dev plplot-driver-cairo                 # charts: PLplot; its cairo driver writes PNG
  chromium                                          # the search page's browser test (playwright-core)
  libgtest-dev libgmock-dev libbenchmark-dev        # tests, benches
  clang libclang-rt-14-dev                          # libFuzzer targets
  python3-torch python3-numpy python3-pil           # independent reference computations in tests
)
# node + npm (tokenizer reference, openai client): checked by command, not by package, because a
# machine may carry another build of Node.js whose package conflicts with Debian's npm
NODE_PKGS=()
command -v node >/dev/null 2>&1 || NODE_PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || NODE_PKGS+=(npm)

missing=("${NODE_PKGS[@]}")
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages (${missing[*]}); run this script as root" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm test assets (real tokenizer.json files, the HF tokenizers library for Node, ...).
if [ -f tests/node/package.json ]; then
  if [ ! -d tests/node/node_modules ] || [ tests/node/package.json -nt tests/node/node_modules ]; then
    (cd tests/node && npm install --no-audit --no-fund --loglevel=error && touch node_modules)
  fi
fi
