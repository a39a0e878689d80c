// paligemma-native: the C++ core without Node, for checks on machines that have no Node.js. It
// calls the same pg_model functions as the addon.
#include "pg_attention_cpu.h"
#include "pg_backend.h"
#include "pg_gemm_f16.h"
#include "pg_gemm_q4.h"
#include "pg_gemm_q8.h"
#include "pg_gguf.h"
#include "pg_model.h"
#include "pg_system.h"
#include "pg_tune.h"
#include "pg_x86_kernels.h"
#if PG_X86_KERNELS
#include "pg_simd_exp.h"
#endif

#include "ggml.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace {

int usage() {
    fprintf(
        stderr,
        "usage: paligemma-native system\n"
        "       paligemma-native gguf FILE\n"
        "       paligemma-native encode MODEL MMPROJ IMAGE PIXELS_OUT.f32 EMBD_OUT.f32 [options] [--reps N]\n"
        "       paligemma-native generate MODEL MMPROJ IMAGE PROMPT MAX_TOKENS [options] [--logits OUT.f32] [--force ID,ID,...] [--causal-prefix]\n"
        "       paligemma-native kernels [--threads N] [--gemma]   this CPU's peak rates, then our int8 q8_0 and f16 products against ggml's and "
        "f32, at SigLIP shapes (--gemma: Gemma-2B's linears)\n"
        "options: --gpu auto|cpu|cuda|metal|vulkan  --threads N  --f32-kv  --no-fa  --vision-attention "
        "fused|separate|tiled|tiled-avx2|int16|int16-avx2\n"
        "         --vision-matmul ggml|int8|int8-avxvnni|int8-avx2|int16-avx2 (f16 weights: ours at 512 bits for int8, 14-bit integers for "
        "int16-avx2, else f32 at 256)  --text-matmul (the same)\n"
        "         --no-repack\n");
    return 2;
}

int fail(const std::string & message) {
    fprintf(stderr, "error: %s\n", message.c_str());
    return 1;
}

bool read_file(const char * path, std::vector<uint8_t> & out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
}

bool write_f32(const char * path, const float * v, size_t n) {
    FILE * f = fopen(path, "wb");
    if (!f) return false;
    const bool ok = fwrite(v, sizeof(float), n, f) == n;
    return fclose(f) == 0 && ok;
}

// The options after a command's positional arguments.
struct tool_options {
    pg_model_params      model;
    int                  reps       = 0;
    const char *         logits_out = nullptr;
    std::vector<int32_t> forced;
    bool                 causal_prefix = false;
    bool                 gemma_shapes  = false;
};

bool parse_options(int argc, char ** argv, int first, tool_options & o) {
    for (int i = first; i < argc; ++i) {
        const char * a    = argv[i];
        const bool   more = i + 1 < argc;
        if (!strcmp(a, "--gpu") && more)
            o.model.gpu = argv[++i];
        else if (!strcmp(a, "--threads") && more)
            o.model.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--f32-kv"))
            o.model.kv_type = GGML_TYPE_F32;
        else if (!strcmp(a, "--no-fa"))
            o.model.flash_attn = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        else if (!strcmp(a, "--no-repack"))
            o.model.vision_repack = false;
        else if (!strcmp(a, "--vision-attention") && more) {
            const std::string v = argv[++i];
            if (v != "fused" && v != "separate" && v != "tiled" && v != "tiled-avx2" && v != "int16" && v != "int16-avx2") return false;
            o.model.vision_attention = v == "fused"        ? PG_VISION_ATTENTION_FUSED
                                       : v == "tiled"      ? PG_VISION_ATTENTION_TILED
                                       : v == "tiled-avx2" ? PG_VISION_ATTENTION_TILED_AVX2
                                       : v == "int16-avx2" ? PG_VISION_ATTENTION_INT16_AVX2
                                       : v == "int16"      ? PG_VISION_ATTENTION_INT16
                                                           : PG_VISION_ATTENTION_SEPARATE;
        } else if ((!strcmp(a, "--vision-matmul") || !strcmp(a, "--text-matmul")) && more) {
            const std::string v = argv[++i];
            if (v != "ggml" && v != "int8" && v != "int8-avxvnni" && v != "int8-avx2" && v != "int16-avx2") return false;
            const pg_vision_matmul mm                                   = v == "int8"           ? PG_VISION_MATMUL_INT8
                                                                          : v == "int8-avxvnni" ? PG_VISION_MATMUL_INT8_AVX_VNNI
                                                                          : v == "int8-avx2"    ? PG_VISION_MATMUL_INT8_AVX2
                                                                          : v == "int16-avx2"   ? PG_VISION_MATMUL_INT16_AVX2
                                                                                                : PG_VISION_MATMUL_GGML;
            (a[2] == 'v' ? o.model.vision_matmul : o.model.text_matmul) = mm;
        } else if (!strcmp(a, "--reps") && more)
            o.reps = atoi(argv[++i]);
        else if (!strcmp(a, "--causal-prefix"))
            o.causal_prefix = true;
        else if (!strcmp(a, "--gemma"))
            o.gemma_shapes = true;
        else if (!strcmp(a, "--logits") && more)
            o.logits_out = argv[++i];
        else if (!strcmp(a, "--force") && more) {
            for (char * tok = strtok(argv[++i], ","); tok; tok = strtok(nullptr, ",")) o.forced.push_back(atoi(tok));
        } else
            return false;
    }
    return true;
}

