#include "models/transformer.h"

namespace clinic {

torch::jit::Module TransformerImpl::to_torchscript() const {
  TORCH_CHECK(false, "TorchScript export is not implemented yet");
}

}  // namespace clinic
