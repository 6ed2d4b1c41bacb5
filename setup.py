"""Build the Cython kernels in kernels/*.pyx as sysbench._kernels.<name>.

OpenMP is used when the compiler accepts -fopenmp (checked by compiling a tiny program);
otherwise the kernels build serially and `prange` runs as a plain loop.
`SYSBENCH_ONLY=name1,name2` builds only those kernels (handy while working on one).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent


def compiler_accepts(flags):
    """True when the C compiler builds and links a trivial OpenMP program with `flags`."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    code = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(code)
        cmd = cc.split() + [str(src), "-o", str(Path(tmp) / "probe")] + flags
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


OPENMP = os.environ.get("SYSBENCH_NO_OPENMP") is None and compiler_accepts(["-fopenmp"])
# -ffp-contract=off: no multiply-add is fused unless the code asks for it (fmaf / intrinsics),
# so the accumulation order written in the kernels is the order the CPU executes.
COMPILE = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
LINK = []
if OPENMP:
    COMPILE.append("-fopenmp")
    LINK.append("-fopenmp")

only = {n for n in os.environ.get("SYSBENCH_ONLY", "").split(",") if n}
extensions = []
for pyx in sorted((HERE / "kernels").glob("*.pyx")):
    if only and pyx.stem not in only:
        continue
    extensions.append(
        Extension(
            f"sysbench._kernels.{pyx.stem}",
            [f"kernels/{pyx.name}"],
            include_dirs=[numpy.get_include(), "kernels"],
            extra_compile_args=COMPILE,
            extra_link_args=LINK,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
    ),
)
