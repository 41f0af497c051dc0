#!/usr/bin/env bash
# Assemble the Apache Kafka broker's jars from Maven Central into LIBS_DIR (once; later calls return at once).
# Usage: fetch-jars.sh LIBS_DIR
set -euo pipefail
libs=${1:?usage: fetch-jars.sh LIBS_DIR}
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$libs/.complete" ] && exit 0
command -v mvn >/dev/null || { echo "mvn not found: install Maven or use the Tansu broker" >&2; exit 127; }
tmp="$libs.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp"
rm -rf "$libs"
mv "$tmp" "$libs"   # atomic, so a half-copied folder is never taken for a complete one
touch "$libs/.complete"
