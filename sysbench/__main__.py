from .cli import main

if __name__ == "__main__":  # workers that import the main module (mpi4py.futures, spawn) run nothing
    main()
