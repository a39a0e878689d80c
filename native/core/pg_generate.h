// One PaliGemma generation: the prefix (image rows + BOS + prompt + "\n") decoded as ONE non-causal
// batch, then causal token-by-token decoding with llama.cpp's sampler chain. pg_model builds the
// prefix and calls this; other callers use pg_model_generate.
#pragma once
#include "pg_error.h"
#include "pg_text.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct pg_sampling {
    float       temperature    = 0.0f;  // 0: greedy (argmax), the paper's decoding
    int         top_k          = 0;     // 0: off
    float       top_p          = 1.0f;  // 1: off
    float       min_p          = 0.0f;  // 0: off
    uint32_t    seed           = 0xFFFFFFFF;
    float       repeat_penalty = 1.0f;  // 1: off
    int         repeat_last_n  = 64;
    std::string grammar;  // GBNF, root rule "root"; empty: none
};

// What to generate once the prefix is known; shared by pg_model_generate's request.
struct pg_decoding {
    int                      max_tokens = 32;
    pg_sampling              sampling;
    std::vector<std::string> stop;                 // stop strings, excluded from the text
    bool                     want_logits = false;  // keep every step's full-vocabulary logits
    // Teacher forcing: step i emits forced[i] whatever the sampler says (to score a given answer, or
    // to compare every step's logits with a reference past a near-tie).
    std::vector<int32_t> forced;
    // For speed comparisons only: decode the prefix causally, as a text model's prompt is (llama.cpp's
    // attention then skips the masked half). PaliGemma's answers are wrong this way.
    bool causal_prefix = false;
};

struct pg_generate_params {
    const float *        image_embd = nullptr;  // n_image rows of n_embd: projector output, unscaled
    int                  n_image    = 0;
    std::vector<int32_t> prefix_ids;  // BOS + prompt + "\n"
    pg_decoding          decoding;
};

enum pg_stop_reason { PG_STOP_EOS, PG_STOP_MAX_TOKENS, PG_STOP_STRING, PG_STOP_ABORT };

// The parts of a generation, in order. An abort reports the one it cut short: PG_PHASE_ENCODE only
// when the vision graph itself stopped, PG_PHASE_PREFILL only when llama_decode of the prefix did;
// an abort seen between parts names the part that was about to start.
enum pg_phase { PG_PHASE_ENCODE, PG_PHASE_PREFILL, PG_PHASE_DECODE };

// Names as the JavaScript side spells them, indexed by the enums.
extern const char * const PG_STOP_REASON_NAMES[4];
extern const char * const PG_PHASE_NAMES[3];

struct pg_generate_result {
    std::vector<int32_t> tokens;
    std::string          text;
    pg_stop_reason       reason = PG_STOP_MAX_TOKENS;
    std::vector<float>   logits;  // tokens.size() (or one more on abort) x n_vocab when asked for
    int                  prompt_tokens = 0;
    double               preprocess_ms = 0, encode_ms = 0;  // the image's share (0 when it came from the cache)
    bool                 image_cached = false;
    pg_phase             aborted_in   = PG_PHASE_ENCODE;  // with PG_STOP_ABORT: the part the abort cut short
    double               prefill_ms = 0, decode_ms = 0;
    double               first_token_ms = 0;  // from the start of the call (image work included) to the first token
};

// Called after each token with its id, its piece, and the newly completed text (whole UTF-8
// characters only, held back while it could still be the start of a stop string). A last call with
// id -1 hands over whatever was held back.
using pg_token_fn = std::function<void(int32_t id, const std::string & piece, const std::string & text)>;
// Called as each part of the generation starts.
using pg_phase_fn = std::function<void(pg_phase phase)>;

struct pg_generate_callbacks {
    pg_token_fn on_token;
    pg_phase_fn on_phase;
};

bool pg_generate(pg_text_model & m, const pg_generate_params & p, const pg_generate_callbacks & cb, const std::atomic<bool> * abort,
                 pg_generate_result & out, pg_error & err);
