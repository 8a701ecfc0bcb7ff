#!/bin/sh
# The man pages (man/*.3) document the whole API and format cleanly:
#  - every function that include/hark.h declares has a page, man/NAME.3,
#    either its group's page or a one-line ".so man3/GROUP.3" link to it;
#    the page's NAME lists it and its SYNOPSIS shows the header's prototype;
#  - every page in man/ is installed (listed in Makefile.am, passed here
#    as HARK_MAN_PAGES), links point at full pages, .TH names the file;
#  - man -l (man-db), groff -ww and mandoc -Tlint (each when installed)
#    print no warning for any page;
#  - each EXAMPLES program (a block starting with #include) compiles
#    against the header with the library's warnings as errors;
#  - man/hark-chatd.1 is installed, formats cleanly too, and has an entry
#    for every option `hark-chatd --help` lists and none other (when the
#    daemon is built).
# Environment (from AM_TESTS_ENVIRONMENT): top_srcdir, HARK_MAN_PAGES,
# HARK_EXAMPLE_CC, HARK_EXAMPLE_CFLAGS. The formatting check is skipped,
# with a message, when none of man, groff and mandoc is installed.
srcdir=${top_srcdir:-.}
here=$(dirname "$0")
mandir=$srcdir/man
header=$srcdir/include/hark.h
status=0
fail() { echo "FAIL: $*"; status=1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hark-man.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

# A link page is one line: .so man3/TARGET.3
link_target() {
  [ "$(wc -l <"$1")" -eq 1 ] && sed -n 's|^\.so man3/\([A-Za-z0-9_]*\.3\)$|\1|p' "$1"
}

# ---- every function has a page that names it and shows its prototype
sh "$here/api-functions.sh" --prototypes "$header" >"$tmp/header" ||
  { echo "FAIL: cannot read $header"; exit 1; }
[ -s "$tmp/header" ] || { echo "FAIL: no function found in $header"; exit 1; }
nfunc=0
while IFS='	' read -r name proto; do
  nfunc=$((nfunc + 1))
  page=$mandir/$name.3
  if [ ! -f "$page" ]; then
    fail "$name has no man page (man/$name.3)"
    continue
  fi
  target=$(link_target "$page")
  [ -n "$target" ] && page=$mandir/$target
  if [ ! -f "$page" ] || [ -n "$(link_target "$page")" ]; then
    fail "man/$name.3 links to man/$target, which is not a full page"
    continue
  fi
  awk '/^\.SH/ { in_name = ($2 == "NAME"); next } in_name' "$page" |
    tr ',' '\n' | sed 's/\\-.*//; s/[ 	]//g' | grep -q -x "$name" ||
    fail "$(basename "$page") does not list $name in its NAME section"
  shown=$(sh "$here/api-functions.sh" --prototypes --man "$page" |
    awk -F '	' -v n="$name" '$1 == n { print $2 }')
  if [ -z "$shown" ]; then
    fail "$(basename "$page") does not show $name in its SYNOPSIS"
  elif [ "$shown" != "$proto" ]; then
    fail "$(basename "$page") shows another prototype than include/hark.h:"
    echo "  page:   $shown"
    echo "  header: $proto"
  fi
done <"$tmp/header"

# ---- the pages themselves
pages=$(cd "$mandir" && ls *.3)
for p in $pages; do
  case " $(echo ${HARK_MAN_PAGES:-}) " in
    *" man/$p "*) ;;
    *) [ -n "${HARK_MAN_PAGES:-}" ] && fail "man/$p is not installed (add it to dist_man3_MANS)" ;;
  esac
  target=$(link_target "$mandir/$p")
  if [ -n "$target" ]; then
    [ -f "$mandir/$target" ] && [ -z "$(link_target "$mandir/$target")" ] ||
      fail "man/$p links to man3/$target, which is not a full page"
  elif grep -q '^\.so' "$mandir/$p"; then
    fail "man/$p: a link page is exactly one line: .so man3/PAGE.3"
  else
    th=$(sed -n 's/^\.TH \([^ ]*\) 3 .*/\1/p' "$mandir/$p")
    want=$(basename "$p" .3 | tr '[:lower:]' '[:upper:]')
    [ "$th" = "$want" ] || fail "man/$p: .TH should be '$want 3 ...', is '$th'"
  fi
done
for p in ${HARK_MAN_PAGES:-}; do
  [ -f "$srcdir/$p" ] || fail "$p is listed in dist_man3_MANS but missing"
done

# ---- section 1: the daemon's page
pages1=$(cd "$mandir" && ls *.1 2>/dev/null)
for p in $pages1; do
  case " $(echo ${HARK_MAN_PAGES:-}) " in
    *" man/$p "*) ;;
    *) [ -n "${HARK_MAN_PAGES:-}" ] && fail "man/$p is not installed (add it to dist_man1_MANS)" ;;
  esac
  th=$(sed -n 's/^\.TH \([^ ]*\) 1 .*/\1/p' "$mandir/$p")
  want=$(basename "$p" .1 | tr '[:lower:]' '[:upper:]')
  [ "$th" = "$want" ] || fail "man/$p: .TH should be '$want 1 ...', is '$th'"
