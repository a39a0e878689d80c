#include "pg_generate.h"
#include "pg_log.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

const char * const PG_STOP_REASON_NAMES[4] = { "eos", "maxTokens", "stop", "abort" };
const char * const PG_PHASE_NAMES[3]       = { "encode", "prefill", "decode" };

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

struct batch_guard {
    llama_batch b;
    ~batch_guard() { llama_batch_free(b); }
};

const char * decode_error(int rc) {
    switch (rc) {
        case 1: return "no room in the context (KV cache full)";
        case 2: return "aborted";
        case -1: return "invalid batch";
        default: return "llama_decode failed";
    }
}

// Everything llama.cpp would otherwise meet with an assertion, checked before any decoding.
bool check_params(const pg_text_model & m, const pg_generate_params & p, pg_error & err) {
    const int n_text   = (int) p.prefix_ids.size();
    const int n_prefix = p.n_image + n_text;
    if (n_text < 1) return err.set(PG_ERR_INVALID_ARGUMENT, "the prompt has no tokens");
    if (p.decoding.max_tokens < 0) return err.set(PG_ERR_INVALID_ARGUMENT, "maxTokens must be >= 0");
    for (int32_t id : p.decoding.forced) {
        if (id < 0 || id >= m.n_vocab) return err.set(PG_ERR_INVALID_ARGUMENT, "forced token " + std::to_string(id) + " is out of range");
    }
    // llama.cpp aborts the process when a non-causal batch exceeds n_ubatch.
    if (n_prefix + 1 > m.n_ctx || n_prefix > (int) llama_n_ubatch(m.ctx.get())) {
        return err.set(PG_ERR_CONTEXT_FULL, "the prompt takes " + std::to_string(n_prefix) + " tokens (" + std::to_string(p.n_image) + " image + " +
                                                std::to_string(n_text) + " text), more than the context of " + std::to_string(m.n_ctx) +
                                                " allows; shorten it or load with a larger contextSize");
    }
    return true;
}

// The prefix rows: the image rows divided by sqrt(D) (gemma multiplies every input row by sqrt(D)),
// then the embedding table rows of BOS + prompt + "\n"; all attended bidirectionally.
bool fill_prefix(const pg_text_model & m, const pg_generate_params & p, llama_batch & b, pg_error & err) {
    const int   D        = m.n_embd;
    const int   n_prefix = p.n_image + (int) p.prefix_ids.size();
    const float inv      = 1.0f / std::sqrt((float) D);
    for (size_t i = 0; i < (size_t) p.n_image * D; ++i) b.embd[i] = p.image_embd[i] * inv;
    if (!pg_text_embed_rows(m, p.prefix_ids.data(), p.prefix_ids.size(), b.embd + (size_t) p.n_image * D, err)) return false;
    for (int i = 0; i < n_prefix; ++i) {
        b.pos[i]       = i;
        b.n_seq_id[i]  = 1;
        b.seq_id[i][0] = 0;
        b.logits[i]    = i == n_prefix - 1;
    }
    b.n_tokens = n_prefix;
    return true;
}

// llama.cpp's sampler chain, or plain argmax for greedy decoding (no per-token vocabulary-sized
// work beyond one pass over the logits).
struct token_sampler {
    llama_sampler_ptr             chain;
    bool                          plain_greedy = true;
    int                           n_vocab      = 0;
    std::vector<llama_token_data> candidates;  // reused for every step

