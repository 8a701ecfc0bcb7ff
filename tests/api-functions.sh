#!/bin/sh
# Prints the public functions that a header declares (those marked
# HARK_EXTERN), or that a man page's SYNOPSIS shows, one a line, sorted:
# the lists that the symbol and man page tests compare.
#   api-functions.sh [--prototypes] HEADER
#   api-functions.sh [--prototypes] --man PAGE
# prints names, or with --prototypes: name, a tab, the prototype with its
# white space collapsed (so that the header's and a page's compare equal
# however each is wrapped).
# The text is read, not compiled: comments and preprocessor lines go (in
# a page, first everything but the SYNOPSIS and the roff requests, and
# roff's escapes become C again), then the text is cut at every ';'. A
# statement that has a '(' and an identifier just before its first '('
# declares that function; in a header it must also start with
# HARK_EXTERN.
protos=no
man=no
while [ $# -gt 1 ]; do
  case $1 in
    --prototypes) protos=yes ;;
    --man) man=yes ;;
    *) break ;;
  esac
  shift
done
[ $# -eq 1 ] && [ -f "$1" ] || {
  echo "usage: $0 [--prototypes] [--man] FILE" >&2; exit 2; }

if [ $man = yes ]; then
  # the SYNOPSIS section without its requests; \- \e \(aq \(dq \& and
  # font changes back to plain text
  awk '/^\.SH/ { in_syn = ($2 == "SYNOPSIS"); next }
       in_syn && !/^[.'"'"']/' "$1" |
    sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g' -e 's/\\e/\\/g' \
      -e "s/\\\\(aq/'/g" -e 's/\\(dq/"/g' -e 's/\\&//g'
else
  cat "$1"
fi | awk -v protos="$protos" -v need_extern="$([ $man = yes ] && echo no || echo yes)" '
  { text = text $0 "\n" }
  END {
    # drop /* */ comments (there are no // ones, nor "/*" in strings)
    while ((i = index(text, "/*")) > 0) {
      rest = substr(text, i + 2)
      j = index(rest, "*/")
      if (j == 0) break
      text = substr(text, 1, i - 1) " " substr(rest, j + 2)
    }
    # then preprocessor lines, with their continuation lines
    n = split(text, line, "\n")
    text = ""
    cont = 0
    for (k = 1; k <= n; k++) {
      l = line[k]
      if (cont || l ~ /^[ \t]*#/) { cont = (l ~ /\\$/); continue }
      text = text l " "
    }
    n = split(text, stmt, ";")
    for (k = 1; k <= n; k++) {
      s = stmt[k]
      if (index(s, "(") == 0) continue
      if (need_extern == "yes") {
        p = index(s, "HARK_EXTERN ")
        if (p == 0) continue
        s = substr(s, p + length("HARK_EXTERN "))
      }
      gsub(/[ \t]+/, " ", s)
      gsub(/\( /, "(", s); gsub(/ \)/, ")", s)
      sub(/^ /, "", s); sub(/ $/, "", s)
      head = substr(s, 1, index(s, "(") - 1)
      if (match(head, /[A-Za-z_][A-Za-z0-9_]*$/) == 0) continue
      name = substr(head, RSTART, RLENGTH)
      if (protos == "yes") print name "\t" s ";"
      else print name
    }
  }' | LC_ALL=C sort