done
# Each option of --help has an entry (.B or .BI --name, as .TP heads),
# and each entry is an option --help lists.
daemon=${top_builddir:-.}/examples/chatd/hark-chatd
noptions=0
if [ -f "$mandir/hark-chatd.1" ] && [ -x "$daemon" ]; then
  "$daemon" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p' | sort >"$tmp/help"
  [ -s "$tmp/help" ] || fail "hark-chatd --help lists no option"
  sed 's/\\-/-/g' "$mandir/hark-chatd.1" | awk '
    heading && /^\.BI? --/ { sub(/^\.BI? --/, ""); sub(/[^a-z0-9-].*/, ""); print }
    { heading = /^\.TP/ }' | sort -u >"$tmp/page"
  for o in $(comm -23 "$tmp/help" "$tmp/page"); do
    fail "man/hark-chatd.1 does not document --$o (hark-chatd --help lists it)"
  done
  for o in $(comm -13 "$tmp/help" "$tmp/page"); do
    fail "man/hark-chatd.1 documents --$o, which hark-chatd --help does not list"
  done
  noptions=$(wc -l <"$tmp/help")
fi

# ---- formatting: no warning from man -l (resolving .so links as an
# installed man3 directory would) nor from groff -ww
linted=
ln -s "$(cd "$mandir" && pwd)" "$tmp/man3"
ln -s "$(cd "$mandir" && pwd)" "$tmp/man1"
if man --version >/dev/null 2>&1; then
  linted="man -l"
  for p in $pages $pages1; do
    sec=${p##*.}
    out=$(cd "$tmp" && LC_ALL=C.UTF-8 MANWIDTH=80 MAN_KEEP_FORMATTING= \
      man --warnings=w -E UTF-8 -l "man$sec/$p" 2>&1 >"$tmp/out")
    [ -z "$out" ] || { fail "man -l man/$p:"; printf '%s\n' "$out"; }
    [ -s "$tmp/out" ] || fail "man -l man/$p printed nothing"
  done
fi
if command -v groff >/dev/null 2>&1; then
  linted="$linted${linted:+, }groff -ww"
  for p in $pages $pages1; do
    [ -n "$(link_target "$mandir/$p")" ] && continue
    out=$(groff -man -Tutf8 -ww -z "$mandir/$p" 2>&1)
    [ -z "$out" ] || { fail "groff -ww man/$p:"; printf '%s\n' "$out"; }
  done
fi
if command -v mandoc >/dev/null 2>&1; then
  linted="$linted${linted:+, }mandoc -Tlint"
  for p in $pages $pages1; do
    [ -n "$(link_target "$mandir/$p")" ] && continue
    out=$(mandoc -Tlint -Wwarning "$mandir/$p" 2>&1)
    [ -z "$out" ] || { fail "mandoc -Tlint man/$p:"; printf '%s\n' "$out"; }
  done
fi

# ---- EXAMPLES that are whole programs compile
compiled=0
if [ -n "${HARK_EXAMPLE_CC:-}" ]; then
  for p in $pages; do
    [ -n "$(link_target "$mandir/$p")" ] && continue
    awk -v dir="$tmp" -v base="$(basename "$p" .3)" '
      /^\.EX/ { n++; f = dir "/" base "-" n ".c"; inex = 1; first = 1; next }
      /^\.EE/ { inex = 0; next }
      inex { if (first && $0 !~ /^#include/) { inex = 0; next }
             first = 0; print > f }' "$mandir/$p"
  done
  for c in "$tmp"/*.c; do
    [ -f "$c" ] || continue
    sed -i -e 's/\\-/-/g' -e 's/\\e/\\/g' -e "s/\\\\(aq/'/g" \
      -e 's/\\(dq/"/g' -e 's/\\&//g' "$c"
    # shellcheck disable=SC2086
    out=$($HARK_EXAMPLE_CC ${HARK_EXAMPLE_CFLAGS:-} -fsyntax-only "$c" 2>&1) ||
      { fail "an example of man/$(basename "$c" | sed 's/-[0-9]*\.c$//').3 does not compile:"
        printf '%s\n' "$out"; }
    compiled=$((compiled + 1))
  done
fi

[ $status -eq 0 ] || exit 1
echo "ok: $nfunc functions, each with its page; $(echo $pages | wc -w) pages;" \
  "$compiled example programs compiled"
if [ "$noptions" -gt 0 ]; then
  echo "ok: man/hark-chatd.1 documents the $noptions options of --help"
else
  echo "note: hark-chatd not built: its options were not checked against man/hark-chatd.1"
fi
if [ -z "$linted" ]; then
  echo "SKIP: formatting not checked: none of man (man-db), groff, mandoc installed"
  exit 77
fi
echo "ok: no warning from $linted"
