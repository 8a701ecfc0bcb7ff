#!/bin/sh
# Prepares a fresh checkout for ./configure. On Debian, as root, it first
# installs the build dependencies that are missing.
set -e
cd "$(dirname "$0")"

need=""
command -v autoreconf >/dev/null 2>&1 || need="$need autoconf automake"
command -v libtoolize >/dev/null 2>&1 || need="$need libtool"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v c++ >/dev/null 2>&1 || need="$need g++"
command -v make >/dev/null 2>&1 || need="$need make"
if command -v pkg-config >/dev/null 2>&1; then
  pkg-config --exists libuv || need="$need libuv1-dev"
  pkg-config --exists check || need="$need check"
else
  need="$need libuv1-dev check"
fi
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "autogen.sh: installing:$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need
  else
    echo "autogen.sh: please install:$need" >&2
    exit 1
  fi
fi
mkdir -p m4
autoreconf --install --force
