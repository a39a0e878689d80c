#include "pg_tune.h"

#include "ggml-alloc.h"

#include <algorithm>
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

void pg_tune_fill(ggml_tensor * t, uint32_t seed) {
    std::vector<float> v((size_t) ggml_nelements(t));
    uint32_t           x = seed * 2654435761u + 1;
    for (float & f : v) {
        x = x * 1664525u + 1013904223u;
        f = (float) (x >> 8) / (float) (1u << 23) - 1.0f;
    }
    ggml_backend_tensor_set(t, v.data(), 0, v.size() * sizeof(float));
}
