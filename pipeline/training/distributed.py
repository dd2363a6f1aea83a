"""Several processes, one build: joining the process group and doing some work on rank 0 only.

``labbot build`` and ``train_phase`` run unchanged under ``torchrun`` or ``accelerate launch``:
the launcher sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``,
and :func:`init` joins the group they describe (NCCL on GPUs, gloo on the CPU). Without a
launcher it returns a one-process :class:`Dist` and imports nothing heavy.

Work that must happen once (validation, generation, writing files) runs through
:meth:`Dist.on_rank_zero`: rank 0 runs it, the other ranks wait and receive its result, or its
failure as :class:`RankFailed`. They wait in a broadcast on a separate gloo *control* group with a
long timeout (a generation stage can take hours, far beyond NCCL's default 10 minutes). If rank
0's process dies instead of failing cleanly, its sockets close and the broadcast fails at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pipeline.errors import BuildError

T = TypeVar("T")

#: How long ranks wait for rank 0's once-only work before giving up.
CONTROL_TIMEOUT = timedelta(hours=48)

_control: Any = None  # the gloo group for waiting and for sharing small Python objects


class RankFailed(BuildError):
    """A rank of a multi-process run failed; the message names the rank and the stage."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank ``rank`` of ``world``, on ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    launcher_fsdp: bool = False  # ``accelerate launch`` with ``distributed_type: FSDP``

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (on the control group: no NCCL watchdog while rank 0 works)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier(group=_control)

    def on_rank_zero(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank.

        Rank 0 re-raises its own exception unchanged; the other ranks raise :class:`RankFailed`
        with rank 0's message, so every process stops and says which rank failed and where.
        The result must pickle (it is broadcast).
        """
        if self.world == 1:
            return fn()
        import torch.distributed as dist

        outcome: list[Any] = [None]
        failure: BaseException | None = None
        if self.is_main:
            try:
                outcome = [("ok", fn())]
            except BaseException as exc:  # every kind must reach the waiting ranks
                failure = exc
                outcome = [("error", f"{type(exc).__name__}: {exc}")]
        dist.broadcast_object_list(outcome, src=0, group=_control)
        if failure is not None:
            raise failure
        kind, payload = outcome[0]
        if kind == "error":
            raise RankFailed(f"rank 0 of {self.world} failed in {what}: {payload}")
        return payload  # type: ignore[no-any-return]

    def on_every_rank(self, what: str, fn: Callable[[], T]) -> T:
        """Run collective work on every rank; an exception here is re-raised naming this rank.

        The other ranks are then usually blocked in a collective: the launcher (torchrun,
        ``accelerate launch``) stops them when this process exits non-zero, and gloo peers fail
        at once on the closed socket.
        """
        if self.world == 1:
            return fn()
        try:
            return fn()
        except RankFailed:
            raise
        except Exception as exc:
            raise RankFailed(f"rank {self.rank} of {self.world} failed in {what}: {exc}") from exc


def init() -> Dist:
    """Join the launcher's process group (once per process); one process without a launcher."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        import torch

        return Dist(device="cuda" if torch.cuda.is_available() else "cpu")
    import torch
    import torch.distributed as dist

    global _control
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if cuda else "cpu"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(
            "nccl" if cuda else "gloo", device_id=torch.device(device) if cuda else None
        )
    if _control is None:
        _control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    if dist.get_world_size() != world:
        raise RankFailed(
            f"WORLD_SIZE is {world} but the process group has {dist.get_world_size()} ranks"
        )
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return Dist(
        rank=dist.get_rank(), world=world, local_rank=local, device=device, launcher_fsdp=fsdp
    )
