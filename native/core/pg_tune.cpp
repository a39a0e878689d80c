#include "pg_tune.h"
#include "pg_backend.h"
#include "pg_gemm_q4.h"

#include "ggml-alloc.h"
#include "ggml-impl.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

bool pg_tune_begin(pg_tune_graph & g, size_t n_tensors) {
    g.ctx.reset(ggml_init({ ggml_tensor_overhead() * n_tensors + ggml_graph_overhead(), nullptr, true }));
    return g.ctx != nullptr;
}

void pg_tune_input(ggml_tensor * t) {
    ggml_set_input(t);
    ggml_set_output(t);
}

bool pg_tune_finish(pg_tune_graph & g, ggml_backend_t backend, ggml_tensor * out) {
    g.graph = ggml_new_graph(g.ctx.get());
    ggml_build_forward_expand(g.graph, out);
    g.alloc.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend)));
    return g.alloc && ggml_gallocr_alloc_graph(g.alloc.get(), g.graph);
}

int pg_tune_race(ggml_backend_t backend, pg_tune_graph * graphs, int count, int rounds, double * us) {
    std::vector<double> warm(count);
    // In turn, so that a passing disturbance does not favour one; round 0 warms up, and a candidate
    // already twice as slow as the best there is not timed further (it would only cost load time).
    for (int round = 0; round <= rounds; ++round) {
        const double best_warm = round > 0 ? *std::min_element(warm.begin(), warm.end()) : 0;
        for (int i = 0; i < count; ++i) {
            if (round > 0 && warm[i] > 2 * best_warm) continue;
            const int64_t t0 = ggml_time_us();
            if (ggml_backend_graph_compute(backend, graphs[i].graph) != GGML_STATUS_SUCCESS) return -1;
            const double t = (double) (ggml_time_us() - t0);
            if (round == 0)
                warm[i] = us[i] = t;
            else
                us[i] = round == 1 ? t : std::min(us[i], t);
        }
    }
    return (int) (std::min_element(us, us + count) - us);
}

namespace {

std::mutex                 g_mu;
std::map<std::string, int> g_choices;

}  // namespace

int pg_tune_recall(const std::string & key) {
    std::lock_guard<std::mutex> lock(g_mu);
    auto                        it = g_choices.find(key);
    return it == g_choices.end() ? -1 : it->second;
}

void pg_tune_remember(const std::string & key, int choice) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_choices[key] = choice;
}

namespace {

std::vector<float> tune_values(size_t n, uint32_t seed) {
    std::vector<float> v(n);
    uint32_t           x = seed * 2654435761u + 1;
    for (float & f : v) {
        x = x * 1664525u + 1013904223u;
        f = (float) (x >> 8) / (float) (1u << 23) - 1.0f;
    }
    return v;
}

}  // namespace

void pg_tune_fill(ggml_tensor * t, uint32_t seed) {
    const std::vector<float> v = tune_values((size_t) ggml_nelements(t), seed);
    ggml_backend_tensor_set(t, v.data(), 0, v.size() * sizeof(float));
}

namespace {

// Sum of squared differences of two f32 outputs of one shape, and of the first's squares.
void squared_difference(const ggml_tensor * a, const ggml_tensor * b, double & num, double & den) {
    std::vector<float> ya((size_t) ggml_nelements(a)), yb(ya.size());
    ggml_backend_tensor_get(a, ya.data(), 0, ya.size() * sizeof(float));
    ggml_backend_tensor_get(b, yb.data(), 0, yb.size() * sizeof(float));
    for (size_t i = 0; i < ya.size(); ++i) {
        num += (double) (ya[i] - yb[i]) * (ya[i] - yb[i]);
        den += (double) ya[i] * ya[i];
    }
}

}  // namespace

