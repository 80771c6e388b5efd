#include <mutex>

#include "framework/optim/optimizers.h"
#include "framework/optim/schedule.h"
#include "framework/train/loss.h"
#include "models/residual.h"
#include "models/transformer.h"

namespace clinic {

void register_builtin_models() {
  model_registry().add("transformer",
                       [](const ModelConfig& c, const VocabInfo& v) {
                         return std::make_shared<TransformerImpl>(c, v);
                       });
}

// Defined here, in the library that sees both framework/ and models/, so one
// call registers everything a recipe can name.
void register_builtins() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_builtin_optimizers();
    register_builtin_schedules();
    register_builtin_losses();
    register_builtin_residuals();
    register_builtin_models();
  });
}

}  // namespace clinic
