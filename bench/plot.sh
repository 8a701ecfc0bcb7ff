#!/bin/sh
# plot.sh: the benchmark figures as PNGs, with gnuplot (Debian: gnuplot-nox).
#
#   bench/plot.sh [DATADIR [OUTDIR]]       (make bench-plot: . and docs/)
#
# Reads what make bench and make bench-chat wrote in DATADIR (default .):
#   bench-signal.dat -> OUTDIR/bench-dispatch.png  ns per receiver call vs
#                       N, hark and every peer (log-log)
#                    -> OUTDIR/bench-scaling.png   hark's filtered send with
#                       10 receivers per sender, 1e2..1e6 receivers
#   bench-chat.dat   -> OUTDIR/bench-chat.png      delivered messages/s per
#                       server and case
# A missing data file is reported and its figure skipped.
set -eu

in=${1:-.}
out=${2:-docs}
command -v gnuplot >/dev/null 2>&1 || {
  echo "plot.sh: gnuplot is not installed (bench/install-peers.sh)" >&2
  exit 2
}
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hark-plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
made=0

sig=$in/bench-signal.dat
if [ -f "$sig" ]; then
  # (a) one file per impl: N ns, from the send cases
  impls=$(awk '$1 ~ /^send/ { print $3 }' "$sig" | awk '!seen[$0]++')
  plot=
  for i in $impls; do
    awk -v i="$i" '$1 ~ /^send/ && $3 == i { print $2, $4 }' "$sig" |
      sort -n >"$tmp/send-$i"
    plot="$plot${plot:+, }'$tmp/send-$i' using 1:2 with linespoints lw 2 title '$i'"
  done
  gnuplot <<EOG
set terminal pngcairo size 900,560 font "sans,11"
set output "$out/bench-dispatch.png"
set title "Send to N receivers: ns per receiver call (lower is better)"
set xlabel "receivers connected (N)"
set ylabel "ns per receiver call"
set logscale xy
set xtics (1, 8, 64, 512)
set grid
set key outside right top
set pointsize 1.2
plot $plot
EOG
  made=$((made + 1))

  # (b) the scaling case
  awk '$1 ~ /^scale|^big$/ && $3 == "hark" { print $2, $4 }' "$sig" |
    sort -n >"$tmp/scale-hark"
  awk '$1 ~ /^scale|^big$/ && $3 == "small-sig" { print $2, $4 }' "$sig" |
    sort -n >"$tmp/scale-small"
  gnuplot <<EOG
set terminal pngcairo size 900,560 font "sans,11"
set output "$out/bench-scaling.png"
set title "Sender-filtered send, 10 receivers per sender: cost vs receivers connected"
set xlabel "receivers connected to the signal (10 per sender)"
set ylabel "ns per receiver call"
set logscale x
set format x "10^{%L}"
set yrange [0:*]
set grid
set key top left
plot '$tmp/scale-hark' using 1:2 with linespoints lw 2 pt 7 title 'hark: one signal, all receivers', \
     '$tmp/scale-small' using 1:2 with linespoints lw 2 pt 5 title 'a signal holding only the 10 matching receivers'
EOG
  made=$((made + 1))
else
  echo "plot.sh: no $sig (make bench): dispatch and scaling figures skipped" >&2
fi

chat=$in/bench-chat.dat
if [ -f "$chat" ]; then
  # (c) rows: case, columns: servers (in order of appearance), msgs/s in M
  awk '!/^#/ && $2 !~ /^paced/ {
         if (!($1 in si)) { si[$1] = ++ns; sn[ns] = $1 }
         if (!($2 in ci)) { ci[$2] = ++nc; cn[nc] = $2 }
         v[$2, $1] = $3 / 1e6 }
       END {
         printf "case"; for (s = 1; s <= ns; s++) printf " %s", sn[s]; print ""
         for (c = 1; c <= nc; c++) {
           printf "%s", cn[c]
           for (s = 1; s <= ns; s++)
             printf " %s", ((cn[c], sn[s]) in v) ? v[cn[c], sn[s]] : "0"
           print ""
         } }' "$chat" >"$tmp/chat"
  ncols=$(head -1 "$tmp/chat" | awk '{ print NF }')
  gnuplot <<EOG
set terminal pngcairo size 900,560 font "sans,11"
set output "$out/bench-chat.png"
set title "Chat fan-out under hark-chatload: delivered messages/s (higher is better)"
set ylabel "million messages delivered per second"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set bmargin 5
set xrange [-0.6:2.6]
set grid ytics
set yrange [0:*]
set key top right
set xtics ("1 ch x 100 clients\n10 x 1,000 msgs" 0, "1 ch x 1,000 clients\n10 x 200 msgs" 1, "100 ch x 10 clients\neveryone sends 20" 2)
plot for [c=2:$ncols] '$tmp/chat' using c title columnheader(c)
EOG
  made=$((made + 1))
else
  echo "plot.sh: no $chat (make bench-chat): chat figure skipped" >&2
fi
echo "plot.sh: $made figure(s) in $out"
