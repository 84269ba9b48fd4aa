// oneDNN convolutions as an XLA FFI custom call for XLA:CPU (see onednn.py).
//
// One handler, three kinds of work, all on NHWC activations and HWIO kernels (JAX's and
// flax's layouts):
//   kind 0, forward:          (x, w)  -> y
//   kind 1, input gradient:   (dy, w) -> dx
//   kind 2, kernel gradient:  (x, dy) -> dw
// All three operands are float32, or all bfloat16: oneDNN accumulates bfloat16 products in
// float32 and rounds each result once (the kernel gradient's sum over the batch too).
// Activations stay in XLA's buffers in NHWC ("channels last", as PyTorch's fast CPU path
// uses them); kernels are reordered to and from the layout oneDNN picks for each primitive.
// Primitives are created once per shape and kept: creating one compiles machine code.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// From libgomp, which this (GNU OpenMP) build of oneDNN runs its threads with.
extern "C" int omp_get_max_threads(void);
extern "C" void omp_set_num_threads(int);

namespace {

using Dims = dnnl::memory::dims;
using Tag = dnnl::memory::format_tag;
using DataType = dnnl::memory::data_type;

enum Kind : int64_t { kForward = 0, kInputGrad = 1, kKernelGrad = 2 };

struct Geometry {
  Dims x_nhwc, w_hwio, y_nhwc, strides, pad_lo, pad_hi, dilation;
  int64_t groups;
  DataType type;  // every operand's: f32 or bf16

  std::string Key(int64_t kind) const {
    std::string key = std::to_string(kind) + "/" + std::to_string(groups) + "/" +
                      std::to_string(static_cast<int>(type));
    for (const Dims* dims : {&x_nhwc, &w_hwio, &y_nhwc, &strides, &pad_lo, &pad_hi, &dilation}) {
      key += "/";
      for (int64_t d : *dims) key += std::to_string(d) + ",";
    }
    return key;
  }
};

// A primitive for one kind and geometry, with the kernel reorder it needs.
struct Plan {
  dnnl::primitive primitive;
  dnnl::memory::desc src, dst;                         // x or dx, y or dy: NHWC
  dnnl::memory::desc user_kernel, kernel, scratchpad;  // kernel: the primitive's layout
  dnnl::reorder kernel_reorder;                        // user <-> primitive, if they differ
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::shared_ptr<Plan> MakePlan(int64_t kind, const Geometry& g) {
  const Dims& x = g.x_nhwc;
  const Dims& w = g.w_hwio;
  const Dims& y = g.y_nhwc;
  // oneDNN names dimensions logically (N, C, H, W / O, I, H, W); the tag gives the memory order.
  const dnnl::memory::desc src({x[0], x[3], x[1], x[2]}, g.type, Tag::nhwc);
  const dnnl::memory::desc dst({y[0], y[3], y[1], y[2]}, g.type, Tag::nhwc);
  const Dims kernel_dims = g.groups == 1
                               ? Dims{w[3], w[2], w[0], w[1]}
                               : Dims{g.groups, w[3] / g.groups, w[2], w[0], w[1]};
  const dnnl::memory::desc user_kernel(kernel_dims, g.type, g.groups == 1 ? Tag::hwio : Tag::hwigo);
  const dnnl::memory::desc any_kernel(kernel_dims, g.type, Tag::any);
  const Dims dilation = {g.dilation[0] - 1, g.dilation[1] - 1};  // oneDNN counts from 0

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // ours per call: thread-safe
  auto& engine = Engine();
  const auto forward = dnnl::convolution_forward::primitive_desc(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      any_kernel, dst, g.strides, dilation, g.pad_lo, g.pad_hi, attr);

  auto plan = std::make_shared<Plan>();
  plan->src = src;
  plan->dst = dst;
  plan->user_kernel = user_kernel;
  if (kind == kForward) {
    plan->primitive = dnnl::convolution_forward(forward);
    plan->kernel = forward.weights_desc();
    plan->scratchpad = forward.scratchpad_desc();
  } else if (kind == kInputGrad) {
    const dnnl::convolution_backward_data::primitive_desc pd(
        engine, dnnl::algorithm::convolution_direct, src, any_kernel, dst, g.strides, dilation,
        g.pad_lo, g.pad_hi, forward, attr);
    plan->primitive = dnnl::convolution_backward_data(pd);
    plan->kernel = pd.weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  } else {
    const dnnl::convolution_backward_weights::primitive_desc pd(
        engine, dnnl::algorithm::convolution_direct, src, any_kernel, dst, g.strides, dilation,
        g.pad_lo, g.pad_hi, forward, attr);
    plan->primitive = dnnl::convolution_backward_weights(pd);
    plan->kernel = pd.diff_weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  }
  if (plan->kernel != user_kernel) {
    plan->kernel_reorder =
        kind == kKernelGrad
            ? dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->kernel, engine, user_kernel))
            : dnnl::reorder(dnnl::reorder::primitive_desc(engine, user_kernel, engine, plan->kernel));
  }
  return plan;
}

