"""Data-parallel training with ``torch.distributed``: N processes, each with its share of the global batch.

How a step is computed (documentation/commands.md, "Data-parallel training"):

- the global batch keeps the plan's ``labeled_per_batch`` + ``unlabeled_per_batch``; each of the W ranks
  takes ``labeled_per_batch / W`` labeled and ``unlabeled_per_batch / W`` unlabeled slices. The *global
  order* of the rows is the single-process order: the labeled rows of rank 0, 1, ..., then the unlabeled
  rows of rank 0, 1, ...;
- every batch statistic is computed over the global batch: Dice and CE reduce their per-class sums and
  pixel counts with :meth:`Distributed.sum`; the contrastive loss chooses its anchors and negatives from
  the gathered labels and confidences of the whole batch (the same choice on every rank, from one
  generator state), and each rank projects only the chosen pixels of its own rows;
- each rank's loss is then the *global* loss, with a graph through its own rows only, so the gradients are
  **summed** over the ranks (one coalesced ``all_reduce`` after ``backward``), which gives exactly the
  single-process gradient; clipping and the optimiser step follow on identical gradients;
- the REPS memory bank inserts the gathered rows of the step in global order: the same entries on every
  rank, checked by :meth:`Distributed.check_identical` at the end of the run and when it stops;
- a stop signal on any rank is agreed on at the start of every iteration (one small ``all_reduce``), so
  all ranks stop after the same iteration and rank 0 saves once.

We sum gradients ourselves instead of wrapping the branches in ``DistributedDataParallel``: the losses
above make every rank's loss the global one (DDP would average), and the trainers' modules, state dicts
and optimisers stay exactly those of a single process. The price is no overlap of communication with the
backward pass (measured in documentation/benchmarks.md).

Processes are started and joined in :mod:`cctrnet.training.distributed_launch`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence, TypeVar

import torch

from cctrnet.training.train_run import TrainingRunError

T = TypeVar("T")



class Distributed:
    """This process's place in the run (rank of world size) and the collectives the trainer uses.

    With ``world_size == 1`` every method is the identity (or a no-op), so the trainer has one code path.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, backend: str | None = None):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world size {world_size}: need 0 <= rank < world_size")
        self.rank, self.world_size, self.local_rank, self.backend = rank, world_size, local_rank, backend

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.backend})" if self.enabled else "one process"

    def device_for(self, device: torch.device) -> torch.device:
        """A CUDA device without an index becomes this rank's GPU (LOCAL_RANK)."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    # --- the batch ---------------------------------------------------------------------------------
    def local_batch(self, labeled_per_batch: int, unlabeled_per_batch: int) -> tuple[int, int]:
        """(labeled, unlabeled) slices of this rank's share of the plan's global batch."""
        w = self.world_size
        if labeled_per_batch % w or unlabeled_per_batch % w:
            divisors = [d for d in range(1, max(labeled_per_batch, 1) + 1)
                        if labeled_per_batch % d == 0 and unlabeled_per_batch % d == 0]
            raise ValueError(
                f"the plan's batch of {labeled_per_batch} labeled + {unlabeled_per_batch} unlabeled slices does not "
                f"divide among {w} processes (each takes the same number of labeled and of unlabeled slices); use "
                f"{', '.join(map(str, divisors))} processes, or change labeled_per_batch/unlabeled_per_batch in "
                "plans.json before training")
        return labeled_per_batch // w, unlabeled_per_batch // w

    def global_rows(self, n_labeled: int, n_unlabeled: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Global-order row index of each of this rank's rows (labeled first, then unlabeled)."""
        labeled = self.rank * n_labeled + torch.arange(n_labeled, device=device)
        unlabeled = self.world_size * n_labeled + self.rank * n_unlabeled + torch.arange(n_unlabeled, device=device)
        return torch.cat([labeled, unlabeled])

    def row_owners(self, global_rows: torch.Tensor, n_labeled: int, n_unlabeled: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rank, local row) of global-order rows."""
        labeled_total = self.world_size * n_labeled
        is_labeled = global_rows < labeled_total
        u = (global_rows - labeled_total).clamp(min=0)
        owner = torch.where(is_labeled, global_rows // max(n_labeled, 1), u // max(n_unlabeled, 1))
        local = torch.where(is_labeled, global_rows % max(n_labeled, 1), n_labeled + u % max(n_unlabeled, 1))
        return owner, local

    # --- collectives ------------------------------------------------------------------------------
    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks; the gradient flows through this rank's own ``value`` only."""
        if not self.enabled:
            return value
        total = value.detach().clone()
        self._collective("sum", torch.distributed.all_reduce, total)
        return value + (total - value.detach())

    def gather_batch(self, rows: torch.Tensor, n_labeled: int) -> torch.Tensor:
        """This rank's rows (labeled first) -> the global batch in global order, on every rank; no gradient."""
        if not self.enabled:
            return rows
        parts = [torch.empty_like(rows) for _ in range(self.world_size)]
        self._collective("all_gather", torch.distributed.all_gather, parts, rows.detach().contiguous())
        return torch.cat([p[:n_labeled] for p in parts] + [p[n_labeled:] for p in parts])

    def gather_pixels(self, local_map: torch.Tensor, flat_global: torch.Tensor, n_labeled: int,
                      transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Vectors (n, c') at pixels chosen in the global batch (flat indices into global (b, h, w)).

        Each rank reads (and ``transform``s, e.g. projects) only the pixels of its own rows of ``local_map``
        (b_local, c, h, w); the others' arrive by ``all_gather``. Rows of this rank keep their graph.
        """
        b, c, h, w = local_map.shape
        flat = flat_global.to(local_map.device).long()
        rows, pixels = flat // (h * w), flat % (h * w)
        owner, local = self.row_owners(rows, n_labeled, b - n_labeled)
        mine = owner == self.rank
        vectors = local_map.reshape(b, c, h * w)[local[mine], :, pixels[mine]]
        if transform is not None:
            vectors = transform(vectors)
        if not self.enabled:
            return vectors
        counts = torch.bincount(owner, minlength=self.world_size).tolist()
        padded = vectors.new_zeros((max(max(counts), 1), vectors.shape[1]))
        padded[: vectors.shape[0]] = vectors.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._collective("all_gather", torch.distributed.all_gather, parts, padded)
        out = vectors.new_zeros((flat.shape[0], vectors.shape[1]))
        for r in range(self.world_size):
            if r != self.rank:
                out[owner == r] = parts[r][: counts[r]]
        out[mine] = vectors
        return out

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Gradients summed over the ranks (each rank's loss is the global loss over its own rows)."""
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        # a parameter without a gradient on every rank keeps none (the optimiser skips it, as in one process)
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self._collective_device())
        self._collective("gradient presence", torch.distributed.all_reduce, has_grad, op=torch.distributed.ReduceOp.MAX)
        params = [p for p, present in zip(params, has_grad.tolist()) if present]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            self._collective("gradient all_reduce", torch.distributed.all_reduce, flat)
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
                offset += n

    def agree_to_stop(self, stop: Any) -> bool:
        """Whether any rank received a stop signal; sets ``stop.signum`` on every rank when one did."""
        if not self.enabled:
            return bool(stop)
        flag = torch.tensor([stop.signum or 0], dtype=torch.int64, device=self._collective_device())
        self._collective("stop agreement", torch.distributed.all_reduce, flag, op=torch.distributed.ReduceOp.MAX)
        signum = int(flag.item())
        if signum and not stop:
            stop.signum = signum
        return bool(signum)

    def broadcast_modules(self, modules: Sequence[torch.nn.Module]) -> None:
        """Rank 0's parameters and buffers on every rank (same seed gives the same start; this makes it sure)."""
        if not self.enabled:
            return
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                with torch.no_grad():
                    self._collective("broadcast", torch.distributed.broadcast, tensor.data, src=0)

    def check_identical(self, named_tensors: dict[str, torch.Tensor]) -> None:
        """Raise when any tensor differs between the ranks (compared by fingerprints of their values)."""
        if not self.enabled:
            return
        names = sorted(named_tensors)
        local = torch.stack([tensor_fingerprint(named_tensors[n]) for n in names]).to(self._collective_device())
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        self._collective("replica check", torch.distributed.all_gather, parts, local)
        for r, part in enumerate(parts):
            differs = [n for n, a, b in zip(names, parts[0], part) if not torch.equal(a, b)]
            if differs:
                raise TrainingRunError(f"rank {r} holds other values than rank 0 for {', '.join(differs[:5])}"
                                       f"{' ...' if len(differs) > 5 else ''}: the replicas diverged (a bug; "
                                       "please report it with the training_log.txt)")

    def barrier(self) -> None:
        if self.enabled:
            self._collective("barrier", torch.distributed.barrier)

    def main_first(self, function: Callable[[], T]) -> T:
        """Run ``function`` on rank 0, then on the others (it fills a cache the others then only read)."""
        if not self.enabled:
            return function()
        if self.is_main:
            result = function()
            self.barrier()
            return result
        self.barrier()
        return function()

    def on_main(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on rank 0 only, after every rank got here; its result on every rank."""
        if not self.enabled:
            return function(*args)
        self.barrier()
        box: list[Any] = [function(*args) if self.is_main else None]
        self._collective("broadcast", torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def _collective(self, what: str, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return operation(*args, **kwargs)
        except RuntimeError as error:  # DistBackendError too: a peer closed its connection or timed out
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrainingRunError(
                f"rank {self.rank} of {self.world_size}: lost contact with the other ranks during {what} "
                f"({first_line}); another rank has probably died: see its message. Resume with --c") from None


SINGLE_PROCESS = Distributed()


def tensor_fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """(sum, sum of squares, position-weighted sum, element count) in float64: equal values, equal fingerprint."""
    values = tensor.detach().reshape(-1).to("cpu", torch.float64)
    weights = torch.arange(1, values.numel() + 1, dtype=torch.float64).remainder_(1009.0) + 1.0
    return torch.stack([values.sum(), (values * values).sum(), (values * weights).sum(),
                        torch.tensor(float(values.numel()), dtype=torch.float64)])


def current() -> Distributed:
    """This process's :class:`Distributed`, from torch's default process group (one process when none)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return SINGLE_PROCESS
    return Distributed(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")), torch.distributed.get_backend())
