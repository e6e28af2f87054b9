// nn::Module mechanics: registration and naming, traversal, train/eval, to(), zero_grad,
// state_dict round trips and their errors, clone, printing, containers, and nn::init.
#include <cmath>
#include <map>

#include "autograd/autograd.h"
#include "kiln/kiln.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::close;
using testing::to_vec;

// A user-defined module in the LibTorch style.
class TinyNet : public nn::Cloneable<TinyNet> {
 public:
  TinyNet() { reset(); }
  Tensor forward(const Tensor& x) override { return fc2->forward(relu(fc1->forward(x))) * scale; }

  std::shared_ptr<nn::Linear> fc1, fc2;
  Tensor scale;

 protected:
  void reset() override {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(3, 4));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(4, 2));
    scale = register_parameter("scale", ones({1}));
  }
};

// A module without Cloneable: clone() must raise.
class Plain : public nn::Module {
 public:
  Plain() { register_parameter("w", zeros({2})); }
};

std::vector<std::string> keys_of(const nn::OrderedDict<Tensor>& d) { return d.keys(); }

TEST(NnModule, RegistrationNamesAndOrder) {
  auto net = std::make_shared<TinyNet>();
  EXPECT_EQ(keys_of(net->named_parameters()),
            (std::vector<std::string>{"scale", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  EXPECT_EQ(keys_of(net->named_parameters(/*recurse=*/false)), (std::vector<std::string>{"scale"}));
  EXPECT_EQ(net->parameters().size(), 5u);
  for (const Tensor& p : net->parameters()) {
    EXPECT_TRUE(p.requires_grad());
    EXPECT_TRUE(p.is_leaf());
  }
  // The handle a layer keeps is the registered tensor itself.
  EXPECT_TRUE(net->named_parameters().at("fc1.weight").is_same(net->fc1->weight));
  EXPECT_EQ(net->named_children().keys(), (std::vector<std::string>{"fc1", "fc2"}));
  EXPECT_EQ(net->children().size(), 2u);
  EXPECT_EQ(net->named_modules().keys(), (std::vector<std::string>{"", "fc1", "fc2"}));
  EXPECT_EQ(net->modules(/*include_self=*/false).size(), 2u);
  EXPECT_EQ(net->name(), "TinyNet");
  EXPECT_EQ(net->fc1->name(), "Linear");
}

TEST(NnModule, RegistrationRules) {
  nn::Module m;
  Tensor w = m.register_parameter("w", zeros({2, 2}));
  EXPECT_TRUE(w.requires_grad());
  Tensor frozen = m.register_parameter("frozen", zeros({2}), /*requires_grad=*/false);
  EXPECT_FALSE(frozen.requires_grad());
  m.register_parameter("absent", Tensor());  // PyTorch's None: skipped everywhere
  EXPECT_EQ(keys_of(m.named_parameters()), (std::vector<std::string>{"w", "frozen"}));
  EXPECT_EQ(keys_of(m.state_dict()), (std::vector<std::string>{"w", "frozen"}));

  // A non-leaf becomes a leaf (detached) parameter.
  Tensor a = ones({2}).requires_grad_();
  Tensor p = m.register_parameter("derived", a * 2);
  EXPECT_TRUE(p.is_leaf());
  EXPECT_TRUE(p.requires_grad());

  EXPECT_KILN_ERROR(m.register_parameter("w", zeros({1})), "[register_parameter]", "'w'", "already");
  EXPECT_KILN_ERROR(m.register_buffer("w", zeros({1})), "[register_buffer]", "'w'");
  EXPECT_KILN_ERROR(m.register_parameter("a.b", zeros({1})), "must not contain '.'");
  EXPECT_KILN_ERROR(m.register_parameter("", zeros({1})), "must not be empty");
  EXPECT_KILN_ERROR(m.register_parameter("idx", zeros({1}, DType::Int64)), "'idx'", "int64", "floating point");
  EXPECT_KILN_ERROR(m.register_module("child", std::shared_ptr<nn::Linear>()), "[register_module]", "'child'", "null");
  EXPECT_KILN_ERROR(m.forward(zeros({1})), "Module", "no single-input forward");
  // Without a shared_ptr owner, modules() cannot include the module itself.
  EXPECT_KILN_ERROR(m.modules(), "[modules]", "std::make_shared");
  EXPECT_EQ(m.modules(/*include_self=*/false).size(), 0u);
}

TEST(NnModule, SharedParametersAreListedOnce) {
  auto shared = std::make_shared<nn::Linear>(2, 2);
  auto seq = std::make_shared<nn::Sequential>(shared, std::make_shared<nn::ReLU>(), shared);
  EXPECT_EQ(seq->parameters().size(), 2u);
  EXPECT_EQ(keys_of(seq->named_parameters()), (std::vector<std::string>{"0.weight", "0.bias"}));
  EXPECT_EQ(seq->modules().size(), 3u);  // self, the shared Linear once, ReLU
  // state_dict keeps both names, as PyTorch's does.
  EXPECT_EQ(keys_of(seq->state_dict()), (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
}

TEST(NnModule, BuffersAndStateDictOrder) {
  auto seq = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(3, 2), std::make_shared<nn::BatchNorm1d>(2));
  EXPECT_EQ(keys_of(seq->state_dict()),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                      "1.num_batches_tracked"}));
  EXPECT_EQ(keys_of(seq->named_buffers()),
            (std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"}));
  EXPECT_EQ(seq->buffers().size(), 3u);
  // Non-persistent buffers move with the module but stay out of the state dict.
  nn::Module m;
  m.register_buffer("cache", zeros({2}), /*persistent=*/false);
  m.register_buffer("kept", zeros({2}));
  EXPECT_EQ(keys_of(m.state_dict()), (std::vector<std::string>{"kept"}));
  EXPECT_EQ(keys_of(m.named_buffers()), (std::vector<std::string>{"cache", "kept"}));
  // state_dict tensors share storage with the module but are cut from the graph.
  auto lin = std::make_shared<nn::Linear>(2, 2);
  Tensor w = lin->state_dict().at("weight");
  EXPECT_FALSE(w.requires_grad());
  EXPECT_EQ(w.data_ptr(), lin->weight.data_ptr());
}

TEST(NnModule, TrainEvalIsRecursive) {
  auto net = std::make_shared<TinyNet>();
  EXPECT_TRUE(net->is_training());
  net->eval();
  EXPECT_FALSE(net->is_training());
  EXPECT_FALSE(net->fc1->is_training());
  net->train();
  EXPECT_TRUE(net->fc2->is_training());
}

TEST(NnModule, ToDtypeKeepsIdentityAndLeafness) {
  auto seq = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(3, 2), std::make_shared<nn::BatchNorm1d>(2));
  auto lin = seq->at<nn::Linear>(0);
  auto bn = seq->at<nn::BatchNorm1d>(1);
  Tensor held = lin->weight;  // e.g. what an optimizer keeps
  const std::vector<double> before = to_vec(held);
  lin->weight.set_grad(ones({2, 3}));
  seq->to(DType::Float64);
  EXPECT_EQ(held.dtype(), DType::Float64);
  EXPECT_TRUE(held.is_same(lin->weight));
  EXPECT_TRUE(held.is_same(seq->named_parameters().at("0.weight")));
  EXPECT_TRUE(held.requires_grad());
  EXPECT_TRUE(held.is_leaf());
  EXPECT_EQ(to_vec(held), before);
  ASSERT_TRUE(held.grad().defined());
  EXPECT_EQ(held.grad().dtype(), DType::Float64);
  EXPECT_EQ(bn->running_var.dtype(), DType::Float64);
  EXPECT_EQ(bn->num_batches_tracked.dtype(), DType::Int64);  // integer buffers keep their dtype
  // The converted module computes in float64 and still trains.
  Tensor x = randn({4, 3}, DType::Float64);
  Tensor y = seq->forward(x);
  EXPECT_EQ(y.dtype(), DType::Float64);
  y.sum().backward();
  EXPECT_TRUE(held.grad().defined());
  EXPECT_KILN_ERROR(seq->to(DType::Int32), "[Module::to]", "floating point", "int32");
  seq->to(Device(kCPU));  // a no-op that keeps everything
  EXPECT_TRUE(held.is_same(lin->weight));
}

// An optimizer made before to() keeps working: it holds the same parameter handles.
TEST(NnModule, TrainsWithAnOptimizerAcrossTo) {
  manual_seed(2);
  auto model = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(2, 8), std::make_shared<nn::Tanh>(),
                                                std::make_shared<nn::Linear>(8, 1));
  optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
  model->to(DType::Float64);
  Tensor x = randn({32, 2}, DType::Float64);
  Tensor y = (x.select(1, 0) - 2 * x.select(1, 1)).unsqueeze(1) * 0.5;
  nn::MSELoss mse;
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    opt.zero_grad();
    Tensor loss = mse(model->forward(x), y);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first / 10);
  EXPECT_EQ(model->parameters()[0].dtype(), DType::Float64);
}

TEST(NnModule, ZeroGrad) {
  auto lin = std::make_shared<nn::Linear>(3, 2);
  lin->forward(ones({1, 3})).sum().backward();
  ASSERT_TRUE(lin->weight.grad().defined());
  lin->zero_grad(/*set_to_none=*/false);
  EXPECT_TRUE(close(lin->weight.grad(), zeros({2, 3})));
  lin->zero_grad();
  EXPECT_FALSE(lin->weight.grad().defined());
  EXPECT_FALSE(lin->bias.grad().defined());
}

TEST(NnModule, StateDictRoundTrip) {
  manual_seed(1);
  auto a = std::make_shared<TinyNet>();
  auto b = std::make_shared<TinyNet>();
  Tensor x = randn({5, 3});
  EXPECT_FALSE(close(a->forward(x), b->forward(x)));
  Tensor b_weight = b->fc1->weight;
  nn::LoadStateDictResult r = b->load_state_dict(a->state_dict());
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  EXPECT_TRUE(close(a->forward(x), b->forward(x), 0, 0));
  // Loaded in place: identity kept, still a leaf parameter, separate storage.
  EXPECT_TRUE(b_weight.is_same(b->fc1->weight));
  EXPECT_TRUE(b_weight.requires_grad() && b_weight.is_leaf());
  EXPECT_NE(b_weight.data_ptr(), a->fc1->weight.data_ptr());

  // A std::map (as a file loader may return) converts implicitly.
  std::map<std::string, Tensor> as_map;
  for (const auto& [k, v] : a->state_dict()) as_map.emplace(k, v.clone());
  auto c = std::make_shared<TinyNet>();
  c->load_state_dict(as_map);
  EXPECT_TRUE(close(a->forward(x), c->forward(x), 0, 0));

  // Through safetensors bytes: StateDict converts to and from the std::map kiln::save/load use.
  std::vector<uint8_t> bytes = save_to_memory(a->state_dict());
  auto d = std::make_shared<TinyNet>();
  d->load_state_dict(load_from_memory(bytes.data(), bytes.size()));
  EXPECT_TRUE(close(a->forward(x), d->forward(x), 0, 0));

  // BatchNorm buffers travel too; values are converted to the module's dtype.
  auto bn1 = std::make_shared<nn::BatchNorm1d>(2);
  bn1->forward(tensor({{1.0, 2.0}, {3.0, 5.0}}));
  auto bn2 = std::make_shared<nn::BatchNorm1d>(2);
  nn::StateDict sd = bn1->state_dict();
  sd.at("running_mean") = sd.at("running_mean").to(DType::Float64);
  bn2->load_state_dict(sd);
  EXPECT_TRUE(close(bn2->running_mean, bn1->running_mean));
  EXPECT_EQ(bn2->running_mean.dtype(), DType::Float32);
  EXPECT_EQ(bn2->num_batches_tracked.item<int64_t>(), 1);
}

TEST(NnModule, LoadStateDictErrors) {
  auto lin = std::make_shared<nn::Linear>(3, 2);
  const std::vector<double> before = to_vec(lin->weight);
  nn::StateDict sd = lin->state_dict();

  nn::StateDict missing;
  missing.insert("weight", zeros({2, 3}));
  EXPECT_KILN_ERROR(lin->load_state_dict(missing), "[load_state_dict]", "Linear", "missing key(s)", "\"bias\"");

  nn::StateDict extra = sd;
  extra.insert("foo", zeros({1}));
  extra.insert("bar.baz", zeros({1}));
  EXPECT_KILN_ERROR(lin->load_state_dict(extra), "unexpected key(s)", "\"foo\", \"bar.baz\"");

  nn::StateDict wrong;
  wrong.insert("weight", zeros({2, 4}));
  wrong.insert("bias", zeros({2}));
  EXPECT_KILN_ERROR(lin->load_state_dict(wrong), "size mismatch for weight", "[2, 4]", "[2, 3]");
  // Shape mismatches raise even when not strict.
  EXPECT_KILN_ERROR(lin->load_state_dict(wrong, /*strict=*/false), "size mismatch for weight");
  // Nothing was copied by the failed loads (bias of `wrong` is fine but must not land).
  EXPECT_EQ(to_vec(lin->weight), before);

  // Non-strict: loads what matches and reports the rest.
  nn::StateDict partial;
  partial.insert("weight", full({2, 3}, 0.5));
  partial.insert("other", zeros({1}));
  nn::LoadStateDictResult r = lin->load_state_dict(partial, /*strict=*/false);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"bias"}));
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"other"}));
  EXPECT_TRUE(close(lin->weight, full({2, 3}, 0.5)));
}

