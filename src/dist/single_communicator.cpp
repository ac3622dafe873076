// The communicator of a single process: world size 1, every collective is the identity.
#include <memory>

#include "lizard/core/error.h"
#include "lizard/dist/communicator.h"

namespace lizard::dist {

namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
};

class SingleCommunicator final : public Communicator {
 public:
  explicit SingleCommunicator(Device device) : device_(device) {}
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  Device device() const override { return device_; }
  const char* backend() const override { return "single"; }

  // The checks match the distributed backends so a bug shows up on one process too.
  void all_reduce_sum(Tensor& t) override { check(t, "all_reduce_sum", true); }
  std::unique_ptr<Work> all_reduce_sum_async(Tensor& t) override {
    check(t, "all_reduce_sum_async", true);
    return std::make_unique<DoneWork>();
  }
  void broadcast(Tensor& t, int root) override {
    check(t, "broadcast", false);
    LZ_CHECK(root == 0, "broadcast: root ", root, " is not a rank of a world of size 1");
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    if (!check_all_gather(in, out)) out.copy_(in.view(out.shape()));
    return std::make_unique<DoneWork>();
  }
  void barrier() override {}
  std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& mine) override {
    return {mine};
  }

 private:
  void check(const Tensor& t, const char* op, bool float_only) const {
    LZ_CHECK(t.defined(), op, ": undefined tensor");
    LZ_CHECK(t.is_contiguous(), op, ": ", t.desc(), " must be contiguous");
    LZ_CHECK(t.device() == device_, op, ": ", t.desc(), " is not on the communicator's device ",
             device_.str());
    if (float_only) {
      const DType d = t.dtype();
      LZ_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F64, op, ": ", t.desc(),
               " must be f32, bf16 or f64");
    }
  }
  Device device_;
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator(Device device) {
  return std::make_unique<SingleCommunicator>(device);
}

}  // namespace lizard::dist