    bool init(const pg_text_model & m, const pg_sampling & s, pg_error & err) {
        n_vocab      = m.n_vocab;
        plain_greedy = s.temperature <= 0.0f && s.grammar.empty() && s.repeat_penalty == 1.0f;
        if (plain_greedy) return true;
        candidates.resize((size_t) m.n_vocab);
        chain.reset(llama_sampler_chain_init(llama_sampler_chain_default_params()));
        if (!s.grammar.empty()) {
            pg_log_clear();
            llama_sampler * g = llama_sampler_init_grammar(m.vocab, s.grammar.c_str(), "root");
            if (!g) {
                std::string why = pg_log_last_errors();
                return err.set(PG_ERR_INVALID_ARGUMENT, "grammar: cannot parse the GBNF grammar" + (why.empty() ? "" : " (" + why + ")"));
            }
            llama_sampler_chain_add(chain.get(), g);
        }
        if (s.repeat_penalty != 1.0f) {
            llama_sampler_chain_add(chain.get(), llama_sampler_init_penalties(m.n_vocab, s.repeat_last_n, s.repeat_penalty, 0.0f, 0.0f));
        }
        if (s.temperature <= 0.0f) {
            llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
            return true;
        }
        if (s.top_k > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(s.top_k));
        if (s.top_p < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(s.top_p, 1));
        if (s.min_p > 0.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(s.min_p, 1));
        llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(s.temperature));
        llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(s.seed));
        return true;
    }

    llama_token pick(const float * logits) {
        if (plain_greedy) return (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
        for (int i = 0; i < n_vocab; ++i) candidates[i] = { i, logits[i], 0.0f };
        llama_token_data_array arr = { candidates.data(), candidates.size(), -1, false };
        llama_sampler_apply(chain.get(), &arr);
        const llama_token id = arr.selected >= 0 && arr.selected < (int64_t) arr.size ? arr.data[arr.selected].id : candidates[0].id;
        llama_sampler_accept(chain.get(), id);
        return id;
    }

    // A token chosen by someone else (teacher forcing): keeps penalties and grammar state in step.
    void accept(llama_token id) {
        if (chain) llama_sampler_accept(chain.get(), id);
    }
};

// Length of the longest prefix of s that ends on a UTF-8 character boundary.
size_t utf8_complete(const std::string & s, size_t n) {
    size_t i = n;
    // Look back at most 3 bytes for the start of a trailing multi-byte character.
    for (size_t k = 0; k < 4 && i > 0; ++k) {
        const unsigned char c = (unsigned char) s[i - 1];
        if ((c & 0xC0) == 0x80) {
            --i;
            continue;
        }
        const size_t need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
        return n - (i - 1) >= need ? n : i - 1;
    }
    return n;
}

// The generated text as callers see it: cut at the first stop string, released in whole UTF-8
// characters, and held back while its end could still become a stop string.
struct text_filter {
    const std::vector<std::string> & stop;
    size_t                           max_stop = 0;
    size_t                           emitted  = 0;  // bytes of the text already released

    explicit text_filter(const std::vector<std::string> & s) : stop(s) {
        for (const auto & x : stop) max_stop = std::max(max_stop, x.size());
    }

    // `text` just grew by `piece`: cuts it at a stop string (returns true) and sets `ready` to the
    // newly releasable part.
    bool push(std::string & text, size_t piece_size, std::string & ready) {
        bool   stopped = false;
        size_t end     = utf8_complete(text, text.size());
        for (const auto & s : stop) {
            const size_t from = text.size() > piece_size + s.size() ? text.size() - piece_size - s.size() : 0;
            const size_t at   = s.empty() ? std::string::npos : text.find(s, from);
            if (at != std::string::npos) {
                text.resize(at);
                stopped = true;
                end     = utf8_complete(text, text.size());
                break;
            }
        }
        if (!stopped && max_stop) end = end > max_stop - 1 ? utf8_complete(text, end - (max_stop - 1)) : 0;
        ready.clear();
        if (end > emitted) {
            ready.assign(text, emitted, end - emitted);
            emitted = end;
        }
        return stopped;
    }

    // Whatever was held back (a partial stop-string match, an incomplete character).
    std::string rest(const std::string & text) const { return text.size() > emitted ? text.substr(emitted) : std::string(); }
};

}  // namespace