TEST(NnModule, CloneIsDeep) {
  auto net = std::make_shared<TinyNet>();
  net->fc2->bias.requires_grad_(false);
  net->eval();
  auto copy = std::dynamic_pointer_cast<TinyNet>(net->clone());
  ASSERT_TRUE(copy);
  EXPECT_EQ(keys_of(copy->named_parameters()), keys_of(net->named_parameters()));
  EXPECT_FALSE(copy->is_training());
  EXPECT_FALSE(copy->fc1->is_training());
  EXPECT_FALSE(copy->fc2->bias.requires_grad());
  EXPECT_TRUE(copy->fc1->weight.requires_grad());
  Tensor x = randn({2, 3});
  EXPECT_TRUE(close(copy->forward(x), net->forward(x), 0, 0));
  // The copy's members and registry agree, and storage is separate.
  EXPECT_TRUE(copy->fc1->weight.is_same(copy->named_parameters().at("fc1.weight")));
  EXPECT_NE(copy->fc1->weight.data_ptr(), net->fc1->weight.data_ptr());
  {
    NoGradGuard g;
    copy->fc1->weight.fill_(0);
  }
  EXPECT_FALSE(close(copy->forward(x), net->forward(x)));

  // A float64 module clones as float64.
  auto lin = std::make_shared<nn::Linear>(2, 2);
  lin->to(DType::Float64);
  auto lin2 = std::dynamic_pointer_cast<nn::Linear>(lin->clone());
  EXPECT_EQ(lin2->weight.dtype(), DType::Float64);
  EXPECT_TRUE(close(lin2->weight, lin->weight, 0, 0));

  // Containers clone their children.
  auto seq = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(3, 3), std::make_shared<nn::GELU>("tanh"));
  auto seq2 = std::dynamic_pointer_cast<nn::Sequential>(seq->clone());
  ASSERT_TRUE(seq2);
  EXPECT_EQ(seq2->size(), 2u);
  EXPECT_EQ(seq2->at<nn::GELU>(1)->approximate, "tanh");
  EXPECT_TRUE(close(seq2->forward(x), seq->forward(x), 0, 0));
  EXPECT_NE(seq2->at<nn::Linear>(0)->weight.data_ptr(), seq->at<nn::Linear>(0)->weight.data_ptr());

  auto plain = std::make_shared<Plain>();
  EXPECT_KILN_ERROR(plain->clone(), "[clone]", "Plain", "Cloneable");
}

