// Error reporting for the C++ core: functions return false and fill a pg_error; nothing throws.
#pragma once
#include <string>

// Stable codes, mirrored by PaliGemmaError.code on the JavaScript side.
enum pg_error_code {
    PG_OK = 0,
    PG_ERR_INVALID_ARGUMENT,  // a caller-supplied value is out of range
    PG_ERR_FILE_NOT_FOUND,    // a path does not exist or cannot be opened
    PG_ERR_INVALID_FILE,      // a file exists but is not what it should be (corrupt GGUF, wrong model)
    PG_ERR_INVALID_IMAGE,     // image bytes cannot be decoded or are too large
    PG_ERR_CONTEXT_FULL,      // a prompt or generation does not fit the context
    PG_ERR_ABORTED,           // the caller asked to stop
    PG_ERR_OUT_OF_MEMORY,     // an allocation failed
    PG_ERR_BACKEND,           // ggml/llama.cpp reported a failure
    PG_ERR_INTERNAL,          // a bug: should not happen
};

const char * pg_error_code_name(pg_error_code code);

struct pg_error {
    pg_error_code code = PG_OK;
    std::string   message;

    bool set(pg_error_code c, std::string msg) {
        code    = c;
        message = std::move(msg);
        return false;
    }
    bool ok() const { return code == PG_OK; }
};
