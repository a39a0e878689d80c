// paligemma-native: the C++ core without Node, for native checks on machines that have no Node.js.
//   paligemma-native system            backends, devices, CPU features
//   paligemma-native gguf FILE         header, metadata keys and tensors of a GGUF file
#include "pg_gguf.h"
#include "pg_image.h"
#include "pg_model.h"
#include "pg_system.h"
#include "pg_vision.h"

#include "ggml.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

static int usage() {
    fprintf(stderr,
            "usage: paligemma-native system\n"
            "       paligemma-native gguf FILE\n"
            "       paligemma-native encode MMPROJ IMAGE PIXELS_OUT.f32 EMBD_OUT.f32 [THREADS] [REPS]\n"
            "       paligemma-native generate MODEL MMPROJ IMAGE PROMPT MAX_TOKENS [LOGITS_OUT.f32] [--gpu G] [--f32-kv] [--no-fa] [--threads N] [--force ID,ID,...]\n");
    return 2;
}

static int cmd_system() {
    pg_system_info info = pg_get_system_info();
    printf("llama.cpp commit: %s\n", info.llama_cpp_commit.c_str());
    printf("threads: %d default (physical cores), %d logical\n", info.default_threads, info.logical_cpus);
    for (const auto & d : info.devices) {
        printf("device %s (%s, %s): %s, %.1f/%.1f GiB free\n", d.name.c_str(), d.type.c_str(), d.backend.c_str(),
               d.description.c_str(), d.memory_free / 1073741824.0, d.memory_total / 1073741824.0);
    }
    printf("cpu features:");
    for (const auto & f : info.cpu_features) printf(" %s=%s", f.name.c_str(), f.value.c_str());
    printf("\n");
    return 0;
}

static int cmd_gguf(const char * path) {
    pg_gguf_file f;
    pg_error     err;
    if (!pg_gguf_open(path, f, err) || !pg_gguf_check_data_bounds(f, err)) {
        fprintf(stderr, "error: %s\n", err.message.c_str());
        return 1;
    }
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
        printf("  %-48s %-6s [%lld, %lld, %lld, %lld] @%zu\n", gguf_get_tensor_name(ctx, i),
               ggml_type_name(gguf_get_tensor_type(ctx, i)), (long long) ne[0], (long long) ne[1], (long long) ne[2],
               (long long) ne[3], gguf_get_tensor_offset(ctx, i));
    }
    return 0;
}

static bool read_file(const char * path, std::vector<uint8_t> & out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
}

static bool write_f32(const char * path, const std::vector<float> & v) {
    FILE * f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(v.data(), sizeof(float), v.size(), f) == v.size();
    return fclose(f) == 0 && ok;
}

static int cmd_encode(int argc, char ** argv) {
    pg_vision_params params;
    params.n_threads = argc > 6 ? atoi(argv[6]) : 1;
    pg_vision_model      m;
    pg_error             err;
    std::vector<uint8_t> bytes;
    pg_image_rgb         img;
    std::vector<float>   pixels, embd;
    if (!pg_vision_load(argv[2], params, m, nullptr, err)) return fprintf(stderr, "error: %s\n", err.message.c_str()), 1;
    if (!read_file(argv[3], bytes)) return fprintf(stderr, "error: cannot read %s\n", argv[3]), 1;
    if (!pg_image_decode(bytes.data(), bytes.size(), img, err)) return fprintf(stderr, "error: %s: %s\n", argv[3], err.message.c_str()), 1;
    pg_image_preprocess(img, m.hp.image_size, m.hp.mean, m.hp.std, pixels);
    // REPS > 0: encode that many more times and print each time (the first call warms up).
    const int reps = argc > 7 ? atoi(argv[7]) : 0;
    for (int r = 0; r <= reps; r++) {
        const int64_t t0 = ggml_time_us();
        if (!pg_vision_encode(m, pixels.data(), embd, nullptr, err)) return fprintf(stderr, "error: %s\n", err.message.c_str()), 1;
        if (reps > 0) printf("encode %d: %.1f ms\n", r, (ggml_time_us() - t0) / 1000.0);
    }
    if (!write_f32(argv[4], pixels) || !write_f32(argv[5], embd)) return fprintf(stderr, "error: cannot write output\n"), 1;
    printf("%dx%d -> %d px, %d tokens x %d\n", img.width, img.height, m.hp.image_size, m.hp.image_tokens, m.hp.proj_dim);
    return 0;
}

