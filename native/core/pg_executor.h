// One long-lived thread for all heavy ggml work in the process (vision encoding, prefill, decoding).
//
// Why: ggml's CPU backend parallelizes with OpenMP, and OpenMP keeps one thread team per calling
// thread. If encodes and decodes arrive on different (libuv pool) threads, several teams coexist,
// libgomp sees more threads than cores and stops spinning at barriers, and token-by-token decoding
// slows down by a fifth or more. Funnelling the work through one thread keeps one team.
#pragma once
#include <functional>

// Runs fn on the compute thread and waits for it to finish; an exception fn throws is rethrown
// here. Calls from the compute thread itself run inline.
void pg_run_on_compute_thread(const std::function<void()> & fn);
