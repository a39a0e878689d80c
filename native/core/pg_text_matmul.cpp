#include "pg_text_matmul.h"
#include "pg_backend.h"
#include "pg_gemm_q4.h"

#include "ggml-backend-impl.h"
#include "ggml-cpp.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace {

struct scope_state {
    bool      active = false;
    pg_q8_isa isa    = PG_Q8_AVX2;
    int       packed = 0;
};
// Per loading thread: llama.cpp places and packs a model's weights on the thread that loads it.
thread_local scope_state t_scope;

constexpr size_t ALIGNMENT = 64;

// The form of the weights being placed: the scope's, else (an adapter's tensors) the widest.
pg_q8_isa current_isa() {
    return t_scope.active ? t_scope.isa : pg_q8_widest_isa();
}

// How a weight type is packed for our products.
struct packing {
    size_t (*panel_bytes)(int64_t k);
    void (*pack)(const void * rows, int64_t n_rows, int64_t k, void * out);
    void (*unpack)(const void * packed, int64_t n_rows, int64_t k, void * rows);
};

// A weight we pack: one matrix of whole 32-value blocks and whole 16-row panels, q8_0 in every form,
// q4_0 in the AVX-512 VNNI one (pg_gemm_q4.h); nullptr for anything else.
const packing * packing_for(const ggml_tensor * t, pg_q8_isa isa) {
    static const packing q8 = { pg_q8_packed_panel_bytes, pg_q8_pack, pg_q8_unpack };
    static const packing q4 = { pg_q4_packed_panel_bytes, pg_q4_pack, pg_q4_unpack };
    if (t->ne[0] % 32 != 0 || t->ne[1] % 16 != 0 || t->ne[2] != 1 || t->ne[3] != 1) return nullptr;
    if (t->type == GGML_TYPE_Q8_0) return &q8;
    if (t->type == GGML_TYPE_Q4_0 && isa == PG_Q8_AVX512_VNNI && pg_q4_gemm_available()) return &q4;
    return nullptr;
}

size_t packed_size(const packing & p, const ggml_tensor * t) {
    return p.panel_bytes(t->ne[0]) * (size_t) (t->ne[1] / 16);
}

// ---- the weights' buffer type: packed q8_0 matrices, everything else (LoRA tensors) as ggml lays it out

struct weights_buffer {
    void *    data;
    pg_q8_isa isa;  // the form the products of its weights run in
};

// The weights' memory. On Linux, anonymous pages with transparent huge pages asked for: packing
// writes every byte of a fresh buffer, and faulting it in 4 KiB at a time cost more than the packing.
void * weights_alloc(size_t size) {
#ifdef __linux__
    void * p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    madvise(p, size, MADV_HUGEPAGE);
    return p;
#else
    return ::operator new(size, std::align_val_t(ALIGNMENT), std::nothrow);
#endif
}

void weights_free(void * p, size_t size) {
#ifdef __linux__
    munmap(p, size);
#else
    (void) size;
    ::operator delete(p, std::align_val_t(ALIGNMENT));
#endif
}

void buffer_free(ggml_backend_buffer_t buffer) {
    auto * b = (weights_buffer *) buffer->context;
    weights_free(b->data, buffer->size);
    delete b;
}

void * buffer_base(ggml_backend_buffer_t buffer) {
    return ((weights_buffer *) buffer->context)->data;
}

void buffer_memset(ggml_backend_buffer_t, ggml_tensor * t, uint8_t value, size_t offset, size_t size) {
    memset((char *) t->data + offset, value, size);
}

pg_q8_isa buffer_isa(ggml_backend_buffer_t buffer) {
    // The loader's dummy buffers (size 0, when it asks where a weight may go) have no context.
    return buffer->context ? ((weights_buffer *) buffer->context)->isa : current_isa();
}

