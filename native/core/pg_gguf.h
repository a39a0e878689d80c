// Opening GGUF files for inspection through ggml's own reader, with errors that name the file.
#pragma once
#include "pg_error.h"

#include "gguf.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

struct pg_gguf_deleter {
    void operator()(gguf_context * ctx) const { gguf_free(ctx); }
};
using pg_gguf_ptr = std::unique_ptr<gguf_context, pg_gguf_deleter>;

struct pg_gguf_file {
    std::string path;
    uint64_t    file_size = 0;
    pg_gguf_ptr ctx;  // metadata and tensor infos only: no tensor data is read
};

// Reads the header, metadata and tensor infos of `path`. On failure returns false with a message
// that starts with the path and says what is wrong (missing, empty, truncated, not GGUF, ...).
bool pg_gguf_open(const std::string & path, pg_gguf_file & out, pg_error & err);

// Checks every tensor's data range lies inside the file (ggml checks the header, not the data size).
bool pg_gguf_check_data_bounds(const pg_gguf_file & f, pg_error & err);

// Seek to a 64-bit offset (fseek takes a long, which is 32 bits on Windows).
inline int pg_fseek64(FILE * f, uint64_t offset) {
#if defined(_WIN32)
    return _fseeki64(f, (long long) offset, SEEK_SET);
#else
    return fseeko(f, (off_t) offset, SEEK_SET);
#endif
}
