#!/usr/bin/env bash
# Builds crates/duplex-hub/web/editor.js, the bundle of the /editor page, from web-src/editor/
# (CodeMirror 6, yjs, y-websocket and y-codemirror.next, versions pinned in
# web-src/editor/package-lock.json) with esbuild: one minified ES module,
# committed, so `duplex serve` needs nothing beside its binary at run time.
#
# To rebuild after changing web-src/editor/main.js or the pinned versions:
#
#   scripts/build-editor.sh          # npm ci (first time), then esbuild
#   git add crates/duplex-hub/web/editor.js   # and rebuild duplex (include_str!)
#
# Needs node and npm, and the npm registry the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=web-src/editor
if [[ ! -d "$dir/node_modules/esbuild" ]] || [[ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
"$dir/node_modules/.bin/esbuild" "$dir/main.js" \
    --bundle --minify --format=esm --target=es2020 --legal-comments=none \
    --banner:js="// duplex editor bundle: built by scripts/build-editor.sh from web-src/editor/ (CodeMirror 6, yjs, y-websocket, y-codemirror.next; MIT licensed). Do not edit." \
    --outfile=crates/duplex-hub/web/editor.js
printf 'build-editor: crates/duplex-hub/web/editor.js, %s bytes\n' "$(wc -c <crates/duplex-hub/web/editor.js)"
