#!/usr/bin/env bash
# Prints the path of a Zipkin server jar (io.zipkin:zipkin-server, exec classifier) from
# Maven Central, cached outside the repository and checked against Maven Central's SHA-1.
set -euo pipefail
VERSION=${ZIPKIN_VERSION:-3.6.1}
CACHE=${SKIFF_ZIPKIN_CACHE:-$HOME/.cache/skiff/zipkin}
JAR=$CACHE/zipkin-server-$VERSION-exec.jar
URL=https://repo.maven.apache.org/maven2/io/zipkin/zipkin-server/$VERSION/zipkin-server-$VERSION-exec.jar
mkdir -p "$CACHE"
if [ ! -s "$JAR" ]; then
  echo "zipkin.sh: fetching zipkin-server $VERSION from Maven Central" >&2
  curl -sSf --retry 3 --max-time 600 -o "$JAR.part" "$URL"
  curl -sSf --retry 3 --max-time 60 -o "$JAR.sha1" "$URL.sha1"
  want=$(cut -c1-40 "$JAR.sha1")
  got=$(sha1sum "$JAR.part" | cut -c1-40)
  if [ "$want" != "$got" ]; then
    echo "zipkin.sh: SHA-1 mismatch for $URL ($got, expected $want)" >&2
    rm -f "$JAR.part"
    exit 1
  fi
  mv "$JAR.part" "$JAR"
fi
echo "$JAR"
