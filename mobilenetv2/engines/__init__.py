"""What runs the network: the NumPy kernels (the reference twin of every C kernel), the C extension
and its validated entry points (native, c_kernels), the machine's caches and cores (machine), the
thread pool (pool) and the lowering of a model to a plan of fused C calls (plan)."""
