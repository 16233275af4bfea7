// The one kernel sluice-loadgen launches: sluice_spin(u64 ns_per_block) spins each block on
// %globaltimer for ns_per_block nanoseconds. A real GPU JITs this PTX; the fake driver runs every
// entry named sluice_spin* as its built-in `spin` op (ns_per_block x waves of device time), so the
// same program measures the same thing on both. tests/integration/tools checks it with ptxas.
#pragma once

namespace sluice::loadgen {

inline constexpr const char* kSpinKernel = "sluice_spin";

inline constexpr const char* kSpinPtx = R"(//
// sluice-loadgen: spin for a given time per block
//
.version 7.8
.target sm_75
.address_size 64

.visible .entry sluice_spin(
	.param .u64 sluice_spin_param_0
)
{
	.reg .pred 	%p<2>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [sluice_spin_param_0];
	mov.u64 	%rd2, %globaltimer;
	add.s64 	%rd3, %rd2, %rd1;
$L__spin:
	mov.u64 	%rd4, %globaltimer;
	setp.lt.u64 	%p1, %rd4, %rd3;
	@%p1 bra 	$L__spin;
	ret;
}
)";

}  // namespace sluice::loadgen
