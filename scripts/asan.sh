#!/usr/bin/env bash
# Builds the C++ core and paligemma-native with AddressSanitizer + LeakSanitizer (no Node needed to
# run it) and drives it over good and hostile inputs. Any memory error or leak fails the script.
#   scripts/asan.sh [DIR_WITH_TINY_GGUFS]   (default: converts test/fixtures/tiny-v2 with Node)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
llama=$(node scripts/llama-source.mjs 2>/dev/null || echo "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR when Node is absent}")
build=native-build/asan
cmake -S . -B "$build" -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLAMA_CPP_DIR="$llama" -DPG_BUILD_ADDON=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
  -DCMAKE_C_FLAGS="-fsanitize=address -fno-omit-frame-pointer" -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address" >/dev/null
cmake --build "$build" --target paligemma-native -j "$(nproc)"
tool=$root/$build/bin/paligemma-native

models=${1:-}
if [ -z "$models" ]; then
  models=$(mktemp -d)
  node -e "require('./dist/index.js').convert({ input: 'test/fixtures/tiny-v2', outDir: '$models', type: 'q8_0', visionType: 'f16', segDecoder: 'test/fixtures/vae/vae.npz' }).catch((e) => { console.error(e); process.exit(1); })"
fi
model=$(ls "$models"/*-q8_0.gguf | head -1)
mmproj=$(ls "$models"/*-mmproj-*.gguf | head -1)
img=test/fixtures/tiny-v2/reference/shapes_150x200.png
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$tool" system >/dev/null
"$tool" gguf "$model" >/dev/null
"$tool" encode "$model" "$mmproj" "$img" "$work/p.f32" "$work/e.f32" --threads 2 >/dev/null
"$tool" generate "$model" "$mmproj" "$img" "caption en" 16 --logits "$work/l.f32" >/dev/null
# Hostile files must fail cleanly (exit 1), never with a sanitizer report (which aborts).
head -c 5000 "$model" >"$work/cut.gguf"
printf 'GGUF garbage' >"$work/garbage.gguf"
for f in "$work/cut.gguf" "$work/garbage.gguf" "$mmproj"; do
  set +e
  "$tool" generate "$f" "$mmproj" "$img" "x" 2 >/dev/null 2>"$work/err"
  rc=$?
  set -e
  [ "$rc" -eq 1 ] || { cat "$work/err"; echo "asan: unexpected exit $rc on $f"; exit 1; }
done
head -c 300 "$img" >"$work/cut.png"
set +e; "$tool" encode "$model" "$mmproj" "$work/cut.png" "$work/p" "$work/e" 2>/dev/null; rc=$?; set -e
[ "$rc" -eq 1 ] || { echo "asan: unexpected exit $rc on a truncated PNG"; exit 1; }
echo "asan: no memory errors or leaks"
