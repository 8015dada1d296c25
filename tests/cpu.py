"""What this CPU runs natively, for tests of the non-default precisions: CI's machines have been CPUs with
AVX-512 BF16 and CPUs without it (bf16 is then refused: tests/test_runtimes.py checks both ways)."""

from tltoolkit.runtimes import cpu_capabilities


def reduced_precision() -> str:
    """bf16 where OpenVINO reports native BF16, else int8 (every CPU OpenVINO runs on has INT8)."""
    return "bf16" if "BF16" in cpu_capabilities() else "int8"


# How far a reduced precision's features may lie from TensorFlow fp32's, as a fraction of the largest:
# bf16 keeps 8 bits of mantissa; int8 measured up to 0.075 on the embedded backbone (test_runtimes.py).
TOLERANCE = {"bf16": 0.05, "int8": 0.2}
