#include "pg_gguf.h"
#include "pg_log.h"

#include "ggml.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>

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
    gguf_init_params params = { /*no_alloc =*/ true, /*ctx =*/ nullptr };
    gguf_context * ctx = gguf_init_from_file(path.c_str(), params);
    if (!ctx) {
        std::string why = pg_log_last_errors();
        return err.set(PG_ERR_INVALID_FILE,
                       path + ": invalid or truncated GGUF file" + (why.empty() ? "" : " (" + why + ")"));
    }
    out.path      = path;
    out.file_size = (uint64_t) st.st_size;
    out.ctx.reset(ctx);
    return true;
}

bool pg_gguf_check_data_bounds(const pg_gguf_file & f, pg_error & err) {
    const gguf_context * ctx = f.ctx.get();
    const uint64_t base = gguf_get_data_offset(ctx);
    const int64_t  n    = gguf_get_n_tensors(ctx);
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