void buffer_set(ggml_backend_buffer_t buffer, ggml_tensor * t, const void * data, size_t offset, size_t size) {
    const packing * pk = packing_for(t, buffer_isa(buffer));
    if (!pk) {
        memcpy((char *) t->data + offset, data, size);
        return;
    }
    // llama.cpp's loader writes a weight whole, and in ggml's layout. Packed by all cores (a 2B
    // model has 2 GB of these weights).
    GGML_ASSERT(offset == 0 && size == ggml_nbytes(t));
    const int64_t            panels  = t->ne[1] / 16;
    const int64_t            threads = std::max<int64_t>(1, std::min<int64_t>(std::thread::hardware_concurrency(), panels / 64));
    const size_t             in_row = ggml_row_size(t->type, t->ne[0]), out_panel = pk->panel_bytes(t->ne[0]);
    std::vector<std::thread> workers;
    for (int64_t i = 0; i < threads; ++i) {
        const int64_t p0 = panels * i / threads, p1 = panels * (i + 1) / threads;
        auto pack = [=] { pk->pack((const uint8_t *) data + p0 * 16 * in_row, (p1 - p0) * 16, t->ne[0], (uint8_t *) t->data + p0 * out_panel); };
        if (i + 1 < threads)
            workers.emplace_back(pack);
        else
            pack();
    }
    for (std::thread & w : workers) w.join();
    ++t_scope.packed;
}

void buffer_get(ggml_backend_buffer_t buffer, const ggml_tensor * t, void * data, size_t offset, size_t size) {
    const packing * pk = packing_for(t, buffer_isa(buffer));
    if (!pk) {
        memcpy(data, (const char *) t->data + offset, size);
        return;
    }
    // Only when a product with this weight could not run here and ggml copies it for the CPU backend.
    std::vector<uint8_t> rows(ggml_nbytes(t));
    pk->unpack(t->data, t->ne[1], t->ne[0], rows.data());
    memcpy(data, rows.data() + offset, size);
}

void buffer_clear(ggml_backend_buffer_t buffer, uint8_t value) {
    memset(buffer_base(buffer), value, buffer->size);
}

const ggml_backend_buffer_i weights_buffer_iface = {
    /* .free_buffer   = */ buffer_free,
    /* .get_base      = */ buffer_base,
    /* .init_tensor   = */ nullptr,
    /* .memset_tensor = */ buffer_memset,
    /* .set_tensor    = */ buffer_set,
    /* .get_tensor    = */ buffer_get,
    /* .set_tensor_2d = */ nullptr,
    /* .get_tensor_2d = */ nullptr,
    /* .cpy_tensor    = */ nullptr,
    /* .clear         = */ buffer_clear,
    /* .reset         = */ nullptr,
};

const char * buft_name(ggml_backend_buffer_type_t) {
    return "PG_INT8";
}

ggml_backend_buffer_t buft_alloc(ggml_backend_buffer_type_t buft, size_t size) {
    void * data = weights_alloc(size);
    if (!data) return nullptr;
    // An adapter's tensors land here too (llama.cpp puts them beside their base weight), outside any scope.
    return ggml_backend_buffer_init(buft, weights_buffer_iface, new weights_buffer{ data, current_isa() }, size);
}

size_t buft_alignment(ggml_backend_buffer_type_t) {
    return ALIGNMENT;
}

size_t buft_alloc_size(ggml_backend_buffer_type_t, const ggml_tensor * t) {
    const packing * pk = packing_for(t, current_isa());
    return pk ? packed_size(*pk, t) : ggml_nbytes(t);
}

ggml_backend_buffer_type weights_buft = {
    /* .iface   = */ { buft_name, buft_alloc, buft_alignment, nullptr, buft_alloc_size, /* .is_host = */ nullptr },
    /* .device  = */ nullptr,  // set at registration
    /* .context = */ nullptr,
};

bool in_weights_buffer(const ggml_tensor * t) {
    return t && t->buffer && t->buffer->buft == &weights_buft;
}

// A product we compute: a packed weight times f32 activations in plain rows, f32 out.
bool our_product(const ggml_tensor * op) {
    const ggml_tensor * w = op->src[0];
    const ggml_tensor * x = op->src[1];
    return op->op == GGML_OP_MUL_MAT && in_weights_buffer(w) && packing_for(w, buffer_isa(w->buffer)) && x && x->type == GGML_TYPE_F32 &&
           ggml_is_contiguous(x) && op->type == GGML_TYPE_F32 && ggml_is_contiguous(op);
}

ggml_backend_dev_t cpu_device() {
    return ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
}

// ---- the backend: our products, and whatever else reads the weights' buffer on a CPU backend of its own

struct matmul_backend {
    ggml_backend_ptr     cpu;
    std::vector<uint8_t> graph_mem;  // for the small graphs of each call: no allocation per token
    std::vector<uint8_t> xq;         // quantized activations, grown to the largest batch seen
    std::vector<float>   zeros;      // the products' bias (the text model's linears have none)
};

