#!/usr/bin/env bash
# Compiles the CUDA variant (addon + paligemma-native) on a machine that has nvcc but no GPU, and
# checks what can be checked without one: the binaries link against CUDA, and the package's loader
# falls back to the CPU build when the CUDA one cannot load (no driver here).
#
# Some CUDA installs ship nvcc without cuBLAS (which ggml's CUDA backend needs). On Debian bookworm
# this script then takes cuBLAS headers, libraries and the driver stub from Debian's non-free
# packages (nvidia-cuda-dev, libcublas11, libcublaslt11: CUDA 11.8), with a private apt list, into
# native-build/cuda-debian/ — nothing is installed system-wide. The binaries built that way are
# for compiling and link checks; ship ones built against a complete toolkit.
#
#   scripts/cuda-compile-check.sh            (CUDA_ARCH=90 by default: the H200; "75;86;89;90" for more)
# On 2 cores the CUDA backend takes about 45 minutes to compile for one architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
arch=${CUDA_ARCH:-90}
nvcc_bin=$(command -v nvcc || true)
[ -n "$nvcc_bin" ] || { echo "cuda-compile-check: nvcc not found on PATH" >&2; exit 2; }
if [ -n "${CUDA_HOME:-}" ]; then cuda_home=$CUDA_HOME
elif [ -d /usr/local/cuda/include ]; then cuda_home=/usr/local/cuda
else cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")
fi
echo "nvcc: $("$nvcc_bin" --version | tail -2 | head -1)  (toolkit: $cuda_home)"

extra_inc=()
extra_lib=()
if [ ! -f "$cuda_home/include/cublas_v2.h" ]; then
  prefix=$root/native-build/cuda-debian
  if [ ! -f "$prefix/include/cublas_v2.h" ]; then
    echo "cuBLAS is missing from $cuda_home: taking it from Debian's non-free packages into $prefix"
    command -v apt-get >/dev/null || { echo "cuda-compile-check: no cuBLAS and no apt-get; install cuBLAS" >&2; exit 2; }
    apt_dir=$prefix/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/debs" "$prefix/include" "$prefix/lib/stubs"
    cat > "$apt_dir/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm non-free
EOF
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$apt_dir/lists" -o "APT::Sandbox::User=root")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download -qq nvidia-cuda-dev libcublas11 libcublaslt11)
    rm -rf "$apt_dir/x" && mkdir -p "$apt_dir/x"
    for d in "$apt_dir"/debs/*.deb; do dpkg -x "$d" "$apt_dir/x"; done
    cp "$apt_dir"/x/usr/include/cublas*.h "$prefix/include/"
    cp -P "$apt_dir"/x/usr/lib/x86_64-linux-gnu/libcublas*.so* "$prefix/lib/"
    cp "$apt_dir"/x/usr/lib/x86_64-linux-gnu/stubs/libcuda.so "$prefix/lib/stubs/"
    rm -rf "$apt_dir/x" "$apt_dir/debs"
  fi
  extra_inc=("$prefix/include")
  extra_lib=("$prefix/lib" "$prefix/lib/stubs")
fi

opts="GGML_CUDA=ON CMAKE_CUDA_ARCHITECTURES=$arch"
if [ ${#extra_inc[@]} -gt 0 ]; then
  # Only the cuBLAS headers are added (ggml includes them from .cu files only); the toolkit's own
  # headers stay first for everything else.
  opts+=" CMAKE_CUDA_FLAGS=-I${extra_inc[0]}"
  opts+=" CMAKE_LIBRARY_PATH=$(IFS=';'; echo "${extra_lib[*]}")"
fi
t0=$(date +%s)
# The addon goes under native-build/, not build/Release-cuda/: binaries built against a borrowed
# cuBLAS must not be what the package's loader finds later.
out=native-build/cuda/check
PALIGEMMA_GPU=cuda PALIGEMMA_CMAKE_OPTIONS="$opts" node scripts/build-native.mjs --native --out "$out"
echo "addon + native tool built with CUDA in $(( $(date +%s) - t0 )) s"

addon=$out/paligemma.node
tool=native-build/cuda/bin/paligemma-native
for f in "$addon" "$tool"; do
  [ -f "$f" ] || { echo "cuda-compile-check: $f was not built" >&2; exit 1; }
  if ldd "$f" | grep -q 'libcublas\|libcudart'; then
    echo "$f: links $(ldd "$f" | grep -o 'lib\(cublas\|cudart\|cuda\)[^ ]*' | sort -u | tr '\n' ' ')"
  else
    nm -D --defined-only "$f" 2>/dev/null | grep -q ggml_backend_cuda_init \
      && echo "$f: CUDA backend linked in statically" \
      || { echo "cuda-compile-check: $f has no CUDA backend" >&2; exit 1; }
  fi
done

# Without a driver the CUDA build cannot load; the package must fall back to its CPU build. The
# addon sits where the loader looks (build/Release-cuda/) only for this check.
if ! ldconfig -p | grep -q 'libcuda\.so\.1'; then
  if [ -e build/Release-cuda ]; then
    echo "build/Release-cuda exists already: loader check skipped" >&2
  else
    mkdir -p build/Release-cuda && cp "$addon" build/Release-cuda/
    trap 'rm -rf build/Release-cuda' EXIT
    node -e "
      const { getBinding } = require('./dist/binding');
      const b = getBinding();
      console.log('no CUDA driver here: the loader chose the', b.variant, 'build (' + b.file + ')');
      if (b.variant !== 'cpu') process.exit(1);
    "
  fi
else
  echo "a CUDA driver is present: run scripts/gpu-check.sh for parity on the GPU"
fi