int cmd_system() {
    pg_system_info info = pg_get_system_info();
    printf("llama.cpp commit: %s\n", info.llama_cpp_commit.c_str());
    printf("cpu backend: %s\n", info.cpu_variant.c_str());
    printf("threads: %d default (physical cores), %d logical\n", info.default_threads, info.logical_cpus);
    for (const auto & d : info.devices) {
        printf("device %s (%s, %s): %s, %.1f/%.1f GiB free\n", d.name.c_str(), d.type.c_str(), d.backend.c_str(), d.description.c_str(),
               d.memory_free / 1073741824.0, d.memory_total / 1073741824.0);
    }
    printf("cpu features:");
    for (const auto & f : info.cpu_features) printf(" %s=%s", f.name.c_str(), f.value.c_str());
    printf("\n");
    return 0;
}

int cmd_gguf(const char * path) {
    pg_gguf_file f;
    pg_error     err;
    if (!pg_gguf_open(path, f, err) || !pg_gguf_check_data_bounds(f, err)) return fail(err.message);
    const gguf_context * ctx = f.ctx.get();
    printf("version %u, %lld keys, %lld tensors, data at %zu\n", gguf_get_version(ctx), (long long) gguf_get_n_kv(ctx),
           (long long) gguf_get_n_tensors(ctx), gguf_get_data_offset(ctx));
    for (int64_t i = 0; i < gguf_get_n_kv(ctx); ++i) {
        gguf_type t = gguf_get_kv_type(ctx, i);
        printf("  %-48s %s", gguf_get_key(ctx, i), gguf_type_name(t));
        if (t == GGUF_TYPE_STRING) printf(" = %.60s", gguf_get_val_str(ctx, i));
        if (t == GGUF_TYPE_ARRAY) printf("[%zu] of %s", gguf_get_arr_n(ctx, i), gguf_type_name(gguf_get_arr_type(ctx, i)));
        printf("\n");
    }
    for (int64_t i = 0; i < gguf_get_n_tensors(ctx); ++i) {
        const int64_t * ne = gguf_get_tensor_ne(ctx, i);
        printf("  %-48s %-6s [%lld, %lld, %lld, %lld] @%zu\n", gguf_get_tensor_name(ctx, i), ggml_type_name(gguf_get_tensor_type(ctx, i)),
               (long long) ne[0], (long long) ne[1], (long long) ne[2], (long long) ne[3], gguf_get_tensor_offset(ctx, i));
    }
    return 0;
}

// Loads the pair and reads the image file into `bytes`, described by `image`.
int load(const char * model, const char * mmproj, const char * image_path, tool_options & o, pg_model_ptr & m, std::vector<uint8_t> & bytes,
         pg_image_input & image) {
    o.model.model_path        = model;
    o.model.mmproj_path       = mmproj;
    o.model.image_cache_bytes = 0;  // every encode below runs the tower
    pg_error err;
    if (!pg_model_load(o.model, nullptr, m, err)) return fail(err.message);
    if (!read_file(image_path, bytes)) return fail(std::string("cannot read ") + image_path);
    image.kind  = PG_IMAGE_ENCODED;
    image.data  = bytes.data();
    image.size  = bytes.size();
    image.label = image_path;
    return 0;
}

int cmd_encode(int argc, char ** argv) {
    tool_options o;
    if (!parse_options(argc, argv, 7, o)) return usage();
    pg_model_ptr         m;
    std::vector<uint8_t> bytes;
    pg_image_input       image;
    if (int rc = load(argv[2], argv[3], argv[4], o, m, bytes, image)) return rc;
    pg_error           err;
    std::vector<float> pixels;
    if (!pg_model_preprocess(*m, image, pixels, err)) return fail(err.message);
    // --reps N: that many more encodes, each timed (the first call warms up).
    pg_encode_result res;
    for (int r = 0; r <= o.reps; r++) {
        const int64_t t0 = ggml_time_us();
        if (!pg_model_encode(*m, image, {}, nullptr, res, err)) return fail(err.message);
        if (o.reps > 0) printf("encode %d: %.1f ms\n", r, (ggml_time_us() - t0) / 1000.0);
    }
    const pg_image_embedding & e = *res.embedding;
    if (!write_f32(argv[5], pixels.data(), pixels.size()) || !write_f32(argv[6], e.data.data(), e.data.size())) return fail("cannot write output");
    const pg_model_info & info = pg_model_get_info(*m);
    printf("%d px, %d tokens x %d, %s attention, %s matmul\n", info.image_size, e.tokens, e.dim, info.vision_attention.c_str(),
           info.vision_matmul.c_str());
    return 0;
}

int cmd_generate(int argc, char ** argv) {
    tool_options o;
    if (!parse_options(argc, argv, 7, o)) return usage();
    pg_model_ptr         m;
    std::vector<uint8_t> bytes;
    pg_generate_request  req;
    if (int rc = load(argv[2], argv[3], argv[4], o, m, bytes, req.image)) return rc;
    req.prompt                 = argv[5];
    req.decoding.max_tokens    = atoi(argv[6]);
    req.decoding.want_logits   = o.logits_out != nullptr;
    req.decoding.forced        = o.forced;
    req.decoding.causal_prefix = o.causal_prefix;
    pg_error           err;
    pg_generate_result res;
    if (!pg_model_generate(*m, req, {}, nullptr, res, err)) return fail(err.message);
    // --reps N: N more generations, each timed (the first warmed up; the image is encoded each time).
    for (int r = 1; r <= o.reps; ++r) {
        pg_generate_result again;
        if (!pg_model_generate(*m, req, {}, nullptr, again, err)) return fail(err.message);
        printf("generation %d: encode %.1f ms, prefill %.1f ms (%.1f tok/s), decode %.1f ms\n", r, again.encode_ms, again.prefill_ms,
               again.prompt_tokens / (again.prefill_ms / 1000), again.decode_ms);
    }
    printf("backend %s, text matmul %s; %d prompt tokens\ntokens", pg_model_get_info(*m).backend.c_str(), pg_model_get_info(*m).text_matmul.c_str(),
           res.prompt_tokens);
    for (int32_t id : res.tokens) printf(" %d", id);
    printf("\ntext %s\nencode %.1f ms, prefill %.1f ms, decode %.1f ms\n", res.text.c_str(), res.encode_ms, res.prefill_ms, res.decode_ms);
    if (o.logits_out && !write_f32(o.logits_out, res.logits.data(), res.logits.size())) return fail(std::string("cannot write ") + o.logits_out);
    return 0;
}

