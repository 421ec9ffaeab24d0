#!/usr/bin/env bash
# Put the MathJax renderer the docs use into docs/assets/mathjax/ (git-ignored), from the npm registry.
#
#   bash .ci/fetch_mathjax.sh && mkdocs serve     # or mkdocs build
#
# The site then renders its formulas with no network: mkdocs.yml loads assets/mathjax/tex-svg.js, a single
# file (SVG output needs no font files). It is fetched rather than committed: 2 MB of minified third-party
# code, which npm fetches in a few seconds. The tarball's hash is checked against the one below.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.2.2
INTEGRITY="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
DEST=docs/assets/mathjax

if [ -f "$DEST/tex-svg.js" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch_mathjax.sh: npm is needed (Debian: apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=$(cd "$tmp" && npm pack --silent "mathjax@$VERSION")
actual="sha512-$(openssl dgst -sha512 -binary "$tmp/$tarball" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
  echo "fetch_mathjax.sh: mathjax@$VERSION has hash $actual, expected $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tmp/$tarball" -C "$tmp" package/es5/tex-svg.js package/LICENSE
mkdir -p "$DEST"
cp "$tmp/package/es5/tex-svg.js" "$DEST/tex-svg.js"
cp "$tmp/package/LICENSE" "$DEST/LICENSE"
echo "$VERSION" > "$DEST/VERSION"
echo "MathJax $VERSION -> $DEST/tex-svg.js"
