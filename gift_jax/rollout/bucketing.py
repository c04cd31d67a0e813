"""Shape buckets: round sizes up to a few fixed values so the jitted sampler compiles rarely.

Every distinct array shape is a new XLA compilation (seconds to minutes for a 7B model). Prompt
width, generation length and row count are therefore rounded up: to a power of two while small
(at most 2x padding, where it costs little), then to a multiple of `granularity` (bounded absolute
padding for long prompts and generations).
"""

from __future__ import annotations


def bucket_size(size: int, *, minimum: int = 16, granularity: int = 512, multiple: int = 1) -> int:
    """The bucket `size` falls into: `>= size`, and a multiple of `multiple`.

    Buckets are `minimum, 2 * minimum, 4 * minimum, ...` up to `granularity`, then multiples of
    `granularity`. E.g. with the defaults 5 -> 16, 17 -> 32, 300 -> 512, 513 -> 1024, 1100 -> 1536.
    `multiple` (e.g. the number of devices the batch is split over) is applied last.
    """
    if size < 1:
        raise ValueError(f"bucket_size: size must be >= 1, got {size}")
    if minimum < 1 or granularity < minimum or multiple < 1:
        raise ValueError(
            f"bucket_size: need 1 <= minimum <= granularity and multiple >= 1, got "
            f"minimum={minimum}, granularity={granularity}, multiple={multiple}"
        )
    if size <= granularity:
        bucket = minimum
        while bucket < size:
            bucket *= 2
        bucket = min(bucket, granularity)
    else:
        bucket = -(-size // granularity) * granularity
    return -(-bucket // multiple) * multiple
