"""The numpy training engine shared by the training workloads (train_recompute, train_distributed).

Modules: layers (Linear, ReLU, GELU, Conv2d by im2col, MaxPool2d, Flatten), losses
(softmax cross-entropy, MSE), optim (SGD, blas_threads), network (Sequential chain and the
mlp / cnn / from_specs / build builders), memory (the one MemoryTracker), buffers
(BufferPool: buffers reused between steps), recompute (schedules: store_all, full_recompute,
checkpoint_every, budget; split into schedules, chain, solvers and interpreter).

One training step by hand, layer by layer (float32, deterministic by seed):

    from sysbench.training import network, optim
    net = network.mlp(layers=4, width=256, batch=32, seed=0)   # or network.cnn(...), network.build(keys)
    x, target = net.make_batch(seed=0)
    acts, saved = [x], []
    for i in range(net.n):                          # forward: a_{i+1}, saved_i from a_i
        y, s = net.forward_layer(i, acts[-1])
        acts.append(y); saved.append(s)
    loss, grad = net.loss_and_grad(acts[-1], target)  # loss and d loss / d a_n
    grads = [None] * net.n
    for i in reversed(range(net.n)):                # backward, top layer first
        grad, grads[i] = net.backward_layer(i, grad, saved[i], need_input_grad=i > 0)
        # grads[i] is {"weight": ..., "bias": ...} (empty for ReLU etc.): ready to all-reduce
    optim.SGD(lr=0.01).step(net.layers, grads)        # in place, fixed order

`saved` is built from a layer's input only (layer.saved_of(x) gives it without a forward).
Each layer's params live in `net.layers[i].params` (dict name -> float32 array, PyTorch
layouts). Gradient byte sizes: `p.nbytes`. With a schedule and memory accounting instead:

    from sysbench.training import recompute
    result = recompute.train_step(net, x, target, "budget=1/2", optim.SGD(lr=0.01),
                                  pool=recompute.BufferPool())  # pass the same pool to every step
    result.loss, result.grads, result.tracker.peak_activation

numpy's BLAS threads: `with optim.blas_threads(n): ...`.
"""
