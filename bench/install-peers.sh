#!/bin/sh
# install-peers.sh: the benchmark peers and tools, from Debian packages.
# Run as root (or through sudo) on Debian or Ubuntu; then re-run configure
# so that it finds the peers:
#
#   sudo bench/install-peers.sh && cd _build && ../configure && make bench
#
#   libglib2.0-dev     GObject signals            (make bench)
#   libsigc++-3.0-dev  libsigc++ 3                (make bench)
#   libboost-dev       Boost.Signals2             (make bench)
#   valgrind           instruction counts         (BENCH_FLAGS=--callgrind)
#   gnuplot            the PNGs under docs/       (make bench-plot)
#   ngircd inspircd    IRC servers                (make bench-chat)
#   redis-server       Redis pub/sub              (make bench-chat)
#
# Other processes may hold the dpkg lock: wait for it up to 120 s.
set -eu

pkgs="libglib2.0-dev libsigc++-3.0-dev libboost-dev valgrind gnuplot-nox \
ngircd inspircd redis-server"

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=120 update -q
# The daemons must not start as system services: make bench-chat starts
# its own on loopback ports. policy-rc.d (101: action forbidden) keeps
# their postinst from starting them; the previous one, if any, is restored.
policy=/usr/sbin/policy-rc.d
saved=
if [ -e "$policy" ]; then
  saved=$(mktemp)
  $SUDO cp "$policy" "$saved"
fi
restore() {
  if [ -n "$saved" ]; then
    $SUDO cp "$saved" "$policy"
    rm -f "$saved"
  else
    $SUDO rm -f "$policy"
  fi
}
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
$SUDO chmod 755 "$policy"
# shellcheck disable=SC2086
$SUDO apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends $pkgs
echo "install-peers.sh: installed $pkgs"
