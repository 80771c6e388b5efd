#pragma once
// A World over PyTorch's c10d: rendezvous through a TCPStore (rank 0 serves
// it), collectives in a c10d process group, Gloo (CPU) or NCCL (CUDA).
// Gradients are summed in flat buckets, each all-reduced as soon as the
// backward pass has produced all of its gradients (tensor hooks), so
// communication overlaps the rest of the backward pass (PyTorch DDP's scheme:
// buckets in reverse parameter order, launched in bucket order so every rank
// issues the same sequence).
#include <chrono>
#include <memory>
#include <string>

#include "framework/distributed/launch.h"
#include "framework/distributed/world.h"

namespace clinic {

/// Whether this build has c10d's `backend` ("gloo": LibTorch with
/// distributed support and the Gloo headers, libgloo-dev on Debian; "nccl":
/// a CUDA LibTorch 2.x with NCCL's header).
bool backend_available(const std::string& backend);

/// train.dist_backend resolved: "auto" is NCCL when the job trains on CUDA
/// (train.device cuda, or auto with a CUDA device), Gloo otherwise.
std::string resolve_backend(const std::string& configured, const std::string& train_device);

/// A World of `env.world_size` processes; throws DataError when the others
/// do not join within `timeout`, ConfigError when this build lacks `backend`.
/// NCCL ranks communicate from CUDA device `env.local_rank` (which becomes
/// this process's current device); CPU tensors handed to it are staged there.
std::unique_ptr<World> make_c10d_world(const DistEnv& env, const std::string& backend,
                                       std::chrono::milliseconds timeout,
                                       int64_t bucket_bytes = 25 << 20);

}  // namespace clinic
