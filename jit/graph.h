#pragma once
// The JIT's graph IR: what one capture segment did, as nodes in program order.
//
// Values are SSA (defined once, by one node) and carry full geometry: sizes, strides, offset
// and dtype over a graph *storage*. Several values may share a storage (views); a Mutate node
// writes into an existing value's memory (in-place ops, out=, copy_, fill_), so reads after it
// see the new contents. Passes therefore reason about storages, not just value def-use chains.
// Graph inputs are realised tensors from outside the segment (arguments, parameters, optimizer
// state), bound by reference at each run; storages marked `output` must be materialised because
// a live tensor outside the graph still refers to them.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/op.h"

namespace kiln::fusion {
struct FusedCall;
}

namespace kiln::jit {

enum class NodeKind : uint8_t {
  Input,   // a realised tensor bound at run time (graph input `input_index`)
  Alloc,   // empty()/empty_strided() inside the graph: a new storage, contents undefined
  Op,      // an op row producing fresh contiguous outputs, each on a new storage
  View,    // an op row of kind View: the output aliases the input's storage
  Mutate,  // an op row written into `target` (in-place ops, out=, copy_, fill_); no outputs
  Constant,  // a realised tensor computed at compile time (constant folding); never written
  Fused,     // a fused kernel (fusion/partition.h): reads and writes the storages of `inputs`,
             // defines `outputs`; replaces the nodes it was made of
};
std::string_view node_kind_name(NodeKind k);

struct Value {
  Shape sizes, strides;
  int64_t offset = 0;
  DType dtype = DType::Float32;
  Device device = Device(kCPU);
  int storage = -1;  // graph storage id
  int node = -1;     // defining node
  bool wrapped = false;  // a wrapped number (x * 2): kernels promote it like a scalar
};

struct StorageInfo {
  size_t nbytes = 0;
  Device device = Device(kCPU);
  int input = -1;       // >= 0: the storage of graph input `input` (external memory)
  bool output = false;  // a tensor outside the graph still refers to it: materialise it
  bool constant = false;  // holds a Constant node's tensor
};

struct Node {
  NodeKind kind = NodeKind::Op;
  const OpDef* op = nullptr;  // null for Input and Alloc
  std::vector<int> inputs;    // value ids, as the kernel receives them (-1: an absent optional tensor)
  std::vector<int> outputs;   // value ids defined here
  Attrs attrs;
  int target = -1;       // Mutate: the value written
  DType result = DType::Float32;  // Mutate: the dtype the op computes in, cast into target
  int input_index = -1;  // Input: position in Graph::inputs
  Tensor constant;       // Constant: the folded value
  // >= 0: the first attribute (a fill's value) is bound at each run from slot `runtime_slot` of
  // the run's values: a scalar that changes from call to call (automatic dynamic).
  int runtime_slot = -1;
  std::shared_ptr<fusion::FusedCall> fused;  // Fused: the kernel and how its buffers bind
};

class Graph {
 public:
  std::vector<Node> nodes;
  std::vector<Value> values;
  std::vector<StorageInfo> storages;
  std::vector<int> inputs;  // value id of each graph input, in binding order

  int add_storage(StorageInfo s);
  int add_value(Value v);  // returns its id; v.node is set by add_node
  // Appends a node; sets the `node` field of its outputs.
  int add_node(Node n);

  const Value& value(int id) const { return values.at(static_cast<size_t>(id)); }
  std::string value_type(int id) const;  // "f32[64, 10]" (+ strides when not contiguous)

  // Readable text form, one node a line (see docs/jit.md for how to read it).
  std::string str() const;
  std::string node_str(size_t index) const;  // one line of str(), without indentation
  // Graphviz form of the same.
  std::string dot(const std::string& name = "graph") const;
  // Checks the invariants passes rely on; raises an internal error naming the broken one.
  void verify() const;
  bool storage_is_external(int s) const { return storages.at(static_cast<size_t>(s)).input >= 0; }
  int num_ops() const;  // nodes other than Input
};

// Human-readable type of a tensor-shaped thing: f32[64, 10].
std::string_view dtype_short_name(DType t);
std::string meta_str(DType dtype, IntArrayRef sizes);

}  // namespace kiln::jit
