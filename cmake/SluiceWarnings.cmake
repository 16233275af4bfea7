# Warnings for every sluice target. Applied per target with sluice_warnings(target).
# -Wnull-dereference is left out: GCC 12 reports false positives inside std::variant at -O2 and above.
function(sluice_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
    -Woverloaded-virtual -Wformat=2 -Wimplicit-fallthrough
    $<$<BOOL:${SLUICE_WERROR}>:-Werror>)
endfunction()

# Same warnings for C sources (the fake driver's helpers, eBPF user space).
function(sluice_c_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra $<$<BOOL:${SLUICE_WERROR}>:-Werror>)
endfunction()
