#include "pg_generate.h"
#include "pg_log.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

struct sampler_deleter {
    void operator()(llama_sampler * s) const { llama_sampler_free(s); }
};

struct batch_guard {
    llama_batch b;
    ~batch_guard() { llama_batch_free(b); }
};

// Length of the longest prefix of s that ends on a UTF-8 character boundary.
size_t utf8_complete(const std::string & s) {
    size_t n = s.size();
    size_t i = n;
    // Look back at most 3 bytes for the start of a trailing multi-byte character.
    for (size_t k = 0; k < 4 && i > 0; ++k) {
        unsigned char c = (unsigned char) s[i - 1];
        if ((c & 0xC0) == 0x80) {
            --i;
            continue;
        }
        size_t need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
        return (n - (i - 1) >= need) ? n : i - 1;
    }
    return n;
}

bool build_sampler(const pg_text_model & m, const pg_sampling & s, std::unique_ptr<llama_sampler, sampler_deleter> & out, pg_error & err) {
    llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    out.reset(chain);
    if (!s.grammar.empty()) {
        pg_log_clear();
        llama_sampler * g = llama_sampler_init_grammar(m.vocab, s.grammar.c_str(), "root");
        if (!g) {
            std::string why = pg_log_last_errors();
            return err.set(PG_ERR_INVALID_ARGUMENT, "grammar: cannot parse the GBNF grammar" + (why.empty() ? "" : " (" + why + ")"));
        }
        llama_sampler_chain_add(chain, g);
    }
    if (s.repeat_penalty != 1.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_penalties(m.n_vocab, s.repeat_last_n, s.repeat_penalty, 0.0f, 0.0f));
    }
    if (s.temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return true;
    }
    if (s.top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(s.top_k));
    if (s.top_p < 1.0f) llama_sampler_chain_add(chain, llama_sampler_init_top_p(s.top_p, 1));
    if (s.min_p > 0.0f) llama_sampler_chain_add(chain, llama_sampler_init_min_p(s.min_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(s.temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(s.seed));
    return true;
}

const char * decode_error(int rc) {
    switch (rc) {
        case 1: return "no room in the context (KV cache full)";
        case 2: return "aborted";
        case -1: return "invalid batch";
        default: return "llama_decode failed";
    }
}

}  // namespace