// Relative L2 error of a against the reference b.
double rel_error(const std::vector<float> & a, const std::vector<float> & b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < b.size(); ++i) {
        num += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
        den += (double) b[i] * b[i];
    }
    return std::sqrt(num / den);
}

// Random values in [-scale, scale).
std::vector<float> random_values(size_t n, float scale, uint32_t seed) {
    std::vector<float> v(n);
    for (float & x : v) {
        seed = seed * 1664525u + 1013904223u;
        x    = ((float) (seed >> 8) / (float) (1u << 23) - 1.0f) * scale;
    }
    return v;
}

// A weight of n x k for each way: f32, q8_0, and q8_0 packed for our product (empty without it).
struct weight_forms {
    std::vector<float>   f32;
    std::vector<uint8_t> q8_0, packed;
};

weight_forms make_weight(int64_t n, int64_t k, uint32_t seed) {
    weight_forms w;
    w.f32 = random_values((size_t) (n * k), 0.05f, seed);
    w.q8_0.resize(ggml_row_size(GGML_TYPE_Q8_0, k) * n);
    ggml_quantize_chunk(GGML_TYPE_Q8_0, w.f32.data(), w.q8_0.data(), 0, n, k, nullptr);
    w.packed.resize(pg_q8_packed_panel_bytes(k) * (n / 16));
    pg_q8_pack(w.q8_0.data(), n, k, w.packed.data());
    return w;
}

// The graph of one way: 0 f32 weights (the reference), 1 ggml's q8_0, 2 ours (AVX-512 VNNI), 3 ours
// (AVX-VNNI), 4 ours (AVX2); the forms of ours share the packed weights.
constexpr int WAYS = 5;
pg_q8_isa     q8_isa_of(int way) {
        return way == 2 ? PG_Q8_AVX512_VNNI : way == 3 ? PG_Q8_AVX_VNNI : PG_Q8_AVX2;
}
const char * q8_isa_name(int way) {
    return way == 2 ? "avx512" : way == 3 ? "avx-vnni" : "avx2";
}

ggml_tensor * weight_tensor(ggml_context * ctx, int way, int64_t n, int64_t k) {
    ggml_tensor * t = way == 0   ? ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n)
                      : way == 1 ? ggml_new_tensor_2d(ctx, GGML_TYPE_Q8_0, k, n)
                                 : ggml_new_tensor_2d(ctx, GGML_TYPE_I8, (int64_t) pg_q8_packed_panel_bytes(k), n / 16);
    pg_tune_input(t);
    return t;
}

void set_weight(ggml_tensor * t, int way, const weight_forms & w) {
    ggml_backend_tensor_set(t,
                            way == 0   ? (const void *) w.f32.data()
                            : way == 1 ? (const void *) w.q8_0.data()
                                       : (const void *) w.packed.data(),
                            0, ggml_nbytes(t));
}

// Runs an allocated graph four times: the best of the last three in ms, then its first `outputs` values.
bool time_graph(ggml_backend_t cpu, const pg_tune_graph & g, ggml_tensor * out, size_t outputs, double & ms, std::vector<float> & y) {
    for (int r = 0; r < 4; ++r) {
        const int64_t t0 = ggml_time_us();
        if (ggml_backend_graph_compute(cpu, g.graph) != GGML_STATUS_SUCCESS) return false;
        const double t = (ggml_time_us() - t0) / 1000.0;
        if (r > 0 && (ms == 0 || t < ms)) ms = t;
    }
    y.resize(outputs);
    ggml_backend_tensor_get(out, y.data(), 0, y.size() * sizeof(float));
    return true;
}

// Each way: build(ctx, way, inputs) -> output; timed, and compared with way 0.
template <typename Build>
int check(ggml_backend_t cpu, const char * what, double gflop, int64_t outputs, Build build) {
    std::vector<float> y[WAYS];
    double             ms[WAYS]  = {};
    bool               ran[WAYS] = {};
    for (int way = 0; way < WAYS; ++way) {
        if (way >= 2 && !pg_q8_gemm_available(q8_isa_of(way))) continue;
        ran[way] = true;
        pg_tune_graph g;
        if (!pg_tune_begin(g, 64)) return fail("cannot create a graph context");
        std::vector<std::function<void()>> setters;
        ggml_tensor *                      out = build(g.ctx.get(), way, setters);
        if (!pg_tune_finish(g, cpu, out)) return fail("cannot allocate a graph");
        for (auto & set : setters) set();
        if (!time_graph(cpu, g, out, (size_t) outputs, ms[way], y[way])) return fail("graph computation failed");
    }
    printf("%-34s f32 %7.2f ms | ggml q8_0 %7.2f ms (%4.0f GFLOP/s), rel. error %.2e", what, ms[0], ms[1], gflop / (ms[1] / 1000),
           rel_error(y[1], y[0]));
    for (int way = 2; way < WAYS; ++way) {
        if (ran[way]) {
            printf(" | ours %s %7.2f ms (%4.0f GFLOP/s), rel. error %.2e", q8_isa_name(way), ms[way], gflop / (ms[way] / 1000),
                   rel_error(y[way], y[0]));
        }
    }
    printf("\n");
    return 0;
}