TEST(NnModule, Printing) {
  auto lin = std::make_shared<nn::Linear>(4, 2);
  EXPECT_EQ(nn::to_string(*lin), "Linear(in_features=4, out_features=2, bias=true)");
  auto seq = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 2, false), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::Sequential>(std::make_shared<nn::Dropout>(0.25)));
  EXPECT_EQ(nn::to_string(*seq),
            "Sequential(\n"
            "  (0): Linear(in_features=4, out_features=2, bias=false)\n"
            "  (1): ReLU()\n"
            "  (2): Sequential(\n"
            "    (0): Dropout(p=0.25)\n"
            "  )\n"
            ")");
  std::ostringstream os;
  os << *std::make_shared<nn::Conv2d>(3, 8, 3, 1, 1);
  EXPECT_EQ(os.str(), "Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
  EXPECT_EQ(nn::to_string(nn::BatchNorm2d(4)),
            "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)");
  EXPECT_EQ(nn::to_string(nn::LayerNorm(8)), "LayerNorm((8,), eps=1e-05, elementwise_affine=true)");
  EXPECT_EQ(nn::to_string(nn::Embedding(10, 3, 0)), "Embedding(10, 3, padding_idx=0)");
  EXPECT_EQ(nn::to_string(nn::MaxPool2d(2)),
            "MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1), ceil_mode=false)");
  EXPECT_EQ(nn::to_string(nn::Softmax(1)), "Softmax(dim=1)");
  EXPECT_EQ(nn::to_string(nn::Flatten()), "Flatten(start_dim=1, end_dim=-1)");
  EXPECT_EQ(nn::to_string(nn::MultiheadAttention(4, 2)),
            "MultiheadAttention(\n  (out_proj): Linear(in_features=4, out_features=4, bias=true)\n)");
}

