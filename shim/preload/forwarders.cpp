// Every exported entry point of libsluice.so, generated from driver_symbols.inc and queued_ops.inc
// (shim/gen/gen_driver_api.py). The treatment of each comes from shim/gen/api_policy.txt; see
// hooks.h for what each one does.
#include <tuple>

#include "hooks.h"

#define SLUICE_EXPORT extern "C" __attribute__((visibility("default")))
#define SLUICE_UNPAREN(...) __VA_ARGS__
#define SLUICE_PREPEND_COMMA(...) __VA_OPT__(, ) __VA_ARGS__

namespace sluice::shim::preload {

// The fallback of every envelope: the caller's call, unchanged, to the real driver.
#define SLUICE_STRAIGHT(args) [&](auto sluice_real_) { return sluice_real_ args; }

#define SLUICE_EMIT_FORWARD(name, stream, params, args)                                          \
  SLUICE_EXPORT CUresult name params {                                                           \
    return guarded(                                                                              \
        Sym::name, &DriverApi::name, [&](Runtime&, auto sluice_fn_) { return sluice_fn_ args; }, \
        SLUICE_STRAIGHT(args));                                                                  \
  }
#define SLUICE_EMIT_META SLUICE_EMIT_FORWARD

#define SLUICE_EMIT_SYNC(name, stream, params, args)                                   \
  SLUICE_EXPORT CUresult name params {                                                 \
    return guarded(                                                                    \
        Sym::name, &DriverApi::name,                                                   \
        [&](Runtime& sluice_rt_, auto sluice_fn_) {                                    \
          sluice_rt_.engine->drain_all();                                              \
          const CUresult sluice_result_ = sluice_fn_ args;                             \
          if constexpr (ends_context(sym_base(Sym::name))) {                           \
            sluice_rt_.engine->contexts_changed();                                     \
          }                                                                            \
          return sluice_result_;                                                       \
        },                                                                             \
        SLUICE_STRAIGHT(args));                                                        \
  }

// (Names in the envelopes start with sluice_ so that they never shadow a driver parameter.)
// `none` names the legacy stream for the few unmanaged calls without a stream argument. Unmanaged
// calls are counted as launch paths sluice does not queue; ordered ones (mapping graphics resources)
// are not launches and are not counted.
#define SLUICE_EMIT_AFTER_STREAM(name, stream, params, args, counted)               \
  SLUICE_EXPORT CUresult name params {                                            \
    [[maybe_unused]] const CUstream none = nullptr;                               \
    return guarded(                                                               \
        Sym::name, &DriverApi::name,                                              \
        [&](Runtime& sluice_rt_, auto sluice_fn_) {                               \
          if (counted) sluice_rt_.engine->stats().count_unmanaged(Sym::name);     \
          return sluice_rt_.engine->run_ordered(abi_of(Sym::name), stream,        \
                                                [&] { return sluice_fn_ args; }); \
        },                                                                        \
        SLUICE_STRAIGHT(args));                                                   \
  }
#define SLUICE_EMIT_UNMANAGED(name, stream, params, args) \
  SLUICE_EMIT_AFTER_STREAM(name, stream, params, args, true)
#define SLUICE_EMIT_ORDERED(name, stream, params, args) \
  SLUICE_EMIT_AFTER_STREAM(name, stream, params, args, false)

#define SLUICE_EMIT_HOOK(name, stream, params, args)                                  \
  SLUICE_EXPORT CUresult name params {                                                \
    return guarded(                                                                   \
        Sym::name, &DriverApi::name,                                                  \
        [&](Runtime& sluice_rt_, auto sluice_fn_) {                                   \
          return hooked<Sym::name>(sluice_rt_, sluice_fn_ SLUICE_PREPEND_COMMA args); \
        },                                                                            \
        SLUICE_STRAIGHT(args));                                                       \
  }

#define SLUICE_EMIT_QUEUE(name, stream, params, args)  // defined from queued_ops.inc below

#define SLUICE_SYM(name, treatment, stream, params, args) \
  SLUICE_EMIT_##treatment(name, stream, params, args)
#include "driver_symbols.inc"
#undef SLUICE_SYM

#define SLUICE_QUEUED(name, op_kind, abi, stream, payload_bytes, params, args)        \
  SLUICE_EXPORT CUresult name params {                                                \
    return guarded(                                                                   \
        Sym::name, &DriverApi::name,                                                  \
        [&](Runtime& sluice_rt_, auto sluice_fn_) {                                   \
          OpDesc sluice_desc_;                                                        \
          sluice_desc_.kind = OpKind::op_kind;                                        \
          sluice_desc_.bytes = payload_bytes;                                         \
          return sluice_rt_.engine->enqueue(StreamAbi::abi, sluice_desc_, sluice_fn_, \
                                            SLUICE_UNPAREN args);                     \
        },                                                                            \
        SLUICE_STRAIGHT(args));                                                       \
  }
#include "queued_ops.inc"
#undef SLUICE_QUEUED

void* own_entry_point(Sym sym) noexcept {
  static void* const kOwn[] = {
#define SLUICE_SYM(name, treatment, stream, params, args) reinterpret_cast<void*>(&::name),
#include "driver_symbols.inc"
#undef SLUICE_SYM
  };
  return kOwn[static_cast<std::size_t>(sym)];
}

}  // namespace sluice::shim::preload
