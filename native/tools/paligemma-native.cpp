// paligemma-native: the C++ core without Node, for checks on machines that have no Node.js. It
// calls the same pg_model functions as the addon.
#include "pg_gguf.h"
#include "pg_model.h"
#include "pg_system.h"

#include "ggml.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

int usage() {
    fprintf(stderr,
            "usage: paligemma-native system\n"
            "       paligemma-native gguf FILE\n"
            "       paligemma-native encode MODEL MMPROJ IMAGE PIXELS_OUT.f32 EMBD_OUT.f32 [options] [--reps N]\n"
            "       paligemma-native generate MODEL MMPROJ IMAGE PROMPT MAX_TOKENS [options] [--logits OUT.f32] [--force ID,ID,...]\n"
            "options: --gpu auto|cpu|cuda|metal|vulkan  --threads N  --f32-kv  --no-fa  --vision-attention fused|separate  --no-repack\n");
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
            if (v != "fused" && v != "separate") return false;
            o.model.vision_attention = v == "fused" ? PG_VISION_ATTENTION_FUSED : PG_VISION_ATTENTION_SEPARATE;
        } else if (!strcmp(a, "--reps") && more)
            o.reps = atoi(argv[++i]);
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
        if (!pg_model_encode(*m, image, nullptr, res, err)) return fail(err.message);
        if (o.reps > 0) printf("encode %d: %.1f ms\n", r, (ggml_time_us() - t0) / 1000.0);
    }
    const pg_image_embedding & e = *res.embedding;
    if (!write_f32(argv[5], pixels.data(), pixels.size()) || !write_f32(argv[6], e.data.data(), e.data.size())) return fail("cannot write output");
    const pg_model_info & info = pg_model_get_info(*m);
    printf("%d px, %d tokens x %d\n", info.image_size, e.tokens, e.dim);
    return 0;
}

int cmd_generate(int argc, char ** argv) {
    tool_options o;
    if (!parse_options(argc, argv, 7, o)) return usage();
    pg_model_ptr         m;
    std::vector<uint8_t> bytes;
    pg_generate_request  req;
    if (int rc = load(argv[2], argv[3], argv[4], o, m, bytes, req.image)) return rc;
    req.prompt               = argv[5];
    req.decoding.max_tokens  = atoi(argv[6]);
    req.decoding.want_logits = o.logits_out != nullptr;
    req.decoding.forced      = o.forced;
    pg_error           err;
    pg_generate_result res;
    if (!pg_model_generate(*m, req, {}, nullptr, res, err)) return fail(err.message);
    printf("backend %s; %d prompt tokens\ntokens", pg_model_get_info(*m).backend.c_str(), res.prompt_tokens);
    for (int32_t id : res.tokens) printf(" %d", id);
    printf("\ntext %s\nencode %.1f ms, prefill %.1f ms, decode %.1f ms\n", res.text.c_str(), res.encode_ms, res.prefill_ms, res.decode_ms);
    if (o.logits_out && !write_f32(o.logits_out, res.logits.data(), res.logits.size())) return fail(std::string("cannot write ") + o.logits_out);
    return 0;
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc < 2) return usage();
    if (!strcmp(argv[1], "system") && argc == 2) return cmd_system();
    if (!strcmp(argv[1], "gguf") && argc == 3) return cmd_gguf(argv[2]);
    if (!strcmp(argv[1], "encode") && argc >= 7) return cmd_encode(argc, argv);
    if (!strcmp(argv[1], "generate") && argc >= 7) return cmd_generate(argc, argv);
    return usage();
}
