// FunctionRef<R(Args...)>: a non-owning reference to a callable, two words wide. The engine takes
// the calls it may make on the caller's thread as FunctionRefs, so the fast path neither allocates
// nor instantiates the engine's logic once per driver entry point.
//
// The referenced callable must outlive the FunctionRef (pass temporaries as arguments only).
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace sluice::shim {

template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef> &&
                                                    std::is_invocable_r_v<R, F&, Args...>>>
  FunctionRef(F&& f) noexcept  // NOLINT(google-explicit-constructor)
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace sluice::shim
