#include "pg_embed_cache.h"

pg_image_embedding_ptr pg_embed_cache::get(const std::string & key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
}

void pg_embed_cache::put(const std::string & key, pg_image_embedding_ptr e) {
    if (!e || key.empty() || size_of(*e) > max_bytes_ || map_.count(key)) return;
    order_.emplace_front(key, std::move(e));
    map_[key] = order_.begin();
    bytes_ += size_of(*order_.front().second);
    while (bytes_ > max_bytes_) {
        const entry & last = order_.back();
        bytes_ -= size_of(*last.second);
        map_.erase(last.first);
        order_.pop_back();
    }
}
