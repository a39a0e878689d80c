#!/usr/bin/env bash
# libFuzzer over the GGUF reading/validation path, the image decoding path, the LoRA adapter loader
# and the mask decoder's input, bounded in time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]     (targets: gguf image adapter mask; default all)
# Needs clang (Debian: apt-get install clang). Crashes land in native-build/fuzz/artifacts/; turn each
# into a regression test (test/hostile.test.ts, test/model.test.ts) before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift $(($# > 0 ? 1 : 0))
if [ $# -gt 0 ]; then targets=("$@"); else targets=(gguf image adapter mask); fi
for t in "${targets[@]}"; do
  case $t in gguf | image | adapter | mask) ;; *) echo "fuzz: unknown target '$t' (gguf, image, adapter, mask)"; exit 2 ;; esac
done
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)"; exit 2; }
llama=$(node scripts/llama-source.mjs 2>/dev/null || echo "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR when Node is absent}")
build=native-build/fuzz
flags="-fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer -g"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DLLAMA_CPP_DIR="$llama" -DPG_BUILD_ADDON=OFF -DPG_BUILD_TOOL=OFF -DPG_BUILD_FUZZ=ON -DGGML_OPENMP=OFF \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address" >/dev/null
cmake --build "$build" --target fuzz_gguf fuzz_image fuzz_adapter fuzz_mask -j "$(nproc)"

mkdir -p "$build/corpus/gguf" "$build/corpus/image" "$build/artifacts"
for f in test/fixtures/tiny-v*/reference/*.png; do cp "$f" "$build/corpus/image/$(basename "$(dirname "$(dirname "$f")")")-$(basename "$f")"; done
if [ -z "$(ls "$build/corpus/gguf")" ]; then
  node -e "require('./dist/index.js').convert({ input: 'test/fixtures/tiny-v1', outDir: '$build/corpus/gguf', type: 'q8_0', visionType: 'f16' })"
fi
# The model the adapter and mask targets run against (tiny v2 with its mask decoder), and their seeds:
# the fixture adapter's two files, and the committed mask-code seeds (native/fuzz/corpus/mask).
mkdir -p "$build/model" "$build/corpus/adapter" "$build/corpus/mask"
if [ ! -f "$build/model/tiny-v2-f32.gguf" ]; then
  node -e "require('./dist/index.js').convert({ input: 'test/fixtures/tiny-v2', outDir: '$build/model', type: 'f32', segDecoder: 'test/fixtures/vae/vae.npz' })"
fi
if [ -z "$(ls "$build/corpus/adapter")" ]; then
  node -e "require('./dist/index.js').convertLora({ adapter: 'test/fixtures/tiny-v2-lora', base: '$build/model/tiny-v2-f32.gguf', outDir: '$build/corpus/adapter', type: 'f16' })"
fi
cp native/fuzz/corpus/mask/* "$build/corpus/mask/"
export PG_FUZZ_MODEL="$build/model/tiny-v2-f32.gguf" PG_FUZZ_MMPROJ="$build/model/tiny-v2-mmproj-f32.gguf"
for target in "${targets[@]}"; do
  echo "fuzz_$target: $secs s"
  "$build/fuzz_$target" -max_total_time="$secs" -max_len=$((4 << 20)) -rss_limit_mb=4096 \
    -artifact_prefix="$build/artifacts/$target-" "$build/corpus/$target"
done
echo "fuzz: no crashes"
