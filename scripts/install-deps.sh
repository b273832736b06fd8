#!/usr/bin/env bash
# Installs what building kiln needs, from Debian 12 packages; with --test also what the tests need.
# Idempotent; quiet when everything is present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev
  python3 python3-pip unzip
  libcpp-httplib-dev                  # kiln serve's HTTP server
  libedit-dev                         # kiln chat's line editing and history (BSD editline)
)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(python3-venv chromium)   # server tests: the openai client's venv, the chat page in headless Chromium
  packages+=(tmux)                    # tests/cli/chat_terminal.sh drives kiln chat in a terminal (Ctrl-C, arrows)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
