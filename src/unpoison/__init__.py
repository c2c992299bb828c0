"""unpoison: defend image classifiers against data poisoning."""

import os as _os

# Idle OpenMP threads sleep instead of spinning, unless the user chose otherwise. Read when torch loads its OpenMP
# runtime, so it must be set before anything imports torch (the CLI imports this package first). Measured on 2 cores
# (benchmarks/omp_wait_speed.py, docs/benchmarks.md): alone it costs nothing (a diffusion-UNet forward 0.214 s
# spinning vs 0.207 s sleeping, a training step 0.654 vs 0.641 s); with a second job on the same cores the spinning
# threads starve the working ones, and sleeping makes each job 2.31x (UNet) and 1.44x (training) faster.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
