#include "pg_model.h"
#include "pg_system.h"

#include <cstring>

namespace {

bool pick_device(const std::string & gpu, ggml_backend_dev_t & out, pg_error & err) {
    out = nullptr;
    if (gpu == "cpu") return true;
    const char * want = gpu == "cuda" ? "CUDA" : gpu == "metal" ? "MTL" : gpu == "vulkan" ? "Vulkan" : nullptr;
    if (gpu != "auto" && !want) return err.set(PG_ERR_INVALID_ARGUMENT, "gpu: unknown value '" + gpu + "' (auto, cpu, cuda, metal, vulkan)");
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev  = ggml_backend_dev_get(i);
        auto               type = ggml_backend_dev_type(dev);
        if (type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU) continue;
        const char * reg = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        if (!want || (reg && (strcmp(reg, want) == 0 || (gpu == "metal" && strcmp(reg, "Metal") == 0)))) {
            out = dev;
            return true;
        }
    }
    if (gpu == "auto") return true;
    return err.set(PG_ERR_BACKEND, "gpu: '" + gpu + "' was asked for, but this build of paligemma-node has no " + gpu +
                                       " device (build with `npm run build -- --CDGGML_" +
                                       (gpu == "cuda" ? std::string("CUDA") : gpu == "metal" ? std::string("METAL") : std::string("VULKAN")) +
                                       "=ON`, or use gpu: 'cpu')");
}

}  // namespace

bool pg_model_load(const pg_model_params & params, pg_model & m, const pg_progress_fn & progress, pg_error & err) {
    ggml_backend_dev_t dev = nullptr;
    if (!pick_device(params.gpu, dev, err)) return false;
    m.threads = params.threads > 0 ? params.threads : pg_physical_cores();
    m.backend = dev ? ggml_backend_dev_name(dev) : "CPU";

    // The vision file is small next to the text model: give it a tenth of the progress bar.
    pg_vision_params vp;
    vp.device     = dev;
    vp.n_threads  = m.threads;
    // flashAttention 'off' (the precise setting) applies to the vision tower's attention too.
    vp.flash_attn = params.flash_attn != LLAMA_FLASH_ATTN_TYPE_DISABLED;
    pg_progress_fn vision_progress = [&](float f) { return !progress || progress(0.1f * f); };
    if (!pg_vision_load(params.mmproj_path, vp, m.vision, vision_progress, err)) return false;

    pg_text_params tp;
    if (dev) {
        tp.devices.push_back(dev);
        tp.n_gpu_layers = params.gpu_layers < 0 ? 999 : params.gpu_layers;
    }
    tp.n_ctx      = params.n_ctx;
    tp.n_threads  = m.threads;
    tp.flash_attn = params.flash_attn;
    tp.kv_type    = params.kv_type;
    tp.min_ctx    = m.vision.hp.image_tokens;
    tp.use_mmap   = params.mmap < 0 ? dev != nullptr : params.mmap != 0;
    pg_progress_fn text_progress = [&](float f) { return !progress || progress(0.1f + 0.9f * f); };
    if (!pg_text_load(params.model_path, tp, m.text, text_progress, err)) return false;

    // The two files must come from one checkpoint.
    const pg_vision_hparams & hp = m.vision.hp;
    const std::string pair = params.model_path + " and " + params.mmproj_path;
    if (hp.proj_dim != m.text.n_embd) {
        return err.set(PG_ERR_INVALID_FILE, pair + " do not belong together: the projector outputs " + std::to_string(hp.proj_dim) +
                                                " values per image token, the text model is " + std::to_string(m.text.n_embd) + " wide");
    }
    if (hp.text_vocab_size != m.text.n_vocab) {
        return err.set(PG_ERR_INVALID_FILE, pair + " do not belong together: vocabulary sizes differ (" + std::to_string(hp.text_vocab_size) +
                                                " vs " + std::to_string(m.text.n_vocab) + ")");
    }
    const char * image_piece = hp.image_token_id < m.text.n_vocab ? llama_vocab_get_text(m.text.vocab, hp.image_token_id) : nullptr;
    if (!image_piece || strcmp(image_piece, "<image>") != 0) {
        return err.set(PG_ERR_INVALID_FILE, pair + " do not belong together: token " + std::to_string(hp.image_token_id) +
                                                " of the text model is not <image>");
    }
    const bool v2 = hp.family == "paligemma2";
    if (v2 != (m.text.arch == "gemma2")) {
        return err.set(PG_ERR_INVALID_FILE, pair + " do not belong together: a " + hp.family + " vision file with a " + m.text.arch + " text model");
    }
    return true;
}

bool pg_model_prefix_ids(pg_model & m, const std::string & prompt, std::vector<int32_t> & out, pg_error & err) {
    std::vector<int32_t> ids;
    if (!pg_text_tokenize(m.text, prompt + "\n", false, ids, err)) return false;
    out.clear();
    out.push_back(llama_vocab_bos(m.text.vocab));
    out.insert(out.end(), ids.begin(), ids.end());
    return true;
}
