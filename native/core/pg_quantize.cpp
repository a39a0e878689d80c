#include "pg_quantize.h"
#include "pg_log.h"

#include "llama.h"

#include <sys/stat.h>
#include <cstring>

namespace {

struct ftype_name {
    const char * name;
    llama_ftype  ftype;
};

const ftype_name FTYPES[] = {
    { "f32", LLAMA_FTYPE_ALL_F32 },          { "f16", LLAMA_FTYPE_MOSTLY_F16 },       { "bf16", LLAMA_FTYPE_MOSTLY_BF16 },
    { "q8_0", LLAMA_FTYPE_MOSTLY_Q8_0 },     { "q4_0", LLAMA_FTYPE_MOSTLY_Q4_0 },     { "q4_1", LLAMA_FTYPE_MOSTLY_Q4_1 },
    { "q5_0", LLAMA_FTYPE_MOSTLY_Q5_0 },     { "q5_1", LLAMA_FTYPE_MOSTLY_Q5_1 },     { "q2_k", LLAMA_FTYPE_MOSTLY_Q2_K },
    { "q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M }, { "q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S }, { "q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M },
    { "q5_k_s", LLAMA_FTYPE_MOSTLY_Q5_K_S }, { "q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M }, { "q6_k", LLAMA_FTYPE_MOSTLY_Q6_K },
};

}  // namespace

ggml_type pg_ggml_type_from_name(const std::string & name) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * n = ggml_type_name((ggml_type) t);
        if (n && name == n) return (ggml_type) t;
    }
    return GGML_TYPE_COUNT;
}

bool pg_quantize_model(const std::string & in_path, const std::string & out_path, const std::string & type, int n_threads, pg_error & err) {
    pg_log_init();
    const ftype_name * found = nullptr;
    for (const auto & f : FTYPES) {
        if (type == f.name) found = &f;
    }
    if (!found) return err.set(PG_ERR_INVALID_ARGUMENT, "unknown quantization type '" + type + "'");
    struct stat st;
    if (stat(in_path.c_str(), &st) != 0) return err.set(PG_ERR_FILE_NOT_FOUND, in_path + ": no such file");

    llama_model_quantize_params params = llama_model_quantize_default_params();
    params.ftype                       = found->ftype;
    params.nthread                     = n_threads;
    params.allow_requantize            = false;
    pg_log_clear();
    // llama.cpp's quantizer throws inside and reports a non-zero status; it never aborts on bad input files.
    uint32_t rc = llama_model_quantize(in_path.c_str(), out_path.c_str(), &params);
    if (rc != 0) {
        std::string why = pg_log_last_errors();
        return err.set(PG_ERR_BACKEND, "llama.cpp could not quantize " + in_path + " to " + type + (why.empty() ? "" : ": " + why));
    }
    return true;
}

bool pg_quantize_rows(const float * src, int64_t n_rows, int64_t n_cols, ggml_type type, std::vector<uint8_t> & out, pg_error & err) {
    if (n_rows < 0 || n_cols <= 0) return err.set(PG_ERR_INVALID_ARGUMENT, "quantize: bad row count or width");
    if (type >= GGML_TYPE_COUNT || ggml_get_type_traits(type)->is_quantized == false) {
        if (type != GGML_TYPE_F32 && type != GGML_TYPE_F16 && type != GGML_TYPE_BF16) {
            return err.set(PG_ERR_INVALID_ARGUMENT, "quantize: unsupported target type");
        }
    }
    const int64_t blck = ggml_blck_size(type);
    if (n_cols % blck != 0) {
        return err.set(PG_ERR_INVALID_ARGUMENT, std::string("quantize: a row of ") + std::to_string(n_cols) + " is not a multiple of " +
                                                    ggml_type_name(type) + "'s block size " + std::to_string(blck));
    }
    if (type == GGML_TYPE_F32) {
        const size_t bytes = (size_t) n_rows * n_cols * sizeof(float);
        size_t       at    = out.size();
        out.resize(at + bytes);
        memcpy(out.data() + at, src, bytes);
        return true;
    }
    const size_t row_bytes = ggml_row_size(type, n_cols);
    size_t       at        = out.size();
    out.resize(at + row_bytes * n_rows);
    if (ggml_quantize_requires_imatrix(type)) return err.set(PG_ERR_INVALID_ARGUMENT, "quantize: type needs an importance matrix");
    ggml_quantize_init(type);
    size_t written = ggml_quantize_chunk(type, src, out.data() + at, 0, n_rows, n_cols, nullptr);
    if (written != row_bytes * n_rows) return err.set(PG_ERR_INTERNAL, "quantize: unexpected output size");
    return true;
}
