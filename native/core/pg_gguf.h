// Opening GGUF files for inspection through ggml's own reader, with errors that name the file, and
// the metadata and tensor checks the vision and text loaders share.
#pragma once
#include "pg_error.h"

#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf.h"

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <vector>

struct pg_gguf_file {
    std::string      path;
    uint64_t         file_size = 0;
    gguf_context_ptr ctx;  // metadata and tensor infos only: no tensor data is read
};

// Reads the header, metadata and tensor infos of `path`. On failure returns false with a message
// that starts with the path and says what is wrong (missing, empty, truncated, not GGUF, ...).
bool pg_gguf_open(const std::string & path, pg_gguf_file & out, pg_error & err);

// Checks every tensor's data range lies inside the file (ggml checks the header, not the data size).
bool pg_gguf_check_data_bounds(const pg_gguf_file & f, pg_error & err);

// An integer value of any integer type; false when the key is missing or not an integer.
bool pg_gguf_get_int(const gguf_context * g, const char * key, int64_t & out);

// A string value; "" when the key is missing or not a string.
std::string pg_gguf_get_string(const gguf_context * g, const char * key);

// How a tensor is used, which decides the types it may have.
enum pg_tensor_use {
    PG_TENSOR_MATRIX,  // a matrix product's weight: f32, f16, bf16 or a quantized type, whole blocks per row
    PG_TENSOR_F32,     // norms, biases, embeddings added to activations: f32 only
};

// Checks a tensor's shape (ggml order; missing trailing dimensions are 1) and type for its use.
// Messages start with `path` and name the tensor.
bool pg_check_tensor(const std::string & path, const char * name, ggml_type type, const int64_t * ne, std::initializer_list<int64_t> shape,
                     pg_tensor_use use, pg_error & err);

// Tensor i's data as floats (f32, f16 or bf16 in the file), checked to be finite: a message naming
// the file and tensor otherwise. `fp` is the file, open for reading.
bool pg_gguf_read_floats(const pg_gguf_file & f, FILE * fp, int64_t i, std::vector<float> & out, pg_error & err);

// Seek to a 64-bit offset (fseek takes a long, which is 32 bits on Windows).
inline int pg_fseek64(FILE * f, uint64_t offset) {
#if defined(_WIN32)
    return _fseeki64(f, (long long) offset, SEEK_SET);
#else
    return fseeko(f, (off_t) offset, SEEK_SET);
#endif
}
