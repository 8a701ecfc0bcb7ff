#!/bin/sh
# Prints the public functions that a header declares (those marked
# HARK_EXTERN), one a line, sorted: the list that the symbol and man page
# tests hold the library and the pages to.
#   api-functions.sh HEADER                 names
#   api-functions.sh --prototypes HEADER    name, a tab, the prototype with
#                                           its white space collapsed
# The header is read as text, not compiled: comments and preprocessor
# lines go, then the text is cut at every ';' and a statement with
# HARK_EXTERN and a '(' declares the function whose name stands just
# before its first '('.
protos=no
if [ "$1" = --prototypes ]; then protos=yes; shift; fi
[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 [--prototypes] HEADER" >&2; exit 2; }

awk -v protos="$protos" '
  { text = text $0 "\n" }
  END {
    # drop /* */ comments (the header has no // ones, nor "/*" in strings)
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
      p = index(s, "HARK_EXTERN ")
      if (p == 0 || index(s, "(") == 0) continue
      s = substr(s, p + length("HARK_EXTERN "))
      gsub(/[ \t]+/, " ", s)
      gsub(/\( /, "(", s); gsub(/ \)/, ")", s)
      sub(/^ /, "", s); sub(/ $/, "", s)
      head = substr(s, 1, index(s, "(") - 1)
      if (match(head, /[A-Za-z_][A-Za-z0-9_]*$/) == 0) continue
      name = substr(head, RSTART, RLENGTH)
      if (protos == "yes") print name "\t" s ";"
      else print name
    }
  }' "$1" | LC_ALL=C sort
