// Data parallel training with c10d; see distributed.h.
#define USE_C10D_GLOO 1
#include "train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

#include "core/error.h"

namespace unime::train {

struct Distributed::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

static int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  if (!v || !*v) return def;
  try {
    return std::stoi(v);
  } catch (...) {
    throw Error(str("environment variable ", name, "='", v, "' is not an integer"));
  }
}

std::unique_ptr<Distributed> Distributed::from_env() {
  auto d = std::make_unique<Distributed>();
  d->world_ = env_int("WORLD_SIZE", 1);
  d->rank_ = env_int("RANK", 0);
  UNIME_CHECK(d->world_ >= 1 && d->rank_ >= 0 && d->rank_ < d->world_, "RANK=", d->rank_,
              " WORLD_SIZE=", d->world_, ": RANK must be in [0, WORLD_SIZE)");
  if (d->world_ == 1) return d;
  const char* addr = std::getenv("MASTER_ADDR");
  const std::string host = addr && *addr ? addr : "127.0.0.1";
  const int port = env_int("MASTER_PORT", 29500);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  so.isServer = d->rank_ == 0;
  so.numWorkers = d->world_;
  so.timeout = std::chrono::seconds(300);
  d->impl_ = std::make_unique<Impl>();
  try {
    d->impl_->store = c10::make_intrusive<c10d::TCPStore>(host, so);
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(1800));
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    opts->threads = 2;
    d->impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(d->impl_->store, d->rank_, d->world_, opts);
  } catch (const c10::Error& e) {
    throw Error(str("data parallel rendezvous at ", host, ":", port, " (rank ", d->rank_, " of ",
                    d->world_, ") failed: ", e.what_without_backtrace()));
  }
  return d;
}

Distributed::~Distributed() = default;

torch::Tensor Distributed::all_gather_rows(const torch::Tensor& local) {
  if (world_ == 1) return local;
  auto src = local.detach().contiguous();
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < world_; ++r) out[0].push_back(torch::empty_like(src));
  std::vector<torch::Tensor> in{src};
  impl_->pg->allgather(out, in)->wait();
  out[0][rank_] = local;  // our rows keep their autograd history
  return torch::cat(out[0], 0);
}

void Distributed::average_gradients(const std::vector<torch::Tensor>& params) {
  if (world_ == 1) return;
  // one flat buffer: a single allreduce per step
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    grads.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}, p.options()));
  std::vector<torch::Tensor> flat{torch::cat(grads)};
  impl_->pg->allreduce(flat)->wait();
  flat[0].div_(world_);
  int64_t off = 0;
  for (const auto& p : params) {
    auto g = flat[0].narrow(0, off, p.numel()).view(p.sizes());
    if (p.grad().defined()) p.mutable_grad().copy_(g);
    else p.mutable_grad() = g.clone();
    off += p.numel();
  }
}

void Distributed::barrier() {
  if (world_ > 1) impl_->pg->barrier()->wait();
}

}  // namespace unime::train
