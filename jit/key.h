#pragma once
// Canonical keys of captured graphs. A key hashes everything a compiled plan depends on:
// nodes, attributes, input geometry, which storages outlive the graph, and the call's context
// (grad mode, training flags, non-tensor arguments). Dims and scalars that were seen to vary
// are hashed as symbols instead of values, so one entry serves all their values.
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "jit/graph.h"
#include "jit/interpreter.h"

namespace kiln::jit {

// The facts of a graph that automatic dynamic may turn into symbols.
struct GraphFacts {
  std::vector<Shape> input_sizes;             // per graph input
  std::vector<int64_t> input_offsets;         // per graph input (a batch narrowed from a big tensor)
  std::vector<std::pair<int, Scalar>> fills;  // (node, value) of each fill_ of a 0-dim tensor
};
GraphFacts graph_facts(const Graph& g);

struct KeySpec {
  std::set<std::pair<int, int64_t>> dynamic_dims;  // (graph input, dim)
  std::set<int> dynamic_fills;                     // node indices
  std::set<int> dynamic_offsets;                   // graph inputs whose storage offset varies
  std::vector<int64_t> symbols;                    // current values of the dynamic dims
  bool everything_dynamic = false;                 // the skeleton: all sizes and scalars symbolic
  static KeySpec all_dynamic() {
    KeySpec k;
    k.everything_dynamic = true;
    return k;
  }
};

uint64_t graph_key(const Graph& g, const KeySpec& spec, bool grad_mode, const std::vector<char>& training,
                   const std::vector<std::string>& facts);

// "node 4: mul(%2, %3) : f32[8] vs add(%2, %3) : f32[8]" — for recompile reasons.
std::string first_difference(const Graph& a, const Graph& b);

// (seed, offset) of each random node, in program order.
Plan::RngKeys rng_keys(const Graph& g);

}  // namespace kiln::jit