std::shared_ptr<Plan> GetPlan(int64_t kind, const Geometry& geometry) {
  static std::mutex mutex;
  static auto* plans = new std::unordered_map<std::string, std::shared_ptr<Plan>>();
  const std::string key = geometry.Key(kind);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans->find(key);
  if (it == plans->end()) it = plans->emplace(key, MakePlan(kind, geometry)).first;
  return it->second;
}

// A 64-byte aligned heap buffer (empty for size 0).
class Buffer {
 public:
  explicit Buffer(size_t bytes)
      : data_(bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr) {}
  ~Buffer() { std::free(data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return data_; }

 private:
  void* data_;
};

Dims ToDims(ffi::Span<const int64_t> span) { return Dims(span.begin(), span.end()); }

// oneDNN's data type for the element types it computes here (undef for the others).
DataType ToDataType(ffi::DataType type) {
  switch (type) {
    case ffi::F32:
      return DataType::f32;
    case ffi::BF16:
      return DataType::bf16;
    default:
      return DataType::undef;
  }
}

const char* Name(DataType type) {
  switch (type) {
    case DataType::f32:
      return "float32";
    case DataType::bf16:
      return "bfloat16";
    default:
      return "another type";
  }
}

struct Operand {
  void* data;
  Dims dims;
  DataType type;
};

Operand Of(const ffi::AnyBuffer& buffer) {
  return {buffer.untyped_data(), ToDims(buffer.dimensions()), ToDataType(buffer.element_type())};
}

ffi::Error Convolution(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                       int64_t kind, ffi::Span<const int64_t> strides,
                       ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                       ffi::Span<const int64_t> dilation, int64_t groups,
                       int64_t local_devices) {
  // XLA:CPU may run the programs of all local devices at once, and OpenMP gives each thread
  // that calls oneDNN a team of all cores: share them out instead (this thread's setting, for
  // plans it makes and runs; the number is the same for every call of a process).
  static const int cores = omp_get_max_threads();  // OMP_NUM_THREADS, or the CPUs usable
  omp_set_num_threads(static_cast<int>(std::max<int64_t>(1, cores / local_devices)));
  if (kind < kForward || kind > kKernelGrad) {
    return ffi::Error::InvalidArgument("jaxcnn_onednn_conv: kind must be 0, 1 or 2");
  }
  // Which buffer holds x, w and y depends on the kind (see the top of this file).
  const Operand first = Of(a), second = Of(b), result = Of(*out);
  const Operand& x = kind == kInputGrad ? result : first;
  const Operand& w = kind == kKernelGrad ? result : second;
  const Operand& y = kind == kForward ? result : (kind == kInputGrad ? first : second);
  if (x.type == DataType::undef || w.type != x.type || y.type != x.type) {
    return ffi::Error::InvalidArgument(
        std::string("jaxcnn_onednn_conv: operands must be all float32 or all bfloat16, not x ") +
        Name(x.type) + ", w " + Name(w.type) + ", y " + Name(y.type));
  }
  const Geometry geometry{x.dims,         w.dims,         y.dims,           ToDims(strides),
                          ToDims(pad_lo), ToDims(pad_hi), ToDims(dilation), groups,
                          x.type};
  try {
    const std::shared_ptr<Plan> plan = GetPlan(kind, geometry);
    auto& engine = Engine();
    dnnl::stream stream(engine);
    const Buffer scratch(plan->scratchpad.get_size());
    const bool reorder = plan->kernel != plan->user_kernel;
    const Buffer kernel_copy(reorder ? plan->kernel.get_size() : 0);
    dnnl::memory user_kernel(plan->user_kernel, engine, w.data);
    dnnl::memory kernel = reorder ? dnnl::memory(plan->kernel, engine, kernel_copy.data())
                                  : user_kernel;
    dnnl::memory scratchpad(plan->scratchpad, engine, scratch.data());
    if (kind == kForward) {
      if (reorder) plan->kernel_reorder.execute(stream, user_kernel, kernel);
      plan->primitive.execute(stream, {{DNNL_ARG_SRC, {plan->src, engine, x.data}},
                                       {DNNL_ARG_WEIGHTS, kernel},
                                       {DNNL_ARG_DST, {plan->dst, engine, y.data}},
                                       {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else if (kind == kInputGrad) {
      if (reorder) plan->kernel_reorder.execute(stream, user_kernel, kernel);
      plan->primitive.execute(stream, {{DNNL_ARG_DIFF_DST, {plan->dst, engine, y.data}},
                                       {DNNL_ARG_WEIGHTS, kernel},
                                       {DNNL_ARG_DIFF_SRC, {plan->src, engine, x.data}},
                                       {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else {
      plan->primitive.execute(stream, {{DNNL_ARG_SRC, {plan->src, engine, x.data}},
                                       {DNNL_ARG_DIFF_DST, {plan->dst, engine, y.data}},
                                       {DNNL_ARG_DIFF_WEIGHTS, kernel},
                                       {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (reorder) plan->kernel_reorder.execute(stream, kernel, user_kernel);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("jaxcnn_onednn_conv: oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConv, Convolution,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("kind")
                                  .Attr<ffi::Span<const int64_t>>("strides")
                                  .Attr<ffi::Span<const int64_t>>("pad_lo")
                                  .Attr<ffi::Span<const int64_t>>("pad_hi")
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<int64_t>("groups")
                                  .Attr<int64_t>("local_devices"));
