// A bounded least-recently-used store of image embeddings, by bytes held, so that another question
// about the same image skips the vision tower. Keys come from the caller (a SHA-256 of the image
// bytes or pixels, plus whatever else changes the embedding). Not thread-safe: pg_model uses it
// from the compute thread only.
#pragma once
#include <cstddef>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

struct pg_image_embedding {
    std::vector<float> data;  // tokens x dim, row major: the projector output before the merge scaling
    int                tokens = 0;
    int                dim    = 0;
};

using pg_image_embedding_ptr = std::shared_ptr<const pg_image_embedding>;

class pg_embed_cache {
  public:
    explicit pg_embed_cache(size_t max_bytes = 0) : max_bytes_(max_bytes) {}

    // The entry for `key`, now the most recently used; nullptr when absent.
    pg_image_embedding_ptr get(const std::string & key);
    // Keeps `e` under `key`, dropping the least recently used entries beyond the limit. An entry
    // larger than the whole limit is not kept.
    void put(const std::string & key, pg_image_embedding_ptr e);

    size_t bytes() const { return bytes_; }
    size_t size() const { return map_.size(); }

  private:
    using entry = std::pair<std::string, pg_image_embedding_ptr>;
    static size_t size_of(const pg_image_embedding & e) { return e.data.size() * sizeof(float); }

    size_t                                                      max_bytes_;
    size_t                                                      bytes_ = 0;
    std::list<entry>                                            order_;  // most recently used first
    std::unordered_map<std::string, std::list<entry>::iterator> map_;
};
