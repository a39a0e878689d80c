// What our x86 kernel files share: the intrinsics and the AVX-512 VNNI target attribute, where the
// compiler has them (PG_X86_KERNELS), with GCC 12's false warnings on its own AVX-512 intrinsics
// (their _mm512_undefined operands, "(maybe) uninitialized") silenced for the including file.
#pragma once
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PG_X86_KERNELS 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define PG_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define PG_X86_KERNELS 0
#endif