bool pg_tune_int8_faster(ggml_backend_t cpu, ggml_type type, int64_t k, int64_t n, int64_t m, int n_threads, pg_q8_isa isa, double slack) {
    const bool        q4  = type == GGML_TYPE_Q4_0;
    const std::string key = std::string(ggml_type_name(type)) + " matmul " + std::to_string(k) + "x" + std::to_string(n) + "x" + std::to_string(m) +
                            "@" + std::to_string(n_threads) + "/" + std::to_string(isa) + "~" + std::to_string(slack);
    const int known = pg_tune_recall(key);
    if (known >= 0) return known == 1;
    if (k < 32 || k % 32 != 0 || n < 16 || n % 16 != 0 || m < 1 || !pg_q8_gemm_available(isa)) return false;
    if (q4 ? !(isa == PG_Q8_AVX512_VNNI && pg_q4_gemm_available()) : type != GGML_TYPE_Q8_0) return false;
    // The same random weights in ggml's layout and in ours (blocks written directly: a large weight
    // quantized from floats would cost more than the race); ggml's q4_0 in its repacking buffer, as
    // llama.cpp loads it.
    std::vector<uint8_t> wq(ggml_row_size(type, k) * n);
    const size_t         block = q4 ? 18 : 34;
    uint32_t             r     = 12345;
    for (size_t b = 0; b < wq.size() / block; ++b) {
        uint8_t *         p = wq.data() + b * block;
        const ggml_fp16_t d = ggml_fp32_to_fp16(q4 ? 1.0f / 8.0f : 1.0f / 127.0f);
        memcpy(p, &d, sizeof d);
        for (size_t i = 2; i < block; ++i) {
            r    = r * 1664525u + 1013904223u;
            p[i] = q4 ? (uint8_t) (r >> 24) : (uint8_t) (int8_t) ((int) (r >> 24) % 255 - 127);
        }
    }
    ggml_backend_buffer_type_t repack = q4 ? pg_cpu_repack_buffer_type() : nullptr;
    ggml_context_ptr           wctx(ggml_init({ ggml_tensor_overhead() * 2, nullptr, true }));
    ggml_backend_buffer_ptr    wbuf;
    pg_tune_graph              graphs[2];
    ggml_tensor *              w[2];
    ggml_tensor *              y[2];
    for (int i = 0; i < 2; ++i) {
        if (!pg_tune_begin(graphs[i], 16)) return false;
        ggml_context * ctx   = graphs[i].ctx.get();
        const size_t   panel = q4 ? pg_q4_packed_panel_bytes(k) : pg_q8_packed_panel_bytes(k);
        w[i] = i == 0 ? ggml_new_tensor_2d(repack ? wctx.get() : ctx, type, k, n) : ggml_new_tensor_2d(ctx, GGML_TYPE_I8, (int64_t) panel, n / 16);
        if (i == 0 && repack) {
            wbuf.reset(ggml_backend_alloc_ctx_tensors_from_buft(wctx.get(), repack));
            if (!wbuf) return false;
        } else {
            pg_tune_input(w[i]);
        }
        ggml_tensor * x    = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
        ggml_tensor * bias = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
        pg_tune_input(x);
        pg_tune_input(bias);
        y[i] = i == 0 ? ggml_add(ctx, ggml_mul_mat(ctx, w[i], x), bias)
               : q4   ? ggml_add(ctx, pg_q4_linear(ctx, w[i], pg_q4_quantize(ctx, x)), bias)
                      : pg_q8_linear(ctx, &w[i], &bias, 1, pg_q8_quantize(ctx, x, isa), PG_Q8_BIAS, nullptr, isa);
        if (!pg_tune_finish(graphs[i], cpu, y[i])) return false;
        pg_tune_fill(x, 7);
        pg_tune_fill(bias, 8);
    }
    ggml_backend_tensor_set(w[0], wq.data(), 0, wq.size());
    std::vector<uint8_t> packed(ggml_nbytes(w[1]));
    if (q4)
        pg_q4_pack(wq.data(), n, k, packed.data());
    else
        pg_q8_pack(wq.data(), n, k, packed.data());
    ggml_backend_tensor_set(w[1], packed.data(), 0, packed.size());
    double    us[2];
    const int faster = pg_tune_race(cpu, graphs, 2, 3, us);
    // Both quantize the activations to 8 bits per block of 32: they agree to the rounding of its scales.
    double num = 0, den = 0;
    squared_difference(y[0], y[1], num, den);
    const bool ours = faster >= 0 && us[1] <= slack * us[0] && den > 0 && num / den < 1e-6;
    // PALIGEMMA_LOG=info shows what the choice rested on.
    GGML_LOG_INFO("paligemma: %s race: ggml %.0f us, ours %.0f us, rel. error %.2g: %s\n", key.c_str(), us[0], us[1], den > 0 ? num / den : -1.0,
                  ours ? "ours" : "ggml's");
    pg_tune_remember(key, ours ? 1 : 0);
    return ours;
}