TEST(NnModule, SequentialAndModuleList) {
  auto seq = std::make_shared<nn::Sequential>();
  EXPECT_TRUE(close(seq->forward(ones({2})), ones({2})));  // empty: identity
  seq->push_back(std::make_shared<nn::Linear>(2, 3));
  seq->push_back("act", std::make_shared<nn::Tanh>());
  EXPECT_EQ(seq->named_children().keys(), (std::vector<std::string>{"0", "act"}));
  Tensor x = randn({4, 2});
  auto lin = seq->at<nn::Linear>(0);
  EXPECT_TRUE(close((*seq)(x), kiln::tanh(lin->forward(x))));
  EXPECT_TRUE(seq->ptr(-1) == (*seq)[1]);
  EXPECT_KILN_ERROR((*seq)[2], "[Sequential]", "index 2", "2 modules");
  EXPECT_KILN_ERROR(seq->at<nn::Conv2d>(1), "[Sequential]", "module 1 is a Tanh");
  // replace_module swaps a child in the container's order and in the registry.
  seq->replace_module("act", std::make_shared<nn::Sigmoid>());
  EXPECT_EQ((*seq)[1]->name(), "Sigmoid");
  EXPECT_TRUE(close((*seq)(x), sigmoid(lin->forward(x))));
  EXPECT_KILN_ERROR(seq->replace_module("nope", std::make_shared<nn::ReLU>()), "[replace_module]", "'nope'");

  nn::Sequential braced({std::make_shared<nn::ReLU>(), std::make_shared<nn::Sigmoid>()});
  EXPECT_EQ(braced.size(), 2u);

  auto list = std::make_shared<nn::ModuleList>();
  for (int i = 0; i < 3; ++i) list->push_back(std::make_shared<nn::Linear>(2, 2));
  nn::ModuleList more{std::make_shared<nn::ReLU>()};
  list->extend(more);
  EXPECT_EQ(list->size(), 4u);
  int n = 0;
  for (const auto& m : *list) n += m->name() == "Linear";
  EXPECT_EQ(n, 3);
  EXPECT_EQ(keys_of(list->named_parameters()).front(), "0.weight");
  EXPECT_EQ(list->parameters().size(), 6u);
  EXPECT_KILN_ERROR(list->forward(x), "[ModuleList]", "no single-input forward");
}

