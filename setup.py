"""Build the Cython kernels in kernels/*.pyx as sysbench._kernels.<name>.

The Cython directives of every kernel are set here, once. Environment switches:
* `SYSBENCH_DEBUG=1`: bounds and initialisation checks on, `-O0 -g` (for a debugger or to
  hunt an out-of-bounds index; the numerics are the same, the kernels much slower).
* `SYSBENCH_NO_OPENMP=1`: a serial build (`prange` runs as a plain loop).
* `SYSBENCH_ONLY=name1,name2`: build only those kernels (handy while working on one).
OpenMP is used when the C compiler can compile, link and run a tiny OpenMP program;
otherwise the build says why in one line and makes serial kernels. -falign-loops=32 is
added where the compiler takes it without a warning.
"""
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _first_line(completed):
    lines = (completed.stderr or completed.stdout or "").strip().splitlines()
    if lines:
        return lines[0][:120]
    if completed.returncode < 0:
        return f"killed by signal {-completed.returncode}"
    return f"exit status {completed.returncode}"


def _c_compiler():
    """The C compiler command the build uses, as a list."""
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def openmp_probe(flags=("-fopenmp",)):
    """(usable, why not): can the C compiler compile, link and run an OpenMP program?"""
    if _flag("SYSBENCH_NO_OPENMP"):
        return False, "SYSBENCH_NO_OPENMP is set"
    cc = _c_compiler()
    code = ("#include <omp.h>\n"
            "int main(void) {\n"
            "    int n = 0;\n"
            "#pragma omp parallel reduction(+ : n)\n"
            "    n += 1;\n"
            "    return n >= 1 && omp_get_max_threads() >= 1 ? 0 : 1;\n"
            "}\n")
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, exe = (str(Path(tmp) / name) for name in ("probe.c", "probe.o", "probe"))
        Path(src).write_text(code)
        steps = (("compile", cc + ["-c", src, "-o", obj, *flags]),
                 ("link", cc + [obj, "-o", exe, *flags]),
                 ("run", [exe]))
        for step, cmd in steps:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as exc:
                return False, f"{step} failed: {exc}"
            if done.returncode != 0:
                return False, f"{step} failed: {_first_line(done)}"
    return True, ""


def compiler_accepts(flag):
    """Whether the C compiler compiles a trivial file with `flag` without a warning."""
    cc = _c_compiler()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "flag.c"
        src.write_text("int main(void) { return 0; }\n")
        cmd = cc + ["-Werror", flag, "-c", str(src), "-o", str(Path(tmp) / "flag.o")]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


DEBUG = _flag("SYSBENCH_DEBUG")
OPENMP, why_not = openmp_probe()
if not OPENMP:
    print(f"sysbench: OpenMP not available ({why_not}); building serial kernels",
          file=sys.stderr)

DIRECTIVES = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": False,       # no kernel indexes from the end
    "cdivision": True,         # C division and modulo: the kernels' index arithmetic
    "initializedcheck": DEBUG,
}
# -ffp-contract=off: no multiply-add is fused unless the code asks for it (fmaf / intrinsics),
# so the accumulation order written in the kernels is the order the CPU executes.
# -falign-loops=32: a short hot loop no longer straddles a 64-byte line depending on the code
# before it (tconv's strided scatter loop ran 12% slower on Zen 4 after an unrelated function
# moved it by 32 bytes).
COMPILE = (["-O0", "-g"] if DEBUG else ["-O3"]) + ["-ffp-contract=off", "-fno-math-errno"]
if compiler_accepts("-falign-loops=32"):
    COMPILE.append("-falign-loops=32")
LINK = ["-g"] if DEBUG else []
if OPENMP:
    COMPILE.append("-fopenmp")
    LINK.append("-fopenmp")
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("SYSBENCH_DEBUG", int(DEBUG))]

# The generated C depends on the directives and the objects on the flags, neither of which
# a timestamp sees: a kernel is regenerated (and so recompiled) when its build mode changes.
MODE = f"debug={int(DEBUG)} openmp={int(OPENMP)} flags={' '.join(COMPILE)}"
STAMPS = HERE / "build" / "sysbench-mode"


def mode_changed(name):
    stamp = STAMPS / name
    changed = not stamp.exists() or stamp.read_text() != MODE
    STAMPS.mkdir(parents=True, exist_ok=True)
    stamp.write_text(MODE)
    return changed


only = {n for n in os.environ.get("SYSBENCH_ONLY", "").split(",") if n}
modules = []
for pyx in sorted((HERE / "kernels").glob("*.pyx")):
    if only and pyx.stem not in only:
        continue
    extension = Extension(
        f"sysbench._kernels.{pyx.stem}",
        [f"kernels/{pyx.name}"],
        include_dirs=[numpy.get_include(), "kernels"],
        extra_compile_args=COMPILE,
        extra_link_args=LINK,
        define_macros=MACROS,
    )
    modules += cythonize([extension], compiler_directives=DIRECTIVES,
                         force=mode_changed(pyx.stem))

setup(ext_modules=modules)
