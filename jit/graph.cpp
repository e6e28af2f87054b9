#include "jit/graph.h"

#include <algorithm>

#include "fusion/partition.h"

#include <sstream>

#include "core/shape.h"

namespace kiln::jit {

std::string_view node_kind_name(NodeKind k) {
  switch (k) {
    case NodeKind::Input: return "input";
    case NodeKind::Alloc: return "alloc";
    case NodeKind::Op: return "op";
    case NodeKind::View: return "view";
    case NodeKind::Mutate: return "mutate";
    case NodeKind::Constant: return "constant";
    case NodeKind::Fused: return "fused";
  }
  return "?";
}

std::string_view dtype_short_name(DType t) {
  switch (t) {
    case DType::Bool: return "b8";
    case DType::UInt8: return "u8";
    case DType::Int8: return "i8";
    case DType::Int16: return "i16";
    case DType::Int32: return "i32";
    case DType::Int64: return "i64";
    case DType::Float16: return "f16";
    case DType::BFloat16: return "bf16";
    case DType::Float32: return "f32";
    case DType::Float64: return "f64";
  }
  return "?";
}

std::string meta_str(DType dtype, IntArrayRef sizes) {
  std::ostringstream os;
  os << dtype_short_name(dtype) << sizes;
  return os.str();
}

int Graph::add_storage(StorageInfo s) {
  storages.push_back(s);
  return static_cast<int>(storages.size()) - 1;
}

int Graph::add_value(Value v) {
  values.push_back(std::move(v));
  return static_cast<int>(values.size()) - 1;
}

int Graph::add_node(Node n) {
  int id = static_cast<int>(nodes.size());
  for (int v : n.outputs) values.at(static_cast<size_t>(v)).node = id;
  if (n.kind == NodeKind::Input) {
    n.input_index = static_cast<int>(inputs.size());
    inputs.push_back(n.outputs.at(0));
  }
  nodes.push_back(std::move(n));
  return id;
}

std::string Graph::value_type(int id) const {
  const Value& v = value(id);
  std::string s = meta_str(v.dtype, v.sizes);
  if (!is_contiguous_strides(v.sizes, v.strides) || v.offset != 0) {
    std::ostringstream os;
    os << " strides=" << IntArrayRef(v.strides);
    if (v.offset) os << " offset=" << v.offset;
    s += os.str();
  }
  if (!v.device.is_cpu()) s += " " + v.device.str();
  return s;
}

int Graph::num_ops() const {
  int n = 0;
  for (const Node& nd : nodes) n += nd.kind != NodeKind::Input;
  return n;
}

namespace {

void print_attrs(std::ostream& os, const Node& n, bool first) {
  for (size_t i = 0; i < n.attrs.size(); ++i) {
    if (n.attrs.is_none(i)) continue;
    os << (first ? "" : ", ");
    first = false;
    if (n.op && i < n.op->attr_names.size()) os << n.op->attr_names[i] << "=";
    os << n.attrs[i];
  }
}

std::string op_name(const Node& n) {
  switch (n.kind) {
    case NodeKind::Input: return "input";
    case NodeKind::Alloc: return "empty";
    case NodeKind::Constant: return "constant";
    case NodeKind::Fused: return "fused[" + n.fused->ir.name + ": " + n.fused->summary + "]";
    case NodeKind::Mutate: return n.op->name + "_";
    default: return n.op->name;
  }
}

}  // namespace

std::string Graph::node_str(size_t index) const {
  const Node& n = nodes.at(index);
  std::ostringstream os;
  for (size_t i = 0; i < n.outputs.size(); ++i) os << (i ? ", " : "") << "%" << n.outputs[i];
  if (!n.outputs.empty()) os << " = ";
  os << op_name(n) << "(";
  bool first = true;
  if (n.kind == NodeKind::Mutate) {
    os << "%" << n.target;
    first = false;
  }
  for (int v : n.inputs) {
    os << (first ? "" : ", ");
    if (v < 0) os << "None";  // an absent optional input
    else os << "%" << v;
    first = false;
  }
  print_attrs(os, n, first);
  if (n.kind == NodeKind::Constant && n.constant.numel() == 1) os << n.constant.item();
  os << ")";
  if (!n.outputs.empty()) {
    os << " : ";
    for (size_t i = 0; i < n.outputs.size(); ++i) os << (i ? ", " : "") << value_type(n.outputs[i]);
  }
  if (n.kind == NodeKind::View) os << "  # view of %" << n.inputs.at(0);
  if (n.kind == NodeKind::Mutate) {
    const StorageInfo& s = storages.at(static_cast<size_t>(value(n.target).storage));
    os << "  # writes %" << n.target << (s.input >= 0 ? " (graph input " + std::to_string(s.input) + ")" : "");
  }
  if (n.kind == NodeKind::Fused) {
    std::string w;
    for (size_t b = 0; b < n.fused->buffer_values.size(); ++b)
      if (n.fused->ir.buffers[b].written && std::find(n.outputs.begin(), n.outputs.end(), n.fused->buffer_values[b]) == n.outputs.end())
        w += (w.empty() ? "" : ", ") + ("%" + std::to_string(n.fused->buffer_values[b]));
    if (!w.empty()) os << "  # writes " << w;
  }
  return os.str();
}

std::string Graph::str() const {
  std::ostringstream os;
  os << "graph(";
  for (size_t i = 0; i < inputs.size(); ++i)
    os << (i ? ", " : "") << "%" << inputs[i] << ": " << value_type(inputs[i]);
  os << "):\n";
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].kind != NodeKind::Input) os << "  " << node_str(i) << "\n";
  os << "  return";
  bool any = false;
  for (size_t s = 0; s < storages.size(); ++s) {
    if (!storages[s].output) continue;
    // Name each materialised storage by the first value defined on it.
    for (size_t v = 0; v < values.size(); ++v)
      if (values[v].storage == static_cast<int>(s)) {
        os << (any ? ", " : " ") << "%" << v;
        any = true;
        break;
      }
  }
  if (!any) os << " ()";
  os << "\n";
  return os.str();
}