TEST(NnModule, ApplyVisitsChildrenFirst) {
  auto net = std::make_shared<TinyNet>();
  std::vector<std::string> order;
  net->apply([&](nn::Module& m) { order.push_back(m.name()); });
  EXPECT_EQ(order, (std::vector<std::string>{"Linear", "Linear", "TinyNet"}));
}

TEST(NnModule, OrderedDict) {
  nn::OrderedDict<int> d{{"b", 2}, {"a", 1}};
  d.insert("c", 3);
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(d["a"], 1);
  EXPECT_EQ(d[size_t{2}].first, "c");
  EXPECT_TRUE(d.erase("b"));
  EXPECT_EQ(d.values(), (std::vector<int>{1, 3}));
  EXPECT_EQ(d["c"], 3);
  EXPECT_KILN_ERROR(d.insert("a", 0), "[OrderedDict]", "'a'", "already exists");
  EXPECT_KILN_ERROR(d.at("zz"), "[OrderedDict]", "'zz'", "not found");
}

// --- init ---------------------------------------------------------------------------------------

TEST(NnInit, GainsAndFans) {
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("linear"), 1.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("conv2d"), 1.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("sigmoid"), 1.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("tanh"), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("relu"), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("leaky_relu"), std::sqrt(2.0 / (1 + 0.01 * 0.01)));
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("leaky_relu", std::sqrt(5.0)), std::sqrt(1.0 / 3.0));
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("selu"), 0.75);
  EXPECT_KILN_ERROR(nn::init::calculate_gain("swish"), "[init::calculate_gain]", "'swish'");

  auto [fi, fo] = nn::init::calculate_fan_in_and_fan_out(empty({8, 3, 5, 5}));
  EXPECT_EQ(fi, 75);
  EXPECT_EQ(fo, 200);
  EXPECT_KILN_ERROR(nn::init::calculate_fan_in_and_fan_out(empty({5})), "fewer than 2 dimensions", "[5]");
  EXPECT_KILN_ERROR(nn::init::kaiming_uniform_(empty({5})), "fewer than 2 dimensions");
  EXPECT_KILN_ERROR(nn::init::xavier_normal_(empty({5})), "fewer than 2 dimensions");
  EXPECT_KILN_ERROR(nn::init::kaiming_normal_(empty({4, 4}), 0, "fan_avg"), "[init::kaiming_normal_]", "'fan_avg'");
  EXPECT_KILN_ERROR(nn::init::uniform_(empty({2}, DType::Int64)), "[init::uniform_]", "floating point");
}

