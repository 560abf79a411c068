"""What every Hamming top-k in this package returns: the one place the contract is written.

For each query, k (distance, id) pairs, int32 distances and int64 ids:
  * ascending Hamming distance;
  * TIE RULE: equal distances are ordered by the smaller stored id first (so results do not depend
    on insertion order, thread count, instruction set or device);
  * FILL: when the index holds fewer than k rows, the row is completed with (FILL_DISTANCE, FILL_ID)
    pairs, FILL_DISTANCE = 2**31 - 1 (the int32 maximum, larger than any real distance).

Implementations that follow it, and refer here instead of restating it: the C++ extension
(csrc/hamming_topk.h; its kFillDistance is exported as zkernels._hamming.FILL_DISTANCE and tested
equal to this one), the numpy fallback (_numpy_search.py), the torch/CUDA selection (torch_search.py)
and BinaryIndex.search. Rescored search (rescore.py) orders by descending float score instead, with
the same tie rule and a (-inf, FILL_ID) fill.
"""
from __future__ import annotations

FILL_DISTANCE = 2**31 - 1
FILL_ID = -1
