#!/bin/sh
# libhark.so exports exactly the functions that include/hark.h declares:
# nothing else (no internal hark__ name, nothing from a static library
# linked in, such as libgcov.a under --coverage), and every one of them.
# With a version script (lib/libhark.map), each export carries the ABI's
# version node.
lib="${top_builddir:-.}/.libs/libhark.so"
header="${top_srcdir:-.}/include/hark.h"
here=$(dirname "$0")
if [ ! -f "$lib" ]; then
  echo "SKIP: $lib not built (static-only build?)"
  exit 77
fi
status=0

# name@@VERSION (binutils >= 2.37 prints versions by default) -> name, and
# the version in a list of its own
dynsyms=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDRBVWiu]$/ {print $3}' |
  grep -v -E '^(_init|_fini|_edata|_end|__bss_start)(@|$)')
exported=$(printf '%s\n' "$dynsyms" | sed 's/@.*//' | LC_ALL=C sort -u)
declared=$(sh "$here/api-functions.sh" "$header") || {
  echo "FAIL: cannot read the functions of $header"; exit 1; }
[ -n "$declared" ] || { echo "FAIL: no function found in $header"; exit 1; }

bad=$(printf '%s\n' "$exported" | grep -v -E '^hark_[^_]' || true)
if [ -n "$bad" ]; then
  echo "FAIL: exported, but not a public hark_ name:"
  printf '  %s\n' $bad
  status=1
fi
extra=$(printf '%s\n' "$exported" | grep -E '^hark_[^_]' |
  grep -v -x -F "$declared" || true)
if [ -n "$extra" ]; then
  echo "FAIL: exported, but not declared in include/hark.h:"
  printf '  %s\n' $extra
  status=1
fi
missing=$(printf '%s\n' "$declared" | grep -v -x -F "$exported" || true)
if [ -n "$missing" ]; then
  echo "FAIL: declared in include/hark.h, but not exported:"
  printf '  %s\n' $missing
  status=1
fi

if [ "${HARK_LD_VERSION_SCRIPT:-no}" = yes ]; then
  unversioned=$(printf '%s\n' "$dynsyms" | grep -v -E '@@?HARK_[0-9]+\.[0-9]+$' || true)
  if [ -n "$unversioned" ]; then
    echo "FAIL: exported without a HARK_x.y version node:"
    printf '  %s\n' $unversioned
    status=1
  fi
fi

[ $status -eq 0 ] || exit $status
count=$(printf '%s\n' "$exported" | wc -l)
echo "ok: $count functions exported, exactly those of include/hark.h" \
  "(version script: ${HARK_LD_VERSION_SCRIPT:-no})"
