#pragma once
// A World over PyTorch's c10d: rendezvous through a TCPStore (rank 0 serves
// it), collectives in a Gloo process group (CPU). Gradients are summed in
// flat buckets, each all-reduced as soon as the backward pass has produced
// all of its gradients (tensor hooks), so communication overlaps the rest of
// the backward pass (PyTorch DDP's scheme: buckets in reverse parameter
// order, launched in bucket order so every rank issues the same sequence).
#include <chrono>
#include <memory>

#include "framework/distributed/launch.h"
#include "framework/distributed/world.h"

namespace clinic {

/// Whether this build has c10d's Gloo backend (LibTorch with distributed
/// support and the Gloo headers, libgloo-dev on Debian).
bool gloo_available();

/// A World of `env.world_size` processes; throws DataError when the others
/// do not join within `timeout`, or when this build has no Gloo.
std::unique_ptr<World> make_gloo_world(const DistEnv& env, std::chrono::milliseconds timeout,
                                       int64_t bucket_bytes = 25 << 20);

}  // namespace clinic