double max_abs(const Tensor& t) { return t.abs().max().item<double>(); }
double std_of(const Tensor& t) { return t.to(DType::Float64).std().item<double>(); }

TEST(NnInit, UniformBoundsAndNormalStd) {
  manual_seed(0);
  // kaiming_uniform_ with a = 0 on fan_in = 32: U(-sqrt(6/32), sqrt(6/32)).
  Tensor w = empty({64, 32});
  nn::init::kaiming_uniform_(w);
  const double bound = std::sqrt(6.0 / 32.0);
  EXPECT_LE(max_abs(w), bound);
  EXPECT_GT(max_abs(w), 0.95 * bound);
  // fan_out with relu: same bound formula on size(0) * receptive field.
  Tensor c = empty({16, 4, 3, 3});
  nn::init::kaiming_uniform_(c, 0, "fan_out", "relu");
  const double bound_out = std::sqrt(2.0) * std::sqrt(3.0 / (16 * 9));
  EXPECT_LE(max_abs(c), bound_out);
  EXPECT_GT(max_abs(c), 0.95 * bound_out);

  Tensor x = empty({20, 30});
  nn::init::xavier_uniform_(x, 2.0);
  const double xb = 2.0 * std::sqrt(6.0 / 50.0);
  EXPECT_LE(max_abs(x), xb);
  EXPECT_GT(max_abs(x), 0.95 * xb);

  Tensor big = empty({200, 100});
  nn::init::kaiming_normal_(big, 0, "fan_in", "relu");
  EXPECT_NEAR(std_of(big), std::sqrt(2.0 / 100.0), 0.01 * std::sqrt(2.0 / 100.0) * 5);
  nn::init::xavier_normal_(big);
  EXPECT_NEAR(std_of(big), std::sqrt(2.0 / 300.0), 0.05 * std::sqrt(2.0 / 300.0));
  nn::init::normal_(big, 3.0, 0.5);
  EXPECT_NEAR(big.mean().item<double>(), 3.0, 0.02);
  EXPECT_NEAR(std_of(big), 0.5, 0.025);
  nn::init::uniform_(big, -2.0, -1.0);
  EXPECT_GE(big.min().item<double>(), -2.0);
  EXPECT_LE(big.max().item<double>(), -1.0);

  Tensor k = empty({2, 3});
  EXPECT_TRUE(close(nn::init::constant_(k, 1.5), full({2, 3}, 1.5)));
  EXPECT_TRUE(close(nn::init::zeros_(k), zeros({2, 3})));
  EXPECT_TRUE(close(nn::init::ones_(k), ones({2, 3})));
  // Zero-element tensors are a no-op, as in PyTorch.
  EXPECT_EQ(nn::init::kaiming_uniform_(empty({0, 3})).numel(), 0);
}

