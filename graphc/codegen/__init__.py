"""Native code generation with llvmlite: loop IR to LLVM IR, JIT, BLAS,
threads, and `llvm_math`, the vectorizable transcendental functions (exp,
log, tanh, sin, pow, erf, ...) emitted as plain IR so loops that use them
still vectorize. Import the submodules directly."""