// W x + b over m rows.
int check_linear(ggml_backend_t cpu, int64_t k, int64_t n, int64_t m) {
    const weight_forms       w = make_weight(n, k, 1);
    const std::vector<float> x = random_values((size_t) (k * m), 1.0f, 2), b = random_values((size_t) n, 0.5f, 3);
    char                     what[64];
    snprintf(what, sizeof(what), "linear %lld -> %lld, %lld rows", (long long) k, (long long) n, (long long) m);
    return check(cpu, what, 2.0 * k * n * m / 1e9, n * m, [&](ggml_context * ctx, int way, std::vector<std::function<void()>> & set) {
        ggml_tensor * wt = weight_tensor(ctx, way, n, k);
        ggml_tensor * xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
        ggml_tensor * bt = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
        pg_tune_input(xt);
        pg_tune_input(bt);
        set.push_back([=, &w, &x, &b] {
            set_weight(wt, way, w);
            ggml_backend_tensor_set(xt, x.data(), 0, ggml_nbytes(xt));
            ggml_backend_tensor_set(bt, b.data(), 0, ggml_nbytes(bt));
        });
        if (way < 2) return ggml_add(ctx, ggml_mul_mat(ctx, wt, xt), bt);
        return pg_q8_linear(ctx, &wt, &bt, 1, pg_q8_quantize(ctx, xt, q8_isa_of(way)), PG_Q8_BIAS, nullptr, q8_isa_of(way));
    });
}

// W x + b with f16 weights: f32 weights (the reference), ggml's f16 product, ours in each form.
// outlier > 1: every 97th input channel that many times larger (as a transformer's few large
// channels: they set the int16 form's block scales).
int check_linear_f16(ggml_backend_t cpu, int64_t k, int64_t n, int64_t m, float outlier = 1.0f) {
    const std::vector<float> wf = random_values((size_t) (n * k), 0.05f, 1), b = random_values((size_t) n, 0.5f, 3);
    std::vector<float>       x = random_values((size_t) (k * m), 1.0f, 2);
    for (int64_t r = 0; r < m && outlier != 1.0f; ++r) {
        for (int64_t c = 7; c < k; c += 97) x[r * k + c] *= outlier;
    }
    std::vector<ggml_fp16_t> wh(wf.size());
    ggml_fp32_to_fp16_row(wf.data(), wh.data(), (int64_t) wf.size());
    const char *       names[] = { "f32", "ggml f16", "ours avx512", "ours avx2", "ours int16-avx2" };
    const pg_f16_isa   forms[] = { PG_F16_AVX512, PG_F16_AVX2, PG_F16_INT16_AVX2 };
    std::vector<float> y[5];
    double             ms[5] = {};
    printf("f16 linear %lld -> %lld, %lld rows", (long long) k, (long long) n, (long long) m);
    if (outlier != 1.0f) printf(", every 97th input x%g", outlier);
    for (int way = 0; way < 5; ++way) {
        if (way >= 2 && !pg_f16_gemm_available(forms[way - 2])) continue;
        pg_tune_graph g;
        if (!pg_tune_begin(g, 16)) return fail("cannot create a graph context");
        ggml_context *       ctx = g.ctx.get();
        std::vector<int16_t> packed;
        const int64_t        elems = way >= 2 ? pg_f16_panel_elems(k, forms[way - 2]) : 0;
        ggml_tensor *        wt    = way == 0   ? ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n)
                                     : way == 1 ? ggml_new_tensor_2d(ctx, GGML_TYPE_F16, k, n)
                                                : ggml_new_tensor_2d(ctx, GGML_TYPE_I16, elems, n / 16);
        if (way >= 2) {
            packed.resize((size_t) (elems * (n / 16)));
            pg_f16_pack(wh.data(), n, k, forms[way - 2], packed.data());
        }
        ggml_tensor * xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
        ggml_tensor * bt = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
        for (ggml_tensor * t : { wt, xt, bt }) pg_tune_input(t);
        ggml_tensor * out = way < 2 ? ggml_add(ctx, ggml_mul_mat(ctx, wt, xt), bt) : pg_f16_linear(ctx, wt, bt, xt, nullptr, forms[way - 2]);
        if (!pg_tune_finish(g, cpu, out)) return fail("cannot allocate a graph");
        ggml_backend_tensor_set(wt,
                                way == 0   ? (const void *) wf.data()
                                : way == 1 ? (const void *) wh.data()
                                           : (const void *) packed.data(),
                                0, ggml_nbytes(wt));
        ggml_backend_tensor_set(xt, x.data(), 0, ggml_nbytes(xt));
        ggml_backend_tensor_set(bt, b.data(), 0, ggml_nbytes(bt));
        if (!time_graph(cpu, g, out, (size_t) (n * m), ms[way], y[way])) return fail("graph computation failed");
        printf(" | %s %7.2f ms (%4.0f GFLOP/s)", names[way], ms[way], 2.0 * k * n * m / 1e9 / (ms[way] / 1000));
        if (way > 0) printf(", rel. error %.2e", rel_error(y[way], y[0]));
    }
    printf("\n");
    return 0;
}