TEST(NnInit, WorksOnParametersRequiringGrad) {
  Tensor p = empty({4, 4}).requires_grad_();
  nn::init::kaiming_uniform_(p);
  nn::init::zeros_(p);
  EXPECT_TRUE(p.is_leaf());
  EXPECT_TRUE(close(p, zeros({4, 4})));
}

TEST(NnInit, LayerDefaults) {
  manual_seed(3);
  // Linear / Conv2d: weight and bias within 1/sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5)).
  auto lin = std::make_shared<nn::Linear>(50, 40);
  const double b = 1.0 / std::sqrt(50.0);
  EXPECT_LE(max_abs(lin->weight), b);
  EXPECT_GT(max_abs(lin->weight), 0.95 * b);
  EXPECT_LE(max_abs(lin->bias), b);
  auto conv = std::make_shared<nn::Conv2d>(4, 16, 3, 1, 0, 1, 2);
  EXPECT_EQ(conv->weight.sizes(), (Shape{16, 2, 3, 3}));
  const double cb = 1.0 / std::sqrt(18.0);
  EXPECT_LE(max_abs(conv->weight), cb);
  EXPECT_GT(max_abs(conv->weight), 0.9 * cb);
  EXPECT_LE(max_abs(conv->bias), cb);
  // MultiheadAttention: xavier_uniform_ packed projection, zero biases.
  auto mha = std::make_shared<nn::MultiheadAttention>(8, 2);
  EXPECT_LE(max_abs(mha->in_proj_weight), std::sqrt(6.0 / (8 + 24)));
  EXPECT_EQ(max_abs(mha->in_proj_bias), 0.0);
  EXPECT_EQ(max_abs(mha->out_proj->bias), 0.0);
  EXPECT_LE(max_abs(mha->out_proj->weight), 1.0 / std::sqrt(8.0));
  // Embedding ~ N(0, 1); norms at 1 and 0.
  auto emb = std::make_shared<nn::Embedding>(400, 50);
  EXPECT_NEAR(std_of(emb->weight), 1.0, 0.03);
  auto ln = std::make_shared<nn::LayerNorm>(std::vector<int64_t>{2, 3});
  EXPECT_TRUE(close(ln->weight, ones({2, 3})));
  EXPECT_TRUE(close(ln->bias, zeros({2, 3})));
}

}  // namespace
}  // namespace kiln
