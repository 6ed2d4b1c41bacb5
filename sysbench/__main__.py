"""`python -m sysbench` and the `sysbench` command."""
import os


def main() -> None:
    # OpenBLAS starts one thread per core when numpy is imported (0.1 s of CPU here, as much as
    # the rest of numpy's import). Start it with one: the runner raises the BLAS pool to each
    # case's --threads through threadpoolctl, which grows OpenBLAS's pool on demand. A user's own
    # setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # workers that import the main module (mpi4py.futures, spawn) run nothing
    main()
