"""Mapping a function over work items in worker processes, with a tqdm bar."""
from __future__ import annotations

import multiprocessing
from typing import Callable, Iterable, TypeVar

from tqdm import tqdm

from cctrnet.utilities.progress_bars import quiet_bar_options

T = TypeVar("T")
R = TypeVar("R")


def map_with_progress(function: Callable[[T], R], items: Iterable[T], num_processes: int = 1, desc: str = "",
                      disable: bool = False) -> list[R]:
    """``[function(x) for x in items]`` in order, in ``num_processes`` worker processes (1: in this process)."""
    items = list(items)
    if num_processes <= 1 or len(items) <= 1:
        return [function(x) for x in tqdm(items, desc=desc, unit="case", **quiet_bar_options(not disable))]
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(num_processes, len(items))) as pool:
        return list(tqdm(pool.imap(function, items), total=len(items), desc=desc, unit="case",
                         **quiet_bar_options(not disable)))
