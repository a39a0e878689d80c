// Choosing between kernels by measuring them on the machine at hand: the same work built two (or
// more) ways as ggml graphs, timed alternately, the fastest kept. Defaults tuned on one CPU kind are wrong
// on another (the vision tower's attention kernels trade places by 1.6-3x between two EPYCs).
#pragma once
#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "pg_gemm_f16.h"
#include "pg_gemm_q8.h"

#include <string>

// One way of doing the work: its graph, allocated in the backend's default buffer type.
struct pg_tune_graph {
    ggml_context_ptr ctx;
    ggml_cgraph *    graph = nullptr;
    ggml_gallocr_ptr alloc;
};

// Context for building a candidate graph of up to `n_tensors` tensors.
bool pg_tune_begin(pg_tune_graph & g, size_t n_tensors);
// An input of a candidate graph: allocated for the whole graph (the allocator would otherwise reuse
// its memory once its last reader has run, and the next run would read what was written there).
void pg_tune_input(ggml_tensor * t);

// Builds the graph up to `out` and allocates it; false when the backend cannot.
bool pg_tune_finish(pg_tune_graph & g, ggml_backend_t backend, ggml_tensor * out);

// Runs the graphs in turn (a warm-up round, then `rounds` timed ones, skipping a graph already
// twice as slow as the best when warm) and returns the index of the fastest by their best times
// (written to us[i]), or -1 when one fails to compute.
int pg_tune_race(ggml_backend_t backend, pg_tune_graph * graphs, int count, int rounds, double * us);

// A choice remembered for this process under `key` (the shape, thread count, ...): -1 when none.
int  pg_tune_recall(const std::string & key);
void pg_tune_remember(const std::string & key, int choice);

// Deterministic values in [-1, 1) for candidate inputs.
void pg_tune_fill(ggml_tensor * t, uint32_t seed);

// Whether our int8 product (pg_gemm_q8.h for q8_0 in form `isa`, pg_gemm_q4.h for q4_0) beats ggml's
// on this machine for an n x k weight of `type` times m activation rows, on `cpu` (a CPU backend; the
// answer is remembered per type, shape, thread count and form). Both run the same random weights and must agree.
// slack: ours counts as faster up to that ratio of ggml's time (1: strictly faster).
bool pg_tune_int8_faster(ggml_backend_t cpu, ggml_type type, int64_t k, int64_t n, int64_t m, int n_threads, pg_q8_isa isa, double slack = 1.0);

// Which of our f16 products (pg_gemm_f16.h, `count` forms, up to 3) is fastest on this machine for an
// n x k f16 weight times m activation rows, if it beats ggml's and agrees with it: its index in
// `forms`, or -1 for ggml's (remembered per shape, thread count and forms).
int pg_tune_f16_fastest(ggml_backend_t cpu, int64_t k, int64_t n, int64_t m, int n_threads, const pg_f16_isa * forms, int count);