int pg_tune_f16_fastest(ggml_backend_t cpu, int64_t k, int64_t n, int64_t m, int n_threads, const pg_f16_isa * forms, int count) {
    std::string key = "f16 matmul " + std::to_string(k) + "x" + std::to_string(n) + "x" + std::to_string(m) + "@" + std::to_string(n_threads) + "/";
    for (int f = 0; f < count; ++f) key += std::to_string(forms[f]);
    const int known = pg_tune_recall(key);
    if (known >= 0) return known - 1;
    if (k < 1 || n < 16 || n % 16 != 0 || m < 1 || count < 1 || count > 3) return -1;
    for (int f = 0; f < count; ++f) {
        if (!pg_f16_gemm_available(forms[f])) return -1;
    }
    std::vector<float>       wf = tune_values((size_t) (k * n), 9);
    std::vector<ggml_fp16_t> wh(wf.size());
    for (float & f : wf) f *= 0.05f;
    ggml_fp32_to_fp16_row(wf.data(), wh.data(), (int64_t) wf.size());
    // Graph 0 is ggml's product, graph 1 + f our form f.
    pg_tune_graph graphs[4];
    ggml_tensor * y[4];
    for (int i = 0; i <= count; ++i) {
        if (!pg_tune_begin(graphs[i], 16)) return -1;
        ggml_context * ctx   = graphs[i].ctx.get();
        const int64_t  elems = i == 0 ? 0 : pg_f16_panel_elems(k, forms[i - 1]);
        ggml_tensor *  w     = i == 0 ? ggml_new_tensor_2d(ctx, GGML_TYPE_F16, k, n) : ggml_new_tensor_2d(ctx, GGML_TYPE_I16, elems, n / 16);
        ggml_tensor *  x     = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
        ggml_tensor *  bias  = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
        for (ggml_tensor * t : { w, x, bias }) pg_tune_input(t);
        y[i] = i == 0 ? ggml_add(ctx, ggml_mul_mat(ctx, w, x), bias) : pg_f16_linear(ctx, w, bias, x, nullptr, forms[i - 1]);
        if (!pg_tune_finish(graphs[i], cpu, y[i])) return -1;
        pg_tune_fill(x, 7);
        pg_tune_fill(bias, 8);
        if (i == 0) {
            ggml_backend_tensor_set(w, wh.data(), 0, ggml_nbytes(w));
        } else {
            std::vector<int16_t> packed((size_t) (elems * (n / 16)));
            pg_f16_pack(wh.data(), n, k, forms[i - 1], packed.data());
            ggml_backend_tensor_set(w, packed.data(), 0, ggml_nbytes(w));
        }
    }
    double us[4];
    if (pg_tune_race(cpu, graphs, count + 1, 3, us) < 0) return -1;
    // ggml rounds the activations to f16, our f16 forms keep them in f32 and the int16 one rounds
    // both sides to 14 bits: each agrees with ggml to about that rounding. The fastest form that
    // agrees and beats ggml's is kept.
    int         choice = -1;
    std::string times  = "ggml " + std::to_string((long) us[0]) + " us";
    for (int f = 0; f < count; ++f) {
        double num = 0, den = 0;
        squared_difference(y[0], y[f + 1], num, den);
        const bool agrees = den > 0 && num / den < 1e-5;
        if (agrees && us[f + 1] < us[0] && (choice < 0 || us[f + 1] < us[choice + 1])) choice = f;
        char line[96];
        snprintf(line, sizeof line, ", %s %ld us (rel. error %.2g)", pg_f16_isa_name(forms[f]), (long) us[f + 1], den > 0 ? num / den : -1.0);
        times += line;
    }
    GGML_LOG_INFO("paligemma: %s race: %s: %s\n", key.c_str(), times.c_str(), choice >= 0 ? pg_f16_isa_name(forms[choice]) : "ggml's");
    pg_tune_remember(key, choice + 1);
    return choice;
}
