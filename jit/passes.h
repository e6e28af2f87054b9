#pragma once
// Graph -> Graph passes, called in a visible pipeline (run_pipeline) with a dump hook after
// each. Every pass keeps the program order of effects: a Mutate node is never moved across a
// node that reads or writes the same storage, and writes to external or output storages are
// never removed.
#include <functional>
#include <string_view>
#include <vector>

#include "jit/graph.h"

namespace kiln::jit {

// Removes nodes whose outputs are never read and whose writes nobody can observe.
Graph eliminate_dead_code(Graph g);
// Merges nodes with the same op, inputs and attributes, when no write to the storages they
// read happened in between; random ops and ops with effects are never merged.
Graph eliminate_common_subexpressions(Graph g);
// Evaluates nodes whose inputs are all constants (fill of a fresh buffer, Constant nodes)
// at compile time, replacing them by Constant nodes. Random ops are never folded.
Graph fold_constants(Graph g);
// x * 1, x / 1, x + 0, x - 0 -> x (when dtype and shape are unchanged); view of a view ->
// one view (transpose of transpose, reshape of reshape, squeeze of unsqueeze...).
Graph simplify_algebra(Graph g);

// Liveness-based reuse of internal buffers: storages that are neither external, output nor
// constant get a slot; a slot is reused once every value on its previous storage is dead.
struct BufferPlan {
  std::vector<int> slot_of_storage;  // per graph storage; -1 when not planned
  std::vector<size_t> slot_bytes;
  size_t planned_bytes() const;      // sum of slot_bytes
  size_t unplanned_bytes = 0;        // what one buffer per internal storage would have taken
};
BufferPlan plan_buffers(const Graph& g);

using PassDumpHook = std::function<void(std::string_view pass, const Graph& after)>;
struct PassPipeline {
  bool dce = true, cse = true, fold = true, simplify = true;
};
// simplify -> fold -> cse -> dce, verifying after each pass; `dump` sees every stage.
Graph run_pipeline(Graph g, const PassPipeline& which = {}, const PassDumpHook& dump = {});

}  // namespace kiln::jit