// W x over m rows for q4_0 weights: f32 (the reference), ggml's q4_0 product in its repacked layout
// (as llama.cpp runs the text model), ours (AVX-512 VNNI).
int check_linear_q4(ggml_backend_t cpu, int64_t k, int64_t n, int64_t m) {
    const std::vector<float> wf = random_values((size_t) (n * k), 0.05f, 21), x = random_values((size_t) (k * m), 1.0f, 22);
    std::vector<uint8_t>     wq(ggml_row_size(GGML_TYPE_Q4_0, k) * n), packed(pg_q4_packed_panel_bytes(k) * (n / 16));
    ggml_quantize_chunk(GGML_TYPE_Q4_0, wf.data(), wq.data(), 0, n, k, nullptr);
    pg_q4_pack(wq.data(), n, k, packed.data());
    ggml_backend_buffer_type_t repack   = pg_cpu_repack_buffer_type();
    const char *               names[3] = { "f32", repack ? "ggml q4_0 (repacked)" : "ggml q4_0", "ours avx512" };
    std::vector<float>         y[3];
    double                     ms[3] = {};
    const double               gflop = 2.0 * k * n * m / 1e9;
    for (int way = 0; way < 3; ++way) {
        if (way == 2 && !pg_q4_gemm_available()) continue;
        pg_tune_graph g;
        if (!pg_tune_begin(g, 16)) return fail("cannot create a graph context");
        ggml_context *          ctx = g.ctx.get();
        ggml_context_ptr        wctx(ggml_init({ ggml_tensor_overhead() * 2, nullptr, true }));
        ggml_backend_buffer_ptr wbuf;
        ggml_tensor *           wt = way == 0   ? ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n)
                                     : way == 1 ? ggml_new_tensor_2d(wctx.get(), GGML_TYPE_Q4_0, k, n)
                                                : ggml_new_tensor_2d(ctx, GGML_TYPE_I8, (int64_t) pg_q4_packed_panel_bytes(k), n / 16);
        if (way == 1) {
            wbuf.reset(ggml_backend_alloc_ctx_tensors_from_buft(wctx.get(), repack ? repack : ggml_backend_get_default_buffer_type(cpu)));
            if (!wbuf) return fail("cannot allocate a weight");
        } else {
            pg_tune_input(wt);
        }
        ggml_tensor * xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
        pg_tune_input(xt);
        ggml_tensor * out = way < 2 ? ggml_mul_mat(ctx, wt, xt) : pg_q4_linear(ctx, wt, pg_q4_quantize(ctx, xt));
        if (!pg_tune_finish(g, cpu, out)) return fail("cannot allocate a graph");
        ggml_backend_tensor_set(wt,
                                way == 0   ? (const void *) wf.data()
                                : way == 1 ? (const void *) wq.data()
                                           : (const void *) packed.data(),
                                0, ggml_nbytes(wt));
        ggml_backend_tensor_set(xt, x.data(), 0, ggml_nbytes(xt));
        if (!time_graph(cpu, g, out, (size_t) (n * m), ms[way], y[way])) return fail("graph computation failed");
    }
    printf("q4_0 linear %lld -> %lld, %lld rows", (long long) k, (long long) n, (long long) m);
    for (int way = 0; way < 3; ++way) {
        if (y[way].empty()) continue;
        printf(" | %s %7.2f ms (%4.0f GFLOP/s)", names[way], ms[way], gflop / (ms[way] / 1000));
        if (way > 0) printf(", rel. error %.2e", rel_error(y[way], y[0]));
    }
    printf("\n");
    return 0;
}

// SigLIP's MLP block: x + fc2(gelu(fc1(layer_norm(x)))); ours fuses the norm with quantizing, GELU
// with fc1 (and quantizing for fc2), the residual with fc2.
int check_mlp(ggml_backend_t cpu, int64_t c, int64_t f, int64_t m) {
    static const float       eps = 1e-6f;
    const weight_forms       w1 = make_weight(f, c, 4), w2 = make_weight(c, f, 5);
    const std::vector<float> x = random_values((size_t) (c * m), 1.0f, 6), b1 = random_values((size_t) f, 0.5f, 7),
                             b2 = random_values((size_t) c, 0.5f, 8);
    const std::vector<float> g = random_values((size_t) c, 1.0f, 9), gb = random_values((size_t) c, 0.2f, 10);
    char                     what[64];
    snprintf(what, sizeof(what), "mlp block %lld/%lld, %lld rows", (long long) c, (long long) f, (long long) m);
    return check(cpu, what, 4.0 * c * f * m / 1e9, c * m, [&](ggml_context * ctx, int way, std::vector<std::function<void()>> & set) {
        ggml_tensor * w1t = weight_tensor(ctx, way, f, c);
        ggml_tensor * w2t = weight_tensor(ctx, way, c, f);
        ggml_tensor * xt  = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c, m);
        ggml_tensor * b1t = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, f);
        ggml_tensor * b2t = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, c);
        ggml_tensor * gt  = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, c);
        ggml_tensor * gbt = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, c);
        for (ggml_tensor * t : { xt, b1t, b2t, gt, gbt }) pg_tune_input(t);
        set.push_back([=, &w1, &w2, &x, &b1, &b2, &g, &gb] {
            set_weight(w1t, way, w1);
            set_weight(w2t, way, w2);
            ggml_backend_tensor_set(xt, x.data(), 0, ggml_nbytes(xt));
            ggml_backend_tensor_set(b1t, b1.data(), 0, ggml_nbytes(b1t));
            ggml_backend_tensor_set(b2t, b2.data(), 0, ggml_nbytes(b2t));
            ggml_backend_tensor_set(gt, g.data(), 0, ggml_nbytes(gt));
            ggml_backend_tensor_set(gbt, gb.data(), 0, ggml_nbytes(gbt));
        });
        if (way < 2) {
            ggml_tensor * h = ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, xt, eps), gt), gbt);
            h               = ggml_gelu(ctx, ggml_add(ctx, ggml_mul_mat(ctx, w1t, h), b1t));
            return ggml_add(ctx, xt, ggml_add(ctx, ggml_mul_mat(ctx, w2t, h), b2t));
        }
        const pg_q8_isa isa = q8_isa_of(way);
        return pg_q8_mlp(ctx, w1t, b1t, w2t, b2t, pg_q8_norm_quantize(ctx, xt, gt, gbt, &eps, isa), xt, isa);
    });
}