bool pg_generate(pg_text_model & m, const pg_generate_params & p, const pg_token_fn & on_token, const std::atomic<bool> * abort,
                 pg_generate_result & out, pg_error & err) {
    const int n_text   = (int) p.prefix_ids.size();
    const int n_prefix = p.n_image + n_text;
    if (n_text < 1) return err.set(PG_ERR_INVALID_ARGUMENT, "the prompt has no tokens");
    if (p.max_tokens < 0) return err.set(PG_ERR_INVALID_ARGUMENT, "maxTokens must be >= 0");
    for (int32_t id : p.forced) {
        if (id < 0 || id >= m.n_vocab) return err.set(PG_ERR_INVALID_ARGUMENT, "forced token " + std::to_string(id) + " is out of range");
    }
    // llama.cpp aborts the process when a non-causal batch exceeds n_ubatch: check before decoding.
    if (n_prefix + 1 > m.n_ctx || n_prefix > (int) llama_n_ubatch(m.ctx)) {
        return err.set(PG_ERR_CONTEXT_FULL, "the prompt takes " + std::to_string(n_prefix) + " tokens (" + std::to_string(p.n_image) +
                                                " image + " + std::to_string(n_text) + " text), more than the context of " +
                                                std::to_string(m.n_ctx) + " allows; shorten it or load with a larger contextSize");
    }
    const auto t_start = clock_type::now();
    std::unique_ptr<llama_sampler, sampler_deleter> sampler;
    if (!build_sampler(m, p.sampling, sampler, err)) return false;

    out = pg_generate_result();
    out.prompt_tokens = n_prefix;
    const int D       = m.n_embd;

    // Prefix rows: the image rows divided by sqrt(D) (gemma multiplies every input row by sqrt(D)),
    // then the embedding table rows of BOS + prompt + "\n".
    batch_guard bg{ llama_batch_init(n_prefix, D, 1) };
    llama_batch & b = bg.b;
    const float   inv = 1.0f / std::sqrt((float) D);
    for (int i = 0; i < p.n_image; ++i) {
        for (int j = 0; j < D; ++j) b.embd[(size_t) i * D + j] = p.image_embd[(size_t) i * D + j] * inv;
    }
    if (!pg_text_embed_rows(m, p.prefix_ids.data(), n_text, b.embd + (size_t) p.n_image * D, err)) return false;
    for (int i = 0; i < n_prefix; ++i) {
        b.pos[i]       = i;
        b.n_seq_id[i]  = 1;
        b.seq_id[i][0] = 0;
        b.logits[i]    = i == n_prefix - 1;
    }
    b.n_tokens = n_prefix;

    // llama.cpp's abort callback (set at context creation) reads the caller's flag through
    // m.abort_source, so an abort also interrupts a long prefill inside llama_decode.
    struct abort_scope {
        pg_text_model & m;
        ~abort_scope() { m.abort_source.store(nullptr); }
    } scope{ m };
    m.abort_source.store(abort);
    auto aborted = [&] { return abort && abort->load(std::memory_order_relaxed); };

    llama_memory_clear(llama_get_memory(m.ctx), true);
    auto t0 = clock_type::now();
    if (aborted()) {
        out.reason = PG_STOP_ABORT;
        return true;
    }
    llama_set_causal_attn(m.ctx, false);
    int rc = llama_decode(m.ctx, b);
    llama_set_causal_attn(m.ctx, true);
    out.prefill_ms = ms_since(t0);
    if (rc == 2 || aborted()) {
        out.reason = PG_STOP_ABORT;
        return true;
    }
    if (rc != 0) {
        return err.set(PG_ERR_BACKEND, std::string("prefill failed: ") + decode_error(rc));
    }

    // Sampling without a per-token vocabulary-sized allocation: plain argmax for greedy decoding,
    // else one candidate buffer reused for every step.
    const bool               plain_greedy = p.sampling.temperature <= 0.0f && p.sampling.grammar.empty() && p.sampling.repeat_penalty == 1.0f;
    std::vector<llama_token_data> cand(plain_greedy ? 0 : (size_t) m.n_vocab);
    auto sample = [&](const float * logits) -> llama_token {
        if (plain_greedy) {
            int best = 0;
            for (int i = 1; i < m.n_vocab; ++i) {
                if (logits[i] > logits[best]) best = i;
            }
            return best;
        }
        for (int i = 0; i < m.n_vocab; ++i) cand[i] = { i, logits[i], 0.0f };
        llama_token_data_array arr = { cand.data(), cand.size(), -1, false };
        llama_sampler_apply(sampler.get(), &arr);
        llama_token id = arr.selected >= 0 && arr.selected < (int64_t) arr.size ? arr.data[arr.selected].id : cand[0].id;
        llama_sampler_accept(sampler.get(), id);
        return id;
    };

    size_t max_stop = 0;
    for (const auto & s : p.stop) max_stop = std::max(max_stop, s.size());
    size_t emitted = 0;  // bytes of out.text already passed to on_token
    auto   t1      = clock_type::now();
    int    pos     = n_prefix;
    while (true) {
        if ((int) out.tokens.size() >= p.max_tokens) {
            out.reason = PG_STOP_MAX_TOKENS;
            break;
        }
        if (p.want_logits) {
            const float * lg = llama_get_logits_ith(m.ctx, -1);
            out.logits.insert(out.logits.end(), lg, lg + m.n_vocab);
        }
        llama_token id;
        if (out.tokens.size() < p.forced.size()) {
            id = p.forced[out.tokens.size()];
            if (!plain_greedy) llama_sampler_accept(sampler.get(), id);  // keep penalties/grammar state in step
        } else {
            id = sample(llama_get_logits_ith(m.ctx, -1));
        }
        if (llama_vocab_is_eog(m.vocab, id)) {
            if (p.want_logits) out.logits.resize(out.tokens.size() * (size_t) m.n_vocab);
            out.reason = PG_STOP_EOS;
            break;
        }
        if (out.tokens.empty()) out.first_token_ms = ms_since(t_start);
        out.tokens.push_back(id);
        const std::string piece = pg_text_piece(m, id);
        out.text += piece;

        bool   stopped = false;
        size_t ready   = utf8_complete(out.text);
        if (max_stop) {
            for (const auto & s : p.stop) {
                size_t from = out.text.size() > piece.size() + s.size() ? out.text.size() - piece.size() - s.size() : 0;
                size_t at   = s.empty() ? std::string::npos : out.text.find(s, from);
                if (at != std::string::npos) {
                    out.text.resize(at);
                    stopped = true;
                    ready   = utf8_complete(out.text);
                    break;
                }
            }
            // Hold back what could still turn out to be the start of a stop string.
            if (!stopped) ready = ready > max_stop - 1 ? utf8_complete(out.text.substr(0, ready - (max_stop - 1))) : 0;
        }
        if (on_token) on_token(id, piece, ready > emitted ? out.text.substr(emitted, ready - emitted) : std::string());
        if (ready > emitted) emitted = ready;
        if (stopped) {
            out.reason = PG_STOP_STRING;
            break;
        }
        if (aborted()) {
            out.reason = PG_STOP_ABORT;
            break;
        }
        if ((int) out.tokens.size() >= p.max_tokens) {  // no need to decode a token nobody will extend
            out.reason = PG_STOP_MAX_TOKENS;
            break;
        }
        if (pos + 1 > m.n_ctx) {  // context full: stop as if maxTokens were reached
            out.reason = PG_STOP_MAX_TOKENS;
            break;
        }
        llama_token tok = id;
        rc = llama_decode(m.ctx, llama_batch_get_one(&tok, 1));
        ++pos;
        if (rc == 2 || aborted()) {
            out.reason = PG_STOP_ABORT;
            break;
        }
        if (rc != 0) {
            return err.set(PG_ERR_BACKEND, std::string("decoding failed: ") + decode_error(rc));
        }
    }
    out.decode_ms = ms_since(t1);
    // Whatever was held back (a partial stop-string match, an incomplete character) ends the text.
    if (on_token && out.text.size() > emitted) on_token(-1, std::string(), out.text.substr(emitted));
    return true;
}
