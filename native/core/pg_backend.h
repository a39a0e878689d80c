// Process-wide ggml/llama.cpp initialisation, and the CPU backend's settings without linking it:
// in a portable build the CPU backend is one of several libraries, chosen for this CPU at load.
#pragma once
#include "ggml-backend.h"

#include <mutex>
#include <string>

// Loads ggml's backends (portable builds: the best CPU variant for this CPU and any GPU backend
// beside our binary), initialises llama.cpp and our log routing, once per process.
void pg_backend_init_once();

// Which CPU backend runs: "built in" for a build with one compiled-in CPU backend, otherwise the
// variant's name ("haswell", "zen4", ...), or "" when none could be loaded.
const std::string & pg_cpu_backend_variant();

// Whether our own CPU kernels may use `feature` ("AVX512", "AVX2", ...; ggml's names): always, unless
// PALIGEMMA_CPU_VARIANT chose a ggml CPU library, and then only what that library reports, so that
// the whole process runs as a CPU of that kind would. The CPU itself is checked by the caller.
bool pg_cpu_variant_has(const char * feature);
// AVX2 + FMA + F16C on this CPU and in the loaded CPU library: what our 256-bit product kernels need.
bool pg_cpu_has_avx2_fma_f16c();

// Non-empty when PALIGEMMA_CPU_VARIANT names a CPU library that is missing or does not run here
// (ggml then falls back to a CPU backend of its own choosing, which is not what was asked).
const std::string & pg_forced_variant_problem();

// Where a portable build looked for its backend libraries ("" in other builds).
const std::string & pg_backend_dir();

// Why there is no CPU device, for an error message that says where to look.
std::string pg_no_cpu_backend_message();

// Held while ggml's device registry changes after start-up (our text-matmul device registers at the
// first text load, on the compute thread) and while code off that thread walks it (system info):
// ggml's registry is a plain vector.
std::mutex & pg_backend_registry_mutex();

// The CPU backend's thread count and abort callback (no-ops for other backends).
void pg_backend_set_threads(ggml_backend_t backend, int n_threads);
void pg_backend_set_abort_callback(ggml_backend_t backend, ggml_abort_callback cb, void * data);

// The CPU backend's extra buffer type that repacks quantized weights for its matrix kernels (where
// llama.cpp puts q4_0 weights on the CPU), or nullptr.
ggml_backend_buffer_type_t pg_cpu_repack_buffer_type();