constexpr int GRAPH_NODES  = 64;
constexpr int MAX_PRODUCTS = (GRAPH_NODES - 2) / 2;

ggml_context * small_context(matmul_backend & b) {
    const size_t need = ggml_tensor_overhead() * (GRAPH_NODES * 3) + ggml_graph_overhead_custom(GRAPH_NODES, false);
    if (b.graph_mem.size() < need) b.graph_mem.resize(need);
    return ggml_init({ b.graph_mem.size(), b.graph_mem.data(), /* no_alloc */ true });
}

// Products [i0, i1) of the split, all reading the same activations with weights of one type: the
// activations quantized once.
ggml_status run_products(matmul_backend & b, ggml_cgraph * cgraph, int i0, int i1) {
    const ggml_tensor * x0  = ggml_graph_node(cgraph, i0)->src[1];
    const bool          q4  = ggml_graph_node(cgraph, i0)->src[0]->type == GGML_TYPE_Q4_0;
    const pg_q8_isa     isa = buffer_isa(ggml_graph_node(cgraph, i0)->src[0]->buffer);
    ggml_context_ptr    ctx(small_context(b));
    ggml_tensor *       x = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, x0->ne[0], ggml_nrows(x0));
    x->data               = x0->data;
    ggml_tensor * xq      = q4 ? pg_q4_quantize(ctx.get(), x) : pg_q8_quantize(ctx.get(), x, isa);
    if (b.xq.size() < ggml_nbytes(xq)) b.xq.resize(ggml_nbytes(xq));
    xq->data = b.xq.data();
    // The zero bias for the widest product, before any pointer into it is taken.
    for (int i = i0; i < i1; ++i) b.zeros.resize(std::max(b.zeros.size(), (size_t) ggml_graph_node(cgraph, i)->src[0]->ne[1]), 0.0f);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx.get(), GRAPH_NODES, false);
    ggml_build_forward_expand(gf, xq);
    for (int i = i0; i < i1; ++i) {
        ggml_tensor * node = ggml_graph_node(cgraph, i);
        const int64_t k = node->src[0]->ne[0], n = node->src[0]->ne[1];
        ggml_tensor * w =
            ggml_new_tensor_2d(ctx.get(), GGML_TYPE_I8, (int64_t) (q4 ? pg_q4_packed_panel_bytes(k) : pg_q8_packed_panel_bytes(k)), n / 16);
        w->data         = node->src[0]->data;
        ggml_tensor * y = nullptr;
        if (q4) {
            y = pg_q4_linear(ctx.get(), w, xq);
        } else {
            ggml_tensor * z = ggml_new_tensor_1d(ctx.get(), GGML_TYPE_F32, n);
            z->data         = b.zeros.data();
            y               = pg_q8_linear(ctx.get(), &w, &z, 1, xq, PG_Q8_BIAS, nullptr, isa);
        }
        y->data = node->data;
        ggml_build_forward_expand(gf, y);
    }
    return ggml_backend_graph_compute(b.cpu.get(), gf);
}

// Nodes [i0, i1) of the split that are not our products (a LoRA adapter's), on the CPU backend.
ggml_status run_on_cpu(matmul_backend & b, ggml_cgraph * cgraph, int i0, int i1) {
    ggml_context_ptr ctx(small_context(b));
    ggml_cgraph *    gf = ggml_new_graph_custom(ctx.get(), GRAPH_NODES, false);
    for (int i = i0; i < i1; ++i) ggml_graph_add_node(gf, ggml_graph_node(cgraph, i));
    return ggml_backend_graph_compute(b.cpu.get(), gf);
}

