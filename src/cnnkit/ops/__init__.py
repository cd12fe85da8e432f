"""Pure functions: the arithmetic of CNNs and NumPy reference implementations."""

from cnnkit.ops import arithmetic, reference, weight_maps
from cnnkit.ops.arithmetic import (
    ReceptiveField,
    conv_macs,
    conv_output_size,
    conv_params,
    dense_macs,
    dense_params,
    explain_conv_output_size,
    pool_output_size,
    receptive_field,
    transposed_conv_output_size,
)
