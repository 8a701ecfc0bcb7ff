#!/bin/sh
# Only hark_* symbols may leave libhark: everything else is hidden.
lib="${top_builddir:-.}/.libs/libhark.so"
if [ ! -f "$lib" ]; then
  echo "SKIP: $lib not built (static-only build?)"
  exit 77
fi
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDRBVW]$/ {print $3}' |
  grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' | sort)
bad=$(printf '%s\n' "$exported" | grep -v -E '^hark_' || true)
count=$(printf '%s\n' "$exported" | grep -c -E '^hark_' || true)
if [ -n "$bad" ]; then
  echo "FAIL: symbols exported without the hark_ prefix:"
  printf '  %s\n' $bad
  exit 1
fi
if printf '%s\n' "$exported" | grep -q -E '^hark__'; then
  echo "FAIL: internal hark__ symbols are exported"
  exit 1
fi
for need in hark_new hark_unref hark_weak_get hark_send hark_post hark_strerror; do
  printf '%s\n' "$exported" | grep -qx "$need" || { echo "FAIL: $need not exported"; exit 1; }
done
echo "ok: $count hark_* symbols exported, nothing else"