ggml_status backend_graph_compute(ggml_backend_t backend, ggml_cgraph * cgraph) {
    matmul_backend & b = *(matmul_backend *) backend->context;
    const int        n = ggml_graph_n_nodes(cgraph);
    for (int i = 0; i < n;) {
        int j = i + 1;
        if (our_product(ggml_graph_node(cgraph, i))) {
            // The products that follow on the same activations (q, k and v; gate and up), up to what one small graph holds.
            const ggml_tensor * x = ggml_graph_node(cgraph, i)->src[1];
            // (An adapter's q8_0 tensors may be packed for another form than the model's: its activations differ.)
            const ggml_tensor * w0   = ggml_graph_node(cgraph, i)->src[0];
            auto                same = [&](const ggml_tensor * node) {
                return our_product(node) && node->src[1] == x && node->src[0]->type == w0->type &&
                       buffer_isa(node->src[0]->buffer) == buffer_isa(w0->buffer);
            };
            // Each product adds a node and two leaves (weight, bias) to the small graph.
            while (j < n && j - i < MAX_PRODUCTS && same(ggml_graph_node(cgraph, j))) ++j;
            if (ggml_status s = run_products(b, cgraph, i, j); s != GGML_STATUS_SUCCESS) return s;
        } else {
            while (j < n && j - i < GRAPH_NODES && !our_product(ggml_graph_node(cgraph, j))) ++j;
            if (ggml_status s = run_on_cpu(b, cgraph, i, j); s != GGML_STATUS_SUCCESS) return s;
        }
        i = j;
    }
    return GGML_STATUS_SUCCESS;
}

const char * backend_name(ggml_backend_t) {
    return "PG_INT8";
}

void backend_free(ggml_backend_t backend) {
    delete (matmul_backend *) backend->context;
    delete backend;
}

ggml_guid_t backend_guid() {
    static ggml_guid guid = { 0x70, 0x67, 0x2d, 0x69, 0x6e, 0x74, 0x38, 0x2d, 0x71, 0x38, 0x5f, 0x30, 0x2d, 0x6c, 0x6d, 0x01 };
    return &guid;
}

const ggml_backend_i backend_iface = {
    /* .get_name            = */ backend_name,
    /* .free                = */ backend_free,
    /* .set_tensor_async    = */ nullptr,
    /* .get_tensor_async    = */ nullptr,
    /* .set_tensor_2d_async = */ nullptr,
    /* .get_tensor_2d_async = */ nullptr,
    /* .cpy_tensor_async    = */ nullptr,
    /* .synchronize         = */ nullptr,
    /* .graph_plan_create   = */ nullptr,
    /* .graph_plan_free     = */ nullptr,
    /* .graph_plan_update   = */ nullptr,
    /* .graph_plan_compute  = */ nullptr,
    /* .graph_compute       = */ backend_graph_compute,
    /* .event_record        = */ nullptr,
    /* .event_wait          = */ nullptr,
    /* .graph_optimize      = */ nullptr,
};

void set_n_threads(ggml_backend_t backend, int n_threads) {
    pg_backend_set_threads(((matmul_backend *) backend->context)->cpu.get(), n_threads);
}

void set_abort_callback(ggml_backend_t backend, ggml_abort_callback cb, void * data) {
    pg_backend_set_abort_callback(((matmul_backend *) backend->context)->cpu.get(), cb, data);
}

// ---- two devices: one llama.cpp's loader sees (where weights go), one the backend runs as
//
// llama.cpp gives a backend's intermediate results its device's buffer type: were that ours, every
// product's output would be copied out for the CPU backend. The backend's device therefore hands out
// the CPU's buffer type, and only the registered device (which the loader asks) hands out ours.

const char * dev_name(ggml_backend_dev_t) {
    return "PG_INT8";
}

const char * dev_description(ggml_backend_dev_t) {
    return "paligemma-node's int8 products for q8_0 weights";
}

void dev_memory(ggml_backend_dev_t, size_t * free, size_t * total) {
    *free  = 0;
    *total = 0;
}

enum ggml_backend_dev_type dev_type(ggml_backend_dev_t) {
    return GGML_BACKEND_DEVICE_TYPE_ACCEL;
}

void dev_props(ggml_backend_dev_t dev, ggml_backend_dev_props * props) {
    props->name        = dev_name(dev);
    props->description = dev_description(dev);
    props->type        = GGML_BACKEND_DEVICE_TYPE_ACCEL;
    props->device_id   = nullptr;
    dev_memory(dev, &props->memory_free, &props->memory_total);
    props->caps = {};
}

ggml_backend_dev_t runtime_device();

ggml_backend_t dev_init_backend(ggml_backend_dev_t, const char *) {
    ggml_backend_ptr cpu(ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr));
    if (!cpu) return nullptr;
    auto * b = new matmul_backend{};
    b->cpu   = std::move(cpu);
    return new ggml_backend{ backend_guid(), backend_iface, runtime_device(), b };
}

ggml_backend_buffer_type_t weights_get_buft(ggml_backend_dev_t) {
    return &weights_buft;
}

