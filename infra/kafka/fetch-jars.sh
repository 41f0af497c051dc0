#!/usr/bin/env bash
# Assemble the Apache Kafka broker's jars from Maven Central into LIBS_DIR (once; later calls return at once).
# Usage: fetch-jars.sh LIBS_DIR
# LIBS_DIR is created here and only here: a folder already there that is not a finished jar cache (the working
# directory through a blank setting, a user's folder) is refused, never replaced.
set -euo pipefail
libs=${1:?usage: fetch-jars.sh LIBS_DIR}
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$libs/.complete" ] && exit 0
if [ -e "$libs" ] && [ -n "$(ls -A "$libs" 2>/dev/null || echo not-a-folder)" ]; then
  echo "$libs is there and is not a Kafka jar cache; refusing to replace it: name an empty or new folder" >&2
  exit 2
fi
command -v mvn >/dev/null || { echo "mvn not found: install Maven or use the Tansu broker" >&2; exit 127; }
tmp="$libs.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp"
touch "$tmp/.complete"  # before the rename: a LIBS_DIR without it was never ours
# rename(2) of a whole folder: a half-copied one is never taken for a complete one. It replaces an empty folder and
# fails on anything else, so a fetch running beside this one that finished first is kept (and ours dropped).
mv -T "$tmp" "$libs" 2>/dev/null || [ -f "$libs/.complete" ] || { echo "could not move the jars to $libs" >&2; exit 1; }
