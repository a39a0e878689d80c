#include "pg_text_inspect.h"
#include "pg_backend.h"
#include "pg_log.h"

#include "llama-cpp.h"

bool pg_text_inspect(const std::string & path, const std::vector<std::string> & texts, bool vocab_only, pg_text_inspection & out, pg_error & err) {
    pg_backend_init_once();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers       = 0;
    mp.vocab_only         = vocab_only;
    pg_log_clear();
    llama_model_ptr model(llama_model_load_from_file(path.c_str(), mp));
    if (!model) {
        std::string why = pg_log_last_errors();
        return err.set(PG_ERR_INVALID_FILE, path + ": llama.cpp could not load the model" + (why.empty() ? "" : " (" + why + ")"));
    }
    char buf[256];
    llama_model_desc(model.get(), buf, sizeof(buf));
    out.description = buf;
    if (llama_model_meta_val_str(model.get(), "general.architecture", buf, sizeof(buf)) >= 0) out.architecture = buf;
    const llama_vocab * vocab = llama_model_get_vocab(model.get());
    out.n_vocab               = llama_vocab_n_tokens(vocab);
    if (!vocab_only) {
        out.n_params    = llama_model_n_params(model.get());
        out.size_bytes  = llama_model_size(model.get());
        out.n_embd      = llama_model_n_embd(model.get());
        out.n_layer     = llama_model_n_layer(model.get());
        out.n_head      = llama_model_n_head(model.get());
        out.n_head_kv   = llama_model_n_head_kv(model.get());
        out.n_ctx_train = llama_model_n_ctx_train(model.get());
        out.n_swa       = llama_model_n_swa(model.get());
    }
    for (const auto & text : texts) {
        std::vector<int32_t> ids(text.size() + 8);
        int32_t              n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                                                /*add_special*/ false, /*parse_special*/ false);
        if (n < 0) {
            ids.resize(-n);
            n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(), false, false);
        }
        if (n < 0) return err.set(PG_ERR_INTERNAL, "tokenization failed");
        ids.resize(n);
        out.tokens.push_back(std::move(ids));
    }
    return true;
}