ggml_backend_buffer_type_t runtime_get_buft(ggml_backend_dev_t) {
    return ggml_backend_dev_buffer_type(cpu_device());
}

// The loader asks this of each weight, with the weight in a dummy buffer of ours: only the q8_0
// matrices of products, and only for models loaded inside a scope.
bool weights_supports_op(ggml_backend_dev_t, const ggml_tensor * op) {
    // Only the layers' matrices: Gemma's output product reads the token embedding (tied weights), which
    // stays in ggml's layout for the embedding lookup on the CPU; packing it would keep a second copy.
    return t_scope.active && our_product(op) && !strncmp(op->src[0]->name, "blk.", 4);
}

// At run time: our products, and a LoRA adapter's operations on its tensors in our buffer.
bool runtime_supports_op(ggml_backend_dev_t, const ggml_tensor * op) {
    if (our_product(op)) return true;
    // The weights themselves (the scheduler asks of each tensor in a buffer which backend holds it).
    if (op->op == GGML_OP_NONE) return in_weights_buffer(op);
    for (int i = 0; i < GGML_MAX_SRC; ++i) {
        const ggml_tensor * t = op->src[i];
        if (in_weights_buffer(t)) return !packing_for(t, buffer_isa(t->buffer)) && ggml_backend_dev_supports_op(cpu_device(), op);
    }
    return false;
}

bool dev_supports_buft(ggml_backend_dev_t, ggml_backend_buffer_type_t buft) {
    return buft == &weights_buft || ggml_backend_buft_is_host(buft);
}

ggml_backend_device_i device_iface(bool runtime) {
    return {
        /* .get_name             = */ dev_name,
        /* .get_description      = */ dev_description,
        /* .get_memory           = */ dev_memory,
        /* .get_type             = */ dev_type,
        /* .get_props            = */ dev_props,
        /* .init_backend         = */ dev_init_backend,
        /* .get_buffer_type      = */ runtime ? runtime_get_buft : weights_get_buft,
        /* .get_host_buffer_type = */ nullptr,
        /* .buffer_from_host_ptr = */ nullptr,
        /* .supports_op          = */ runtime ? runtime_supports_op : weights_supports_op,
        /* .supports_buft        = */ dev_supports_buft,
        /* .offload_op           = */ nullptr,
        /* .event_new            = */ nullptr,
        /* .event_free           = */ nullptr,
        /* .event_synchronize    = */ nullptr,
    };
}

const char * reg_name(ggml_backend_reg_t) {
    return "PG_INT8";
}

size_t reg_device_count(ggml_backend_reg_t) {
    return 1;
}

ggml_backend_dev_t reg_device(ggml_backend_reg_t, size_t index);

void * reg_proc_address(ggml_backend_reg_t, const char * name) {
    if (!strcmp(name, "ggml_backend_set_n_threads")) return (void *) set_n_threads;
    if (!strcmp(name, "ggml_backend_set_abort_callback")) return (void *) set_abort_callback;
    return nullptr;
}

ggml_backend_reg    matmul_reg  = { GGML_BACKEND_API_VERSION, { reg_name, reg_device_count, reg_device, reg_proc_address }, nullptr };
ggml_backend_device weights_dev = { device_iface(false), &matmul_reg, nullptr };
ggml_backend_device runtime_dev = { device_iface(true), &matmul_reg, nullptr };

ggml_backend_dev_t reg_device(ggml_backend_reg_t, size_t index) {
    return index == 0 ? &weights_dev : nullptr;
}

ggml_backend_dev_t runtime_device() {
    return &runtime_dev;
}

}  // namespace

bool pg_text_matmul_register() {
    static const bool registered = [] {
        if (!pg_q8_gemm_available(PG_Q8_AVX2) || !cpu_device()) return false;
        weights_buft.device = &weights_dev;
        std::lock_guard<std::mutex> lock(pg_backend_registry_mutex());
        ggml_backend_register(&matmul_reg);
        return true;
    }();
    return registered;
}

pg_text_matmul_scope::pg_text_matmul_scope(pg_q8_isa isa) {
    t_scope = { true, isa, 0 };
}

pg_text_matmul_scope::~pg_text_matmul_scope() {
    t_scope.active = false;
}

int pg_text_matmul_scope::packed() const {
    return t_scope.packed;
}