// Attention over n tokens, 16 heads of 72: ggml's separate ops (f32, the reference), ggml's fused
// kernel, ours at each vector width this CPU has. q_scale > 1 spreads the scores (a trained tower's
// are far from flat): most probabilities then fall far below each row's maximum, to denormal floats
// unless the kernel flushes them.
int check_attention(ggml_backend_t cpu, int64_t n, float q_scale = 1.0f) {
    const int64_t            c = 1152, h = 16, hd = c / h;
    const std::vector<float> q = random_values((size_t) (c * n), q_scale, 11), k = random_values((size_t) (c * n), 1.0f, 12),
                             v         = random_values((size_t) (c * n), 1.0f, 13);
    constexpr int          WAYS        = 6;
    const char *           names[WAYS] = { "separate", "fused", "ours avx512", "ours avx2", "ours int16 avx2", "ours int16 avx512" };
    const pg_attention_isa isa[WAYS]   = { PG_ATTENTION_AVX512, PG_ATTENTION_AVX512, PG_ATTENTION_AVX512,
                                           PG_ATTENTION_AVX2,   PG_ATTENTION_AVX2,   PG_ATTENTION_AVX512_VNNI };
    std::vector<float>     y[WAYS];
    double                 ms[WAYS]  = {};
    bool                   ran[WAYS] = {};
    for (int way = 0; way < WAYS; ++way) {
        if (way >= 2 && !pg_attention_cpu_available(isa[way])) continue;
        ran[way] = true;
        pg_tune_graph g;
        if (!pg_tune_begin(g, 64)) return fail("cannot create a graph context");
        ggml_context * ctx = g.ctx.get();
        ggml_tensor *  t[3];
        for (ggml_tensor *& x : t) {
            x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c, n);
            pg_tune_input(x);
        }
        const float   scale = 1.0f / sqrtf((float) hd);
        ggml_tensor * out;
        auto          heads = [&](ggml_tensor * x) { return ggml_view_3d(ctx, x, hd, h, n, hd * sizeof(float), x->nb[1], 0); };
        if (way >= 4) {
            out = pg_attention_cpu_int16(ctx, t[0], t[1], t[2], (int) h, isa[way]);
        } else if (way >= 2) {
            const int64_t ch       = PG_ATTENTION_CHUNK;
            const int     lanes    = pg_attention_cpu_lanes(isa[way]);
            auto          per_head = [&](ggml_tensor * x) { return ggml_cont(ctx, ggml_permute(ctx, heads(x), 0, 2, 1, 3)); };
            ggml_tensor * kc = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, ggml_cont(ctx, heads(t[1])), hd, h, ch, n / ch), 1, 3, 0, 2));
            ggml_tensor * vp = per_head(t[2]);
            if (hd % lanes) vp = ggml_pad(ctx, vp, (int) (lanes - hd % lanes), 0, 0, 0);
            out = pg_attention_cpu(ctx, per_head(t[0]), kc, vp, isa[way]);
        } else {
            ggml_tensor *qh = ggml_permute(ctx, heads(t[0]), 0, 2, 1, 3), *kh = ggml_permute(ctx, heads(t[1]), 0, 2, 1, 3);
            if (way == 1) {
                out = ggml_flash_attn_ext(ctx, qh, ggml_cast(ctx, kh, GGML_TYPE_F16),
                                          ggml_cast(ctx, ggml_permute(ctx, heads(t[2]), 0, 2, 1, 3), GGML_TYPE_F16), nullptr, scale, 0, 0);
                ggml_prec_set_acc(out, GGML_PREC_F32);
                out = ggml_reshape_2d(ctx, out, c, n);
            } else {
                ggml_tensor * kq  = ggml_soft_max_ext(ctx, ggml_mul_mat(ctx, kh, qh), nullptr, scale, 0.0f);
                ggml_tensor * kqv = ggml_mul_mat(ctx, ggml_cont(ctx, ggml_permute(ctx, heads(t[2]), 1, 2, 0, 3)), kq);
                out               = ggml_reshape_2d(ctx, ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3)), c, n);
            }
        }
        if (!pg_tune_finish(g, cpu, out)) return fail("cannot allocate a graph");
        ggml_backend_tensor_set(t[0], q.data(), 0, ggml_nbytes(t[0]));
        ggml_backend_tensor_set(t[1], k.data(), 0, ggml_nbytes(t[1]));
        ggml_backend_tensor_set(t[2], v.data(), 0, ggml_nbytes(t[2]));
        for (int r = 0; r < 4; ++r) {
            const int64_t t0 = ggml_time_us();
            if (ggml_backend_graph_compute(cpu, g.graph) != GGML_STATUS_SUCCESS) return fail("graph computation failed");
            const double dt = (ggml_time_us() - t0) / 1000.0;
            if (r > 0 && (ms[way] == 0 || dt < ms[way])) ms[way] = dt;
        }
        y[way].resize((size_t) (c * n));
        ggml_backend_tensor_get(out, y[way].data(), 0, y[way].size() * sizeof(float));
    }
    const double gflop = 4.0 * n * n * c / 1e9;
    if (q_scale != 1.0f)
        printf("attention %lld tokens, 16 x 72, q x%g", (long long) n, q_scale);
    else
        printf("attention %lld tokens, 16 x 72    ", (long long) n);
    for (int way = 0; way < WAYS; ++way) {
        if (!ran[way]) continue;
        printf(" | %s %7.2f ms (%4.0f GFLOP/s)", names[way], ms[way], gflop / (ms[way] / 1000));
        if (way) printf(", rel. error %.2e", rel_error(y[way], y[0]));
    }
    printf("\n");
    return 0;
}