static int cmd_generate(int argc, char ** argv) {
    pg_model_params mp;
    mp.model_path  = argv[2];
    mp.mmproj_path = argv[3];
    const char * image = argv[4];
    std::string  prompt = argv[5];
    int          max_tokens = atoi(argv[6]);
    const char * logits_out = nullptr;
    std::vector<int32_t> forced;
    for (int i = 7; i < argc; ++i) {
        if (!strcmp(argv[i], "--gpu") && i + 1 < argc) mp.gpu = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) mp.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--f32-kv")) mp.kv_type = GGML_TYPE_F32;
        else if (!strcmp(argv[i], "--no-fa")) mp.flash_attn = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        else if (!strcmp(argv[i], "--force") && i + 1 < argc) {
            for (char * tok = strtok(argv[++i], ","); tok; tok = strtok(nullptr, ",")) forced.push_back(atoi(tok));
        }
        else logits_out = argv[i];
    }
    pg_model             m;
    pg_error             err;
    std::vector<uint8_t> bytes;
    pg_image_rgb         img;
    std::vector<float>   pixels, embd;
    if (!pg_model_load(mp, m, nullptr, err)) return fprintf(stderr, "error: %s\n", err.message.c_str()), 1;
    if (!read_file(image, bytes)) return fprintf(stderr, "error: cannot read %s\n", image), 1;
    if (!pg_image_decode(bytes.data(), bytes.size(), img, err)) return fprintf(stderr, "error: %s: %s\n", image, err.message.c_str()), 1;
    pg_image_preprocess(img, m.vision.hp.image_size, m.vision.hp.mean, m.vision.hp.std, pixels);
    if (!pg_vision_encode(m.vision, pixels.data(), embd, nullptr, err)) return fprintf(stderr, "error: %s\n", err.message.c_str()), 1;
    pg_generate_params gp;
    gp.image_embd  = embd.data();
    gp.n_image     = m.vision.hp.image_tokens;
    gp.max_tokens  = max_tokens;
    gp.want_logits = logits_out != nullptr;
    gp.forced      = forced;
    if (!pg_model_prefix_ids(m, prompt, gp.prefix_ids, err)) return fprintf(stderr, "error: %s\n", err.message.c_str()), 1;
    pg_generate_result res;
    if (!pg_generate(m.text, gp, nullptr, nullptr, res, err)) return fprintf(stderr, "error: %s\n", err.message.c_str()), 1;
    printf("backend %s; prefix", m.backend.c_str());
    for (int32_t id : gp.prefix_ids) printf(" %d", id);
    printf("\ntokens");
    for (int32_t id : res.tokens) printf(" %d", id);
    printf("\ntext %s\nprefill %.1f ms, decode %.1f ms\n", res.text.c_str(), res.prefill_ms, res.decode_ms);
    if (logits_out && !write_f32(logits_out, res.logits)) return fprintf(stderr, "error: cannot write %s\n", logits_out), 1;
    return 0;
}

int main(int argc, char ** argv) {
    if (argc < 2) return usage();
    if (!strcmp(argv[1], "system") && argc == 2) return cmd_system();
    if (!strcmp(argv[1], "gguf") && argc == 3) return cmd_gguf(argv[2]);
    if (!strcmp(argv[1], "encode") && argc >= 6 && argc <= 8) return cmd_encode(argc, argv);
    if (!strcmp(argv[1], "generate") && argc >= 7) return cmd_generate(argc, argv);
    return usage();
}
