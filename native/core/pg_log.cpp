#include "pg_log.h"
#include "pg_error.h"

#include "ggml.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

const char * pg_error_code_name(pg_error_code code) {
    switch (code) {
        case PG_OK: return "OK";
        case PG_ERR_INVALID_ARGUMENT: return "ERR_INVALID_ARGUMENT";
        case PG_ERR_FILE_NOT_FOUND: return "ERR_FILE_NOT_FOUND";
        case PG_ERR_INVALID_FILE: return "ERR_INVALID_FILE";
        case PG_ERR_INVALID_IMAGE: return "ERR_INVALID_IMAGE";
        case PG_ERR_CONTEXT_FULL: return "ERR_CONTEXT_FULL";
        case PG_ERR_ABORTED: return "ERR_ABORTED";
        case PG_ERR_OUT_OF_MEMORY: return "ERR_OUT_OF_MEMORY";
        case PG_ERR_BACKEND: return "ERR_BACKEND";
        case PG_ERR_INTERNAL: return "ERR_INTERNAL";
    }
    return "ERR_INTERNAL";
}

namespace {

thread_local std::string t_errors;
thread_local std::string t_partial;  // ggml may log one line in several calls
int                      g_stderr_level = GGML_LOG_LEVEL_NONE + 100;

int parse_level(const char * s) {
    if (!s) return GGML_LOG_LEVEL_NONE + 100;
    if (!strcmp(s, "debug")) return GGML_LOG_LEVEL_DEBUG;
    if (!strcmp(s, "info")) return GGML_LOG_LEVEL_INFO;
    if (!strcmp(s, "warn")) return GGML_LOG_LEVEL_WARN;
    if (!strcmp(s, "error")) return GGML_LOG_LEVEL_ERROR;
    return GGML_LOG_LEVEL_NONE + 100;
}

void on_log(ggml_log_level level, const char * text, void *) {
    static int last_level = GGML_LOG_LEVEL_INFO;
    if (level == GGML_LOG_LEVEL_CONT) level = (ggml_log_level) last_level;
    last_level = level;
    if ((int) level >= g_stderr_level) {
        fputs(text, stderr);
    }
    if (level != GGML_LOG_LEVEL_ERROR && level != GGML_LOG_LEVEL_WARN) return;
    t_partial += text;
    size_t nl;
    while ((nl = t_partial.find('\n')) != std::string::npos) {
        std::string line = t_partial.substr(0, nl);
        t_partial.erase(0, nl + 1);
        if (line.empty()) continue;
        if (!t_errors.empty()) t_errors += "; ";
        if (t_errors.size() < 2000) t_errors += line;
    }
}

}  // namespace

void pg_log_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_stderr_level = parse_level(getenv("PALIGEMMA_LOG"));
        ggml_log_set(on_log, nullptr);
        llama_log_set(on_log, nullptr);
    });
}

void pg_log_clear() {
    t_errors.clear();
    t_partial.clear();
}

std::string pg_log_last_errors() {
    std::string out = t_errors;
    if (!t_partial.empty()) {
        if (!out.empty()) out += "; ";
        out += t_partial;
    }
    return out;
}