bool pg_generate(pg_text_model & m, const pg_generate_params & p, const pg_generate_callbacks & cb, const std::atomic<bool> * abort,
                 pg_generate_result & out, pg_error & err) {
    if (!check_params(m, p, err)) return false;
    const auto          t_start = clock_type::now();
    const pg_decoding & dec     = p.decoding;
    token_sampler       sampler;
    if (!sampler.init(m, dec.sampling, err)) return false;

    const int   n_prefix = p.n_image + (int) p.prefix_ids.size();
    batch_guard bg{ llama_batch_init(n_prefix, m.n_embd, 1) };
    if (!fill_prefix(m, p, bg.b, err)) return false;
    out.prompt_tokens = n_prefix;

    // llama.cpp's abort callback (set at context creation) reads the caller's flag through
    // m.abort_source, so an abort also interrupts a long prefill inside llama_decode.
    struct abort_scope {
        pg_text_model & m;
        ~abort_scope() { m.abort_source.store(nullptr); }
    } scope{ m };
    m.abort_source.store(abort);
    auto aborted = [&] { return abort && abort->load(std::memory_order_relaxed); };

    llama_context * ctx  = m.ctx.get();
    auto            stop = [&](pg_phase phase) {
        out.reason     = PG_STOP_ABORT;
        out.aborted_in = phase;
        return true;
    };
    llama_memory_clear(llama_get_memory(ctx), true);
    if (aborted()) return stop(PG_PHASE_PREFILL);
    if (cb.on_phase) cb.on_phase(PG_PHASE_PREFILL);
    auto t0 = clock_type::now();
    llama_set_causal_attn(ctx, dec.causal_prefix);
    int rc = llama_decode(ctx, bg.b);
    llama_set_causal_attn(ctx, true);
    out.prefill_ms = ms_since(t0);
    if (rc == 2) return stop(PG_PHASE_PREFILL);  // llama.cpp's abort callback cut the prefix short
    if (aborted()) return stop(PG_PHASE_DECODE);
    if (rc != 0) return err.set(PG_ERR_BACKEND, std::string("prefill failed: ") + decode_error(rc));
    if (cb.on_phase) cb.on_phase(PG_PHASE_DECODE);

    text_filter filter(dec.stop);
    std::string ready;
    auto        t1  = clock_type::now();
    int         pos = n_prefix;
    out.reason      = PG_STOP_MAX_TOKENS;
    while ((int) out.tokens.size() < dec.max_tokens) {
        const float * logits = llama_get_logits_ith(ctx, -1);
        if (dec.want_logits) out.logits.insert(out.logits.end(), logits, logits + m.n_vocab);
        const size_t step = out.tokens.size();
        llama_token  id;
        if (step < dec.forced.size()) {
            id = dec.forced[step];
            sampler.accept(id);
        } else {
            id = sampler.pick(logits);
        }
        if (llama_vocab_is_eog(m.vocab, id)) {
            if (dec.want_logits) out.logits.resize(step * (size_t) m.n_vocab);
            out.reason = PG_STOP_EOS;
            break;
        }
        if (step == 0) out.first_token_ms = ms_since(t_start);
        out.tokens.push_back(id);
        const std::string piece = pg_text_piece(m, id);
        out.text += piece;
        const bool stopped = filter.push(out.text, piece.size(), ready);
        if (cb.on_token) cb.on_token(id, piece, ready);
        if (stopped) {
            out.reason = PG_STOP_STRING;
            break;
        }
        if (aborted()) {
            stop(PG_PHASE_DECODE);
            break;
        }
        // No need to decode a token nobody will extend; a full context stops as maxTokens would.
        if ((int) out.tokens.size() >= dec.max_tokens || pos + 1 > m.n_ctx) break;
        llama_token tok = id;
        rc              = llama_decode(ctx, llama_batch_get_one(&tok, 1));
        ++pos;
        if (rc == 2 || aborted()) {
            stop(PG_PHASE_DECODE);
            break;
        }
        if (rc != 0) return err.set(PG_ERR_BACKEND, std::string("decoding failed: ") + decode_error(rc));
    }
    out.decode_ms          = ms_since(t1);
    const std::string rest = filter.rest(out.text);
    if (cb.on_token && !rest.empty() && out.reason != PG_STOP_ABORT) cb.on_token(-1, std::string(), rest);
    return true;
}
