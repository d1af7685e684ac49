#!/usr/bin/env bash
# Install the open-licence emoji art sources that `t2i data emoji` renders, into .emoji_sources/
# (project-local, gitignored). Idempotent: a second run with everything present does nothing.
#   npm:    Twemoji, Fluent flat/colour/3D, OpenMoji (SVG/WebP) + emojibase-data, emojilib (names)
#   Debian: ruby-gemojione (EmojiOne 2 art), fetched with apt-get download + dpkg-deb -x, no install
# About 270 MB unpacked; @iconify-json/fluent-emoji alone is ~100 MB.
# Usage: bash scripts/install-emoji-sources.sh [DIR]      (default DIR: .emoji_sources)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.emoji_sources}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

# Pinned so that captions, keys and pixel checks stay reproducible across machines.
npm_pkgs=(
  "@iconify-json/twemoji@1.2.5"
  "@iconify-json/fluent-emoji-flat@1.2.6"
  "@iconify-json/fluent-emoji@1.2.7"
  "@lobehub/fluent-emoji-3d@1.1.0"
  "openmoji@17.0.0"
  "emojibase-data@17.0.0"
  "emojilib@4.0.3"
)

npm_missing=()
for spec in "${npm_pkgs[@]}"; do
  name="${spec%@*}"
  version="${spec##*@}"
  pj="$dest/node_modules/$name/package.json"
  if [ ! -f "$pj" ] || ! grep -q "\"version\": *\"$version\"" "$pj"; then npm_missing+=("$spec"); fi
done
if [ "${#npm_missing[@]}" -gt 0 ]; then
  if command -v npm >/dev/null; then
    [ -f "$dest/package.json" ] || echo '{"name": "t2i-emoji-sources", "private": true}' >"$dest/package.json"
    echo "emoji sources: npm install ${npm_missing[*]}"
    # --ignore-scripts: @lobehub/fluent-emoji-3d has a postinstall that would download more.
    (cd "$dest" && npm install --ignore-scripts --no-audit --no-fund --no-save --silent \
      "${npm_pkgs[@]}" 2>&1 | grep -v 'Unknown user config' || true)
  else
    echo "emoji sources: npm not found; skipping ${npm_missing[*]} (apt-get install npm)" >&2
  fi
fi

gem_dir="$dest/gemojione"
if [ ! -f "$gem_dir/config/index.json" ]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "emoji sources: apt-get download ruby-gemojione"
    tmp="$(mktemp -d)"
    chmod 777 "$tmp"   # apt's _apt user writes the .deb here
    (cd "$tmp" && apt-get download -qq ruby-gemojione 2>/dev/null ||
      { apt-get update -qq && apt-get download -qq ruby-gemojione; })
    dpkg-deb -x "$tmp"/ruby-gemojione_*.deb "$tmp/x"
    rm -rf "$gem_dir"
    mv "$tmp"/x/usr/share/rubygems-integration/all/gems/gemojione-* "$gem_dir"
    cp "$tmp/x/usr/share/doc/ruby-gemojione/copyright" "$gem_dir/COPYRIGHT"
    rm -rf "$tmp"
  else
    echo "emoji sources: skipping EmojiOne (needs root and apt-get: apt-get download ruby-gemojione)" >&2
  fi
fi
echo "emoji sources in $dest ($(du -sh "$dest" | cut -f1))"
