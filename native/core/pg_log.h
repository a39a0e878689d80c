// Routes ggml and llama.cpp log output: kept quiet by default, with the latest error lines remembered
// per thread so that a failed call can say what ggml said.
#pragma once
#include <string>

// Installs the log callbacks once per process. PALIGEMMA_LOG=debug|info|warn|error|none picks what
// reaches stderr (default: none).
void pg_log_init();

// Forget earlier messages on this thread (call before an operation whose failure you will report).
void pg_log_clear();

// The warning/error lines ggml logged on this thread since pg_log_clear(), joined with "; ".
std::string pg_log_last_errors();