std::string Graph::dot(const std::string& name) const {
  std::ostringstream os;
  os << "digraph \"" << name << "\" {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n";
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    const char* color = n.kind == NodeKind::Input      ? "lightblue"
                        : n.kind == NodeKind::Mutate   ? "salmon"
                        : n.kind == NodeKind::View     ? "lightgrey"
                        : n.kind == NodeKind::Constant ? "khaki"
                                                       : "white";
    std::string label = op_name(n);
    if (n.kind == NodeKind::Input) label += " " + std::to_string(n.input_index);
    if (!n.outputs.empty()) label += "\\n" + value_type(n.outputs[0]);
    os << "  n" << i << " [label=\"" << label << "\", style=filled, fillcolor=" << color << "];\n";
    std::vector<int> reads = n.inputs;
    if (n.target >= 0) reads.insert(reads.begin(), n.target);
    for (int v : reads)
      if (v >= 0) os << "  n" << value(v).node << " -> n" << i << ";\n";
  }
  os << "}\n";
  return os.str();
}

void Graph::verify() const {
  std::vector<char> defined(values.size(), 0);
  auto check_use = [&](int v, size_t node) {
    KILN_INTERNAL_ASSERT(v >= 0 && static_cast<size_t>(v) < values.size(), "graph: node ", node, " uses unknown value %",
                         v);
    KILN_INTERNAL_ASSERT(defined[static_cast<size_t>(v)], "graph: node ", node, " uses %", v, " before its definition");
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    for (int v : n.inputs)
      if (v >= 0 || n.kind != NodeKind::Op) check_use(v, i);  // Op: -1 is an absent optional input
    if (n.kind == NodeKind::Mutate) {
      check_use(n.target, i);
      KILN_INTERNAL_ASSERT(n.outputs.empty() && n.op != nullptr, "graph: mutate node ", i, " malformed");
      KILN_INTERNAL_ASSERT(!storages.at(static_cast<size_t>(value(n.target).storage)).constant, "graph: node ", i,
                           " writes a constant");
    }
    if (n.kind == NodeKind::Op || n.kind == NodeKind::View)
      KILN_INTERNAL_ASSERT(n.op != nullptr, "graph: node ", i, " has no op");
    if (n.kind == NodeKind::View)
      KILN_INTERNAL_ASSERT(n.inputs.size() == 1 && n.outputs.size() == 1 &&
                               value(n.outputs[0]).storage == value(n.inputs[0]).storage,
                           "graph: view node ", i, " must alias its input's storage");
    if (n.kind == NodeKind::Constant)
      KILN_INTERNAL_ASSERT(n.constant.defined() && n.outputs.size() == 1, "graph: constant node ", i, " malformed");
    for (int v : n.outputs) {
      KILN_INTERNAL_ASSERT(v >= 0 && static_cast<size_t>(v) < values.size(), "graph: node ", i, " defines unknown %", v);
      KILN_INTERNAL_ASSERT(!defined[static_cast<size_t>(v)], "graph: %", v, " defined twice");
      KILN_INTERNAL_ASSERT(value(v).node == static_cast<int>(i), "graph: %", v, " does not point at its node ", i);
      const Value& val = value(v);
      KILN_INTERNAL_ASSERT(val.storage >= 0 && static_cast<size_t>(val.storage) < storages.size(), "graph: %", v,
                           " has no storage");
      KILN_INTERNAL_ASSERT(val.sizes.size() == val.strides.size(), "graph: %", v, " sizes/strides rank differ");
      defined[static_cast<size_t>(v)] = 1;
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Node& n = nodes.at(static_cast<size_t>(value(inputs[i]).node));
    KILN_INTERNAL_ASSERT(n.kind == NodeKind::Input && n.input_index == static_cast<int>(i), "graph: input ", i,
                         " is not bound by an input node");
  }
}

}  // namespace kiln::jit
