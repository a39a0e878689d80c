#include "pg_gguf.h"
#include "pg_log.h"

#include <sys/stat.h>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace {

const uint32_t GGUF_MAGIC_LE = 0x46554747;  // "GGUF"

}  // namespace

bool pg_gguf_open(const std::string & path, pg_gguf_file & out, pg_error & err) {
    pg_log_init();
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
        return err.set(PG_ERR_FILE_NOT_FOUND, path + ": " + strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        return err.set(PG_ERR_INVALID_FILE, path + ": not a regular file");
    }
    if (st.st_size == 0) {
        return err.set(PG_ERR_INVALID_FILE, path + ": file is empty, expected a GGUF file");
    }
    FILE * f = fopen(path.c_str(), "rb");
    if (!f) {
        return err.set(PG_ERR_FILE_NOT_FOUND, path + ": cannot open: " + strerror(errno));
    }
    uint32_t magic = 0;
    size_t   got   = fread(&magic, 1, sizeof(magic), f);
    fclose(f);
    if (got < sizeof(magic) || magic != GGUF_MAGIC_LE) {
        return err.set(PG_ERR_INVALID_FILE, path + ": not a GGUF file (bad magic)");
    }

    pg_log_clear();
    gguf_init_params params = { /*no_alloc =*/true, /*ctx =*/nullptr };
    gguf_context *   ctx    = gguf_init_from_file(path.c_str(), params);
    if (!ctx) {
        std::string why = pg_log_last_errors();
        return err.set(PG_ERR_INVALID_FILE, path + ": invalid or truncated GGUF file" + (why.empty() ? "" : " (" + why + ")"));
    }
    out.path      = path;
    out.file_size = (uint64_t) st.st_size;
    out.ctx.reset(ctx);
    return true;
}

bool pg_gguf_check_data_bounds(const pg_gguf_file & f, pg_error & err) {
    const gguf_context * ctx  = f.ctx.get();
    const uint64_t       base = gguf_get_data_offset(ctx);
    const int64_t        n    = gguf_get_n_tensors(ctx);
    for (int64_t i = 0; i < n; ++i) {
        uint64_t off  = gguf_get_tensor_offset(ctx, i);
        uint64_t size = gguf_get_tensor_size(ctx, i);
        if (base + off < base || base + off + size < base + off || base + off + size > f.file_size) {
            char buf[256];
            snprintf(buf, sizeof(buf), ": tensor '%s' lies beyond the end of the file (needs %llu bytes, file has %llu): truncated?",
                     gguf_get_tensor_name(ctx, i), (unsigned long long) (base + off + size), (unsigned long long) f.file_size);
            return err.set(PG_ERR_INVALID_FILE, f.path + buf);
        }
    }
    return true;
}

bool pg_gguf_get_int(const gguf_context * g, const char * key, int64_t & out) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0) return false;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8: out = gguf_get_val_u8(g, id); return true;
        case GGUF_TYPE_INT8: out = gguf_get_val_i8(g, id); return true;
        case GGUF_TYPE_UINT16: out = gguf_get_val_u16(g, id); return true;
        case GGUF_TYPE_INT16: out = gguf_get_val_i16(g, id); return true;
        case GGUF_TYPE_UINT32: out = gguf_get_val_u32(g, id); return true;
        case GGUF_TYPE_INT32: out = gguf_get_val_i32(g, id); return true;
        case GGUF_TYPE_UINT64: out = (int64_t) std::min<uint64_t>(gguf_get_val_u64(g, id), INT64_MAX); return true;
        case GGUF_TYPE_INT64: out = gguf_get_val_i64(g, id); return true;
        default: return false;
    }
}

std::string pg_gguf_get_string(const gguf_context * g, const char * key) {
    const int64_t id = gguf_find_key(g, key);
    return id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_STRING ? gguf_get_val_str(g, id) : "";
}

bool pg_check_tensor(const std::string & path, const char * name, ggml_type type, const int64_t * ne, std::initializer_list<int64_t> shape,
                     pg_tensor_use use, pg_error & err) {
    auto dim = [&](int d) { return d < (int) shape.size() ? shape.begin()[d] : 1; };
    for (int d = 0; d < GGML_MAX_DIMS; ++d) {
        if (ne[d] != dim(d)) {
            char buf[192];
            snprintf(buf, sizeof(buf), ": tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]", name, (long long) ne[0],
                     (long long) ne[1], (long long) ne[2], (long long) ne[3], (long long) dim(0), (long long) dim(1), (long long) dim(2),
                     (long long) dim(3));
            return err.set(PG_ERR_INVALID_FILE, path + buf);
        }
    }
    if (use == PG_TENSOR_F32) {
        if (type != GGML_TYPE_F32) return err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' must be f32, is " + ggml_type_name(type));
        return true;
    }
    const bool usable = type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 || ggml_get_type_traits(type)->is_quantized;
    if (!usable) return err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' has an unusable type " + ggml_type_name(type));
    if (ne[0] % ggml_blck_size(type) != 0) {
        return err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' rows do not divide into " + ggml_type_name(type) + " blocks");
    }
    return true;
}

bool pg_gguf_read_floats(const pg_gguf_file & f, FILE * fp, int64_t i, std::vector<float> & out, pg_error & err) {
    const gguf_context * g    = f.ctx.get();
    const char *         name = gguf_get_tensor_name(g, i);
    const ggml_type      type = gguf_get_tensor_type(g, i);
    const size_t         size = gguf_get_tensor_size(g, i);
    if (type != GGML_TYPE_F32 && type != GGML_TYPE_F16 && type != GGML_TYPE_BF16) {
        return err.set(PG_ERR_INVALID_FILE, f.path + ": tensor '" + name + "' is " + ggml_type_name(type) + ", expected f32, f16 or bf16");
    }
    const size_t         n = size / ggml_type_size(type);
    std::vector<uint8_t> raw(size);
    if (pg_fseek64(fp, gguf_get_data_offset(g) + gguf_get_tensor_offset(g, i)) != 0 || fread(raw.data(), 1, size, fp) != size) {
        return err.set(PG_ERR_INVALID_FILE, f.path + ": tensor '" + name + "' is truncated");
    }
    out.resize(n);
    if (type == GGML_TYPE_F32)
        memcpy(out.data(), raw.data(), size);
    else if (type == GGML_TYPE_F16)
        ggml_fp16_to_fp32_row((const ggml_fp16_t *) raw.data(), out.data(), (int64_t) n);
    else
        ggml_bf16_to_fp32_row((const ggml_bf16_t *) raw.data(), out.data(), (int64_t) n);
    for (size_t k = 0; k < n; ++k) {
        if (!std::isfinite(out[k])) return err.set(PG_ERR_INVALID_FILE, f.path + ": tensor '" + name + "' holds NaN or infinite values");
    }
    return true;
}