#if PG_X86_KERNELS
// This CPU's peak rates for the instruction mixes of our products, the ceiling a kernel's GFLOP/s
// is read against: n rounds of independent chains in registers, the whole loop in asm so that the
// compiler keeps every instruction. Flops as the products count them: 2 per multiply-add.
#define PG_X12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define PG_ZERO(i) "vpxor %%xmm" #i ", %%xmm" #i ", %%xmm" #i "\n"
#define PG_FMA256(i) "vfmadd231ps %[a], %[a], %%ymm" #i "\n"
#define PG_FMA512(i) "vfmadd231ps %[a], %[a], %%zmm" #i "\n"
// The AVX2 int8 step for signed activations (sign onto the weights, vpmaddubsw, vpmaddwd, vpaddd), 32
// multiply-adds: 6 chains, each with its own temporary (registers 6 to 11).
#define PG_Q8STEP(s, t)                                                                                                  \
    "vpsignb %[a], %[a], %%ymm" #t "\n vpmaddubsw %%ymm" #t ", %[a], %%ymm" #t "\n vpmaddwd %[a], %%ymm" #t ", %%ymm" #t \
    "\n"                                                                                                                 \
    " vpaddd %%ymm" #t ", %%ymm" #s ", %%ymm" #s "\n"
// The AVX2 int16 step (vpmaddwd, vpaddd), 16 multiply-adds: what block-scaled 16-bit weights would run.
#define PG_I16STEP(s, t) "vpmaddwd %[a], %[a], %%ymm" #t "\n vpaddd %%ymm" #t ", %%ymm" #s ", %%ymm" #s "\n"
// The same multiply-adds in one instruction where VNNI has it (vpdpwssd; {vex}: the AVX-VNNI encoding).
#define PG_DPW256(i) "%{vex%} vpdpwssd %[a], %[a], %%ymm" #i "\n"
#define PG_DPW512(i) "vpdpwssd %[a], %[a], %%zmm" #i "\n"
#define PG_LOOP(body) PG_X12(PG_ZERO) "1:\n" body "dec %[n]\n jnz 1b\n" : [n] "+r"(n) : [a] "x"(a)
#define PG_CLOBBER12 "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "cc"

// One peak loop: `name` runs n rounds of `body` (on the register a = `init`), `flops` per round.
#define PG_PEAK(name, isa, type, init, flops, body)                             \
    __attribute__((target(isa))) double name(long n) {                          \
        const double total = (flops) * (double) n; /* the loop counts n down */ \
        const type   a     = init;                                              \
        __asm__ volatile(PG_LOOP(body) : PG_CLOBBER12);                         \
        return total;                                                           \
    }
PG_PEAK(peak_fma256, "avx2,fma", __m256, _mm256_set1_ps(1.0f), 12 * 8 * 2, PG_X12(PG_FMA256))
PG_PEAK(peak_fma512, "avx512f", __m512, _mm512_set1_ps(1.0f), 12 * 16 * 2, PG_X12(PG_FMA512))
PG_PEAK(peak_q8_avx2, "avx2", __m256i, _mm256_set1_epi8(3), 6 * 32 * 2,
        PG_Q8STEP(0, 6) PG_Q8STEP(1, 7) PG_Q8STEP(2, 8) PG_Q8STEP(3, 9) PG_Q8STEP(4, 10) PG_Q8STEP(5, 11))
PG_PEAK(peak_i16_avx2, "avx2", __m256i, _mm256_set1_epi16(3), 6 * 16 * 2,
        PG_I16STEP(0, 6) PG_I16STEP(1, 7) PG_I16STEP(2, 8) PG_I16STEP(3, 9) PG_I16STEP(4, 10) PG_I16STEP(5, 11))
PG_PEAK(peak_i16_avx_vnni, "avx2,avxvnni", __m256i, _mm256_set1_epi16(3), 12 * 16 * 2, PG_X12(PG_DPW256))
PG_PEAK(peak_i16_avx512_vnni, "avx512f,avx512vnni", __m512i, _mm512_set1_epi16(3), 12 * 32 * 2, PG_X12(PG_DPW512))

// GFLOP/s of `threads` threads each running body (which returns its flops) at once, the best of three.
double peak_rate(int threads, double (*body)(long)) {
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
        std::vector<std::thread> team;
        std::vector<double>      flops((size_t) threads);
        const int64_t            t0 = ggml_time_us();
        for (int t = 0; t < threads; ++t) team.emplace_back([body, &flops, t] { flops[(size_t) t] = body(20000000); });
        for (auto & t : team) t.join();
        double total = 0;
        for (double f : flops) total += f;
        best = std::max(best, total / ((double) (ggml_time_us() - t0) * 1e3));
    }
    return best;
}

// The softmax's 2^t (pg_simd_exp.h) against double precision over t in [-125, 0], at 2^20 points.
template <typename Exp2>
double exp2_error(Exp2 exp2_of_8) {
    double    worst = 0;
    const int steps = 1 << 20;
    for (int i = 0; i < steps; i += 8) {
        float t[8], y[8];
        for (int j = 0; j < 8; ++j) t[j] = -125.0f * (float) (i + j) / (float) steps;
        exp2_of_8(t, y);
        for (int j = 0; j < 8; ++j) worst = std::max(worst, std::fabs((double) y[j] / std::exp2((double) t[j]) - 1.0));
    }
    return worst;
}
__attribute__((target("avx2,fma"))) void exp2_avx2_of_8(const float * t, float * y) {
    _mm256_storeu_ps(y, pg_exp2_avx2(_mm256_loadu_ps(t)));
}
__attribute__((target("avx512f"))) void exp2_avx512_of_8(const float * t, float * y) {
    float in[16] = {}, out[16];
    memcpy(in, t, 8 * sizeof(float));
    _mm512_storeu_ps(out, pg_exp2_avx512(_mm512_loadu_ps(in)));
    memcpy(y, out, 8 * sizeof(float));
}

