"""The resonance merge's two passes as fused C loops, built with the system C compiler at first use.

Why: in torch each elementwise step (a dot, ``add_``, ``sign``, ``add_``) is one more trip of
every input through the cache hierarchy, so the merge cost about five reads of the K x d stack
against the mean's two. Here pass 1 reads each input once (``g.g`` and ``g.v`` together) and
pass 2 reads each input once (clipped sum and vote in one loop over a block that stays in L1),
then finishes the block (gate, elect, centre update, gain, norms) before moving on.

The result equals the torch formula up to float rounding (float32 values, float64 sums; the
exactness test in tests/layers/merge states the tolerance). Only float32, contiguous, CPU
tensors take this path; :func:`kernels` returns None (and the caller uses torch) when no C
compiler is found, the build fails, or ``SWARM_NATIVE_MERGE=0``. The shared library is cached
under ``$SWARM_KERNEL_CACHE`` (default ``~/.cache/swarm/kernels``), keyed by the source, the
flags and the CPU, so a cache shared between different machines never loads a foreign build.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#include <math.h>
#define BLOCK 2048  /* floats per block: the two accumulators (16 KiB) stay in L1 across the K inputs */
#define SIGN(x) ((float)(((x) > 0.0f) - ((x) < 0.0f)))  /* sign, 0 at 0; branch-free so that it vectorizes */

/* pass 1: gg[j] += sum g_j^2, gv[j] += sum g_j v. float32 sums within a block (as torch.dot's), float64
   across blocks; v's block is reused by every input. A NaN/Inf input makes gg[j] non-finite. */
void rz_norms(int k, const float *const *g, const float *v, long n, int centered, double *gg, double *gv) {
  for (long lo = 0; lo < n; lo += BLOCK) {
    long hi = lo + BLOCK < n ? lo + BLOCK : n;
    for (int j = 0; j < k; j++) {
      const float *x = g[j];
      float a = 0.0f, b = 0.0f;
      if (centered) {
#pragma omp simd reduction(+:a, b)
        for (long i = lo; i < hi; i++) { a += x[i] * x[i]; b += x[i] * v[i]; }
      } else {
#pragma omp simd reduction(+:a)
        for (long i = lo; i < hi; i++) a += x[i] * x[i];
      }
      gg[j] += a;
      gv[j] += b;
    }
  }
}

/* pass 2, block by block: hat = sum_j coef_j g_j (+ vcoef v), vote = sum_j w_j sign(g_j); then per
   coordinate the gate, elect, the centre update v <- momentum v + (1 - momentum) hat and u = hat G.
   stats += (sum |vote|, gated, kept, sum hat^2, sum u^2). */
void rz_combine(int k, const float *const *g, const float *coef, const float *w, long n, float *u, float *v,
                int centered, float vcoef, float lift, float slope, float leak, int elect, float momentum,
                double *stats) {
  float hb[BLOCK], vb[BLOCK];
  double agree = 0, gated = 0, kept = 0, nh = 0, nu = 0;
  for (long lo = 0; lo < n; lo += BLOCK) {
    long m = lo + BLOCK < n ? BLOCK : n - lo;
    for (long i = 0; i < m; i++) { hb[i] = 0.0f; vb[i] = 0.0f; }
    int j = 0;
    for (; j + 4 <= k; j += 4) {  /* four inputs per sweep: the running sums stay in registers, same order */
      const float *x0 = g[j] + lo, *x1 = g[j + 1] + lo, *x2 = g[j + 2] + lo, *x3 = g[j + 3] + lo;
      const float c0 = coef[j], c1 = coef[j + 1], c2 = coef[j + 2], c3 = coef[j + 3];
      const float w0 = w[j], w1 = w[j + 1], w2 = w[j + 2], w3 = w[j + 3];
#pragma omp simd
      for (long i = 0; i < m; i++) {
        float h = hb[i], s = vb[i];
        h += c0 * x0[i]; s += w0 * SIGN(x0[i]);
        h += c1 * x1[i]; s += w1 * SIGN(x1[i]);
        h += c2 * x2[i]; s += w2 * SIGN(x2[i]);
        h += c3 * x3[i]; s += w3 * SIGN(x3[i]);
        hb[i] = h; vb[i] = s;
      }
    }
    for (; j < k; j++) {
      const float *x = g[j] + lo;
      const float c = coef[j], wj = w[j];
#pragma omp simd
      for (long i = 0; i < m; i++) {
        hb[i] += c * x[i];
        vb[i] += wj * SIGN(x[i]);
      }
    }
    float *vo = v + lo, *uo = u + lo;
#pragma omp simd reduction(+:agree, gated, kept, nh, nu)
    for (long i = 0; i < m; i++) {
      float hat = centered ? hb[i] + vcoef * vo[i] : hb[i];
      float av = fabsf(vb[i]);
      float gain = av * slope + lift;
      int passed = gain >= 1.0f;
      agree += av;
      gated += passed ? 0.0 : 1.0;
      if (elect) {
        int keep = !passed || hat * vb[i] > 0.0f;
        kept += keep ? 1.0 : 0.0;
        hat = keep ? hat : 0.0f;
      }
      nh += (double)hat * hat;
      vo[i] = momentum * vo[i] + (1.0f - momentum) * hat;
      float out = hat * (passed ? gain : leak);
      uo[i] = out;
      nu += (double)out * out;
    }
  }
  stats[0] += agree; stats[1] += gated; stats[2] += kept; stats[3] += nh; stats[4] += nu;
}
"""
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fPIC", "-shared"]

_loaded: ctypes.CDLL | None = None
_tried = False


def _cpu_id() -> str:
    """What the build's ``-march=native`` depends on: the CPU model and flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return platform.machine() + "\n".join(lines)
    except OSError:
        return platform.machine() + platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("SWARM_KERNEL_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "swarm" / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        return Path(tempfile.gettempdir())


def _build() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    key = hashlib.sha256("\0".join([SOURCE, cc, *FLAGS, _cpu_id()]).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"resonance-{key}.so"
    if not lib.exists():
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "resonance.c", Path(tmp) / "resonance.so"
            src.write_text(SOURCE)
            done = subprocess.run([cc, *FLAGS, str(src), "-o", str(out), "-lm"], capture_output=True, timeout=120)
            if done.returncode != 0:
                return None
            staged = lib.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(out, staged)
            os.replace(staged, lib)  # atomic: concurrent builders never load a half-written file
    dll = ctypes.CDLL(str(lib))
    c_int, c_long, c_float, ptr = ctypes.c_int, ctypes.c_long, ctypes.c_float, ctypes.c_void_p
    dll.rz_norms.argtypes = [c_int, ptr, ptr, c_long, c_int, ptr, ptr]
    dll.rz_combine.argtypes = [c_int, ptr, ptr, ptr, c_long, ptr, ptr, c_int, c_float, c_float, c_float, c_float,
                               c_int, c_float, ptr]
    dll.rz_norms.restype = dll.rz_combine.restype = None
    return dll


def kernels() -> ctypes.CDLL | None:
    """The loaded library (``rz_norms``, ``rz_combine``), or None where it cannot be used (see module doc)."""
    global _loaded, _tried
    if os.environ.get("SWARM_NATIVE_MERGE", "1") == "0":
        return None
    if not _tried:
        _tried = True
        try:
            _loaded = _build()
        except (OSError, subprocess.SubprocessError):
            _loaded = None
    return _loaded
