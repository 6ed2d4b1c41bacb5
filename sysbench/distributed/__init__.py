"""Data-parallel training over MPI: gradient-exchange schedules, the MPI executor, the
self-launching launcher, and a discrete-event simulator driven by the same schedule code.

    costs       alpha-beta all-reduce costs (ring, tree) and the least-squares fit of alpha, beta
    schedules   how gradients are cut into all-reduce messages and when each is issued (a Plan)
    simulator   executes a Plan against a cost model: timeline, step time, exposed communication
    exchange    executes a Plan over real MPI ranks with non-blocking Iallreduce
    worker      the per-rank entry point (`python -m sysbench.distributed.worker SPEC OUTDIR`)
    supervise   each rank's parent: records how the rank ended (which one a signal killed)
    launcher    `mpiexec -n R python -m sysbench.distributed.worker ...` with a timeout and clear errors
"""