// The CPU itself, whatever PALIGEMMA_CPU_VARIANT keeps our kernels to.
void print_peaks(int threads) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
    printf("this CPU's peak, %d threads: f32 FMA 256-bit %.0f GFLOP/s", threads, peak_rate(threads, peak_fma256));
    if (__builtin_cpu_supports("avx512f")) printf(", 512-bit %.0f", peak_rate(threads, peak_fma512));
    printf(" | int8 AVX2 step (vpsignb, vpmaddubsw, vpmaddwd, vpaddd) %.0f GFLOP/s", peak_rate(threads, peak_q8_avx2));
    printf(" | int16 AVX2 step (vpmaddwd, vpaddd) %.0f GFLOP/s", peak_rate(threads, peak_i16_avx2));
    // Not run by our products yet: where an int16 form could go on CPUs with VNNI.
    if (__builtin_cpu_supports("avxvnni")) printf(", AVX-VNNI (vpdpwssd ymm) %.0f", peak_rate(threads, peak_i16_avx_vnni));
    if (__builtin_cpu_supports("avx512vnni")) printf(", AVX-512 VNNI (vpdpwssd zmm) %.0f", peak_rate(threads, peak_i16_avx512_vnni));
    printf("\n");
    printf("softmax's 2^t over [-125, 0]: max rel. error %.2e (AVX2)", exp2_error(exp2_avx2_of_8));
    if (__builtin_cpu_supports("avx512f")) printf(", %.2e (AVX-512)", exp2_error(exp2_avx512_of_8));
    printf("\n");
}
#endif

int cmd_kernels(int argc, char ** argv) {
    tool_options o;
    if (!parse_options(argc, argv, 2, o)) return usage();
    pg_backend_init_once();
    ggml_backend_ptr cpu(ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr));
    if (!cpu) return fail(pg_no_cpu_backend_message().c_str());
    pg_backend_set_threads(cpu.get(), o.model.threads > 0 ? o.model.threads : pg_physical_cores());
    printf("our int8 product: AVX-512 VNNI %s, AVX-VNNI %s, AVX2 %s\n", pg_q8_gemm_available(PG_Q8_AVX512_VNNI) ? "available" : "not available",
           pg_q8_gemm_available(PG_Q8_AVX_VNNI) ? "available" : "not available", pg_q8_gemm_available(PG_Q8_AVX2) ? "available" : "not available");
#if PG_X86_KERNELS
    print_peaks(o.model.threads > 0 ? o.model.threads : pg_physical_cores());
#endif
    if (o.gemma_shapes) {
        // Gemma-2B (PaliGemma 1's text model): q/o 2048 -> 2048, k/v 2048 -> 256, gate/up 2048 -> 16384, down back; a 224 px
        // prefix (261 rows) and one decoded token. What our product would do for the text model's q8_0 weights.
        const int64_t text[][3] = { { 2048, 2048, 261 }, { 2048, 256, 261 }, { 2048, 16384, 261 }, { 16384, 2048, 261 },
                                    { 2048, 2048, 1 },   { 2048, 16384, 1 }, { 16384, 2048, 1 } };
        for (const auto & l : text) {
            if (int rc = check_linear(cpu.get(), l[0], l[1], l[2])) return rc;
        }
        for (const auto & l : text) {
            if (int rc = check_linear_q4(cpu.get(), l[0], l[1], l[2])) return rc;
        }
        return 0;
    }
    // SigLIP-So400m: q/k/v/o 1152 -> 1152, fc1 1152 -> 4320 (padded), fc2 back; 256 and 1024 tokens, and an odd count.
    const int64_t linears[][3] = { { 1152, 1152, 256 }, { 1152, 4320, 256 }, { 4320, 1152, 256 }, { 1152, 1152, 1024 }, { 1152, 1152, 37 } };
    for (const auto & l : linears) {
        if (int rc = check_linear(cpu.get(), l[0], l[1], l[2])) return rc;
    }
    // f16 towers keep SigLIP's unpadded 4304 (269 panels: a partial group of the 512-bit tiles).
    const int64_t f16_linears[][3] = { { 1152, 1152, 256 }, { 1152, 4304, 256 }, { 4304, 1152, 256 }, { 1152, 1152, 1024 }, { 1152, 4304, 37 } };
    for (const auto & l : f16_linears) {
        if (int rc = check_linear_f16(cpu.get(), l[0], l[1], l[2])) return rc;
    }
    if (int rc = check_linear_f16(cpu.get(), 1152, 1152, 256, 30.0f)) return rc;
    if (int rc = check_mlp(cpu.get(), 1152, 4320, 256)) return rc;
    if (int rc = check_mlp(cpu.get(), 1152, 4320, 37)) return rc;
    for (int64_t n : { 256, 1024 }) {
        if (int rc = check_attention(cpu.get(), n)) return rc;
    }
    if (int rc = check_attention(cpu.get(), 1024, 100.0f)) return rc;
    return 0;
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc < 2) return usage();
    if (!strcmp(argv[1], "system") && argc == 2) return cmd_system();
    if (!strcmp(argv[1], "gguf") && argc == 3) return cmd_gguf(argv[2]);
    if (!strcmp(argv[1], "encode") && argc >= 7) return cmd_encode(argc, argv);
    if (!strcmp(argv[1], "generate") && argc >= 7) return cmd_generate(argc, argv);
    if (!strcmp(argv[1], "kernels")) return cmd_kernels(argc, argv);
    return usage();
}
