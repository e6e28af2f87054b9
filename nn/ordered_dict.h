#pragma once
// An insertion-ordered string-keyed map (torch::OrderedDict): parameters, buffers, submodules and
// state dicts keep the order in which they were registered, as PyTorch's do.
#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"

namespace kiln::nn {

template <class V>
class OrderedDict {
 public:
  using Item = std::pair<std::string, V>;
  using iterator = typename std::vector<Item>::iterator;
  using const_iterator = typename std::vector<Item>::const_iterator;

  OrderedDict() = default;
  OrderedDict(std::initializer_list<Item> items) {
    for (const auto& it : items) insert(it.first, it.second);
  }
  // From a std::map / std::unordered_map (e.g. tensors loaded from a file), in its iteration order.
  template <class Map>
  requires(!std::is_same_v<std::remove_cvref_t<Map>, OrderedDict> && requires(const Map& m) {
    { m.begin()->first } -> std::convertible_to<std::string>;
    { m.begin()->second } -> std::convertible_to<V>;
  }) OrderedDict(const Map& map) {  // NOLINT: implicit, so load_state_dict(loaded_map) works
    for (const auto& [key, value] : map) insert(key, value);
  }

  // To a std::map (sorted by key), e.g. for kiln::save(model->state_dict(), path).
  operator std::map<std::string, V>() const {  // NOLINT: implicit on purpose
    return std::map<std::string, V>(items_.begin(), items_.end());
  }

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  bool contains(const std::string& key) const { return index_.count(key) != 0; }

  // Adds a new key; an existing key is an error (a second registration is almost always a bug).
  V& insert(const std::string& key, V value) {
    KILN_CHECK(!contains(key), "[OrderedDict] key '", key, "' already exists");
    index_.emplace(key, items_.size());
    items_.emplace_back(key, std::move(value));
    return items_.back().second;
  }
  V& insert_or_assign(const std::string& key, V value) {
    if (V* v = find(key)) return *v = std::move(value);
    return insert(key, std::move(value));
  }
  bool erase(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(it->second));
    reindex();
    return true;
  }
  void clear() {
    items_.clear();
    index_.clear();
  }

  V* find(const std::string& key) {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &items_[it->second].second;
  }
  const V* find(const std::string& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &items_[it->second].second;
  }
  V& at(const std::string& key) {
    V* v = find(key);
    KILN_CHECK(v != nullptr, "[OrderedDict] key '", key, "' not found");
    return *v;
  }
  const V& at(const std::string& key) const {
    const V* v = find(key);
    KILN_CHECK(v != nullptr, "[OrderedDict] key '", key, "' not found");
    return *v;
  }
  V& operator[](const std::string& key) { return at(key); }
  const V& operator[](const std::string& key) const { return at(key); }
  // Positional access, in insertion order.
  Item& operator[](size_t i) { return items_.at(i); }
  const Item& operator[](size_t i) const { return items_.at(i); }

  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    k.reserve(items_.size());
    for (const auto& it : items_) k.push_back(it.first);
    return k;
  }
  std::vector<V> values() const {
    std::vector<V> v;
    v.reserve(items_.size());
    for (const auto& it : items_) v.push_back(it.second);
    return v;
  }
  const std::vector<Item>& items() const { return items_; }

  iterator begin() { return items_.begin(); }
  iterator end() { return items_.end(); }
  const_iterator begin() const { return items_.begin(); }
  const_iterator end() const { return items_.end(); }

 private:
  void reindex() {
    index_.clear();
    for (size_t i = 0; i < items_.size(); ++i) index_.emplace(items_[i].first, i);
  }

  std::vector<Item> items_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace kiln::nn
