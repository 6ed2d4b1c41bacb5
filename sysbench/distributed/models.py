"""Layer gradient sizes and FLOPs of the networks the simulator sweeps (no weights needed).

resnet50: torchvision's ResNet-50 at 224x224 (25,557,032 parameters): every convolution with
its batch norm (2 parameters per channel) is one layer, the final fully connected layer the
last; FLOPs are 2 multiply-adds per MAC, backward twice the forward.
"""
from __future__ import annotations


def resnet50(image: int = 224, classes: int = 1000) -> tuple[list, list]:
    """(parameters per layer, forward FLOPs per sample per layer), layer 0 = the stem."""
    params, flops = [], []

    def conv(cin, cout, k, out_hw):
        params.append(cin * cout * k * k + 2 * cout)
        flops.append(2 * cin * cout * k * k * out_hw * out_hw)

    size = (image + 2 * 3 - 7) // 2 + 1            # stem: 7x7 stride 2
    conv(3, 64, 7, size)
    size = (size + 2 - 3) // 2 + 1                 # max-pool 3x3 stride 2
    cin = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            out = (size - 1) // stride + 1
            conv(cin, width, 1, size)
            conv(width, width, 3, out)
            conv(width, width * 4, 1, out)
            if b == 0:
                conv(cin, width * 4, 1, out)       # projection shortcut
            cin, size = width * 4, out
    params.append(cin * classes + classes)
    flops.append(2 * cin * classes)
    return params, flops
