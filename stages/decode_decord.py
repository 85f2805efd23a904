"""decord fast path, run in a worker process that can be killed.

decord 0.6.0 is fast but has failure modes a library must not inherit: it can hang in
C code holding the GIL, it trusts container frame counts, and for frame widths whose RGB
rows get padded (e.g. 16, 24, 48, 72 pixels) it reports a wrong channel count and its
``get_batch`` fails (``get_batch`` is also several times slower than sequential reading
here, so the worker reads sequentially).  So:

* the parent (:func:`iter_decord_batches`) starts a worker (``python -m
  hmrflow.stages.decode_decord``, a fresh interpreter: no fork of a threaded parent, and
  unlike multiprocessing's spawn it never re-imports the caller's ``__main__``) and waits
  on a socket with a timeout; a worker silent for ``timeout_s`` is killed
  (:class:`DecordFailure`);
* frames come back through two shared-memory slots of ``batch_size`` frames each (double
  buffering: the worker fills one while the parent copies the other), so memory stays
  bounded and nothing large is pickled;
* the worker checks decord's frame count against the PyAV probe, the parent checks every
  frame's timestamp against the probe's table, and padded rows are repaired.

Timestamps and frame indices delivered are the probe's (float64), so they equal the
PyAV backend's exactly.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import socket
import subprocess
import sys
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.connection import Connection
from typing import Any, Iterator

import numpy as np

from hmrflow.pipeline.types import FrameBatch

log = logging.getLogger(__name__)

#: decord reports timestamps as float32 seconds; they must match the probe within this.
PTS_TOLERANCE_S = 2e-3
#: Number of shared-memory batch slots (2 = double buffering).
N_SLOTS = 2


class DecordFailure(RuntimeError):
    """The decord worker failed, disagreed with the probe, or stalled (internal; see DecodeStage)."""


def decord_available() -> bool:
    """True when the ``decord`` package is installed (not imported here)."""
    return importlib.util.find_spec("decord") is not None


def repair_padded_rgb(arr: np.ndarray) -> np.ndarray:
    """Fix decord's view of RGB rows with padding: (H, W, C!=3) -> (H, W, 3).

    decord derives the channel count as ``linesize // width``; when FFmpeg pads rows
    (linesize > 3 * width) the array it hands out is really ``H`` rows of ``C * W`` bytes
    of which the first ``3 * W`` are pixels.
    """
    if arr.ndim != 3 or arr.shape[2] == 3:
        return arr
    h, w, c = arr.shape
    if c < 3:
        raise DecordFailure(f"decord returned {c} channels per pixel")
    rows = np.ascontiguousarray(arr).reshape(h, w * c)
    return rows[:, : 3 * w].reshape(h, w, 3)


# ------------------------------------------------------------------ worker side
def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach to the parent's segment without letting this process's tracker unlink it."""
    shm = shared_memory.SharedMemory(name=name)
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - best effort; only affects a warning at exit
        pass
    return shm


def _short(message: str, limit: int = 200) -> str:
    """decord's C++ messages without timestamps and source locations, on one line."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", " ".join(message.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _worker_main(fd: int) -> None:
    """Entry point of the worker process: request and frames over the socket ``fd``."""
    conn = Connection(fd)
    request, slot_names = conn.recv()
    slots = [_attach(n) for n in slot_names]
    try:
        _worker_loop(conn, request, slots)
    except BaseException as exc:  # report everything to the parent, then exit
        try:
            conn.send(("error", _short(f"{type(exc).__name__}: {exc}")))
        except (OSError, ValueError):
            pass
    finally:
        for s in slots:
            try:
                s.close()
            except BufferError:  # a view from the failed batch is still alive; exit frees it
                pass
        conn.close()


def _worker_loop(conn: Any, req: dict[str, Any], slots: list[shared_memory.SharedMemory]) -> None:
    import decord

    kwargs: dict[str, Any] = {"ctx": decord.cpu(0), "num_threads": int(req["threads"])}
    if req["resize"]:
        kwargs.update(width=int(req["out_width"]), height=int(req["out_height"]))
    vr = decord.VideoReader(req["path"], **kwargs)
    n = len(vr)
    if n != req["expected_frames"]:
        raise DecordFailure(f"decord counts {n} frames, the av probe {req['expected_frames']}")
    indices: np.ndarray = req["indices"]
    shape = (int(req["out_height"]), int(req["out_width"]), 3)
    batch_size = int(req["batch_size"])
    if len(indices) == 0:
        conn.send(("done", 0))
        return
    ts_all = vr.get_frame_timestamp(indices.tolist())[:, 0].astype(np.float64)
    pos = int(indices[0])  # index of the frame vr.next() returns next
    if pos > 0:
        vr.seek_accurate(pos)  # a time window: no colour conversion of the frames before it either
    else:
        vr.seek(0)
    free = list(range(len(slots)))
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        while not free:
            msg = conn.recv()
            if msg[0] == "free":
                free.append(int(msg[1]))
            elif msg[0] == "stop":
                return
        slot = free.pop(0)
        out = np.ndarray((batch_size,) + shape, np.uint8, buffer=slots[slot].buf)
        # Sequential reading (skip_frames decodes without colour conversion) is several
        # times faster than get_batch in decord 0.6.0, and handles padded rows per frame.
        for j, i in enumerate(chunk.tolist()):
            if i > pos:
                vr.skip_frames(i - pos)
            frame = repair_padded_rgb(vr.next().asnumpy())
            if frame.shape != shape:
                raise DecordFailure(f"decord frame shape {frame.shape} differs from the expected {shape}")
            out[j] = frame
            pos = i + 1
        ts = ts_all[start : start + batch_size]
        conn.send(("batch", slot, len(chunk), chunk, ts))
        del out
    conn.send(("done", len(indices)))


# ------------------------------------------------------------------ parent side
def iter_decord_batches(plan: Any, timeout_s: float = 60.0, keep_stderr: bool = False) -> Iterator[FrameBatch]:
    """Decode a :class:`~hmrflow.stages.decode.DecodePlan` with decord in a worker process.

    Yields FrameBatch objects (images copied out of shared memory).  Raises
    :class:`DecordFailure` when the worker errors, dies, disagrees with the probe, or sends
    nothing for ``timeout_s`` seconds (it is then killed).
    """
    from hmrflow.stages.decode import select_indices

    indices = select_indices(plan.pts_s, plan.target_fps, plan.max_frames, plan.first_idx, plan.stop_idx)
    shape = (plan.out_height, plan.out_width, 3)
    nbytes = max(1, plan.batch_size * int(np.prod(shape)))
    slots = [shared_memory.SharedMemory(create=True, size=nbytes) for _ in range(N_SLOTS)]
    parent_sock, child_sock = socket.socketpair()
    parent_conn = Connection(parent_sock.detach())
    request = {
        "path": plan.path,
        "threads": plan.threads,
        "resize": plan.resize,
        "out_width": plan.out_width,
        "out_height": plan.out_height,
        "expected_frames": len(plan.pts_s),
        "indices": indices,
        "batch_size": plan.batch_size,
    }
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hmrflow.stages.decode_decord", str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None if keep_stderr else subprocess.DEVNULL,  # decord prints FFmpeg chatter
            close_fds=True,
        )
        child_sock.close()
        parent_conn.send((request, [s.name for s in slots]))
        while True:
            if not parent_conn.poll(timeout_s):
                raise DecordFailure(f"no frames for {timeout_s:g} s; worker killed")
            try:
                msg = parent_conn.recv()
            except (EOFError, OSError):
                try:
                    code = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
                raise DecordFailure(f"worker died (exit code {code})") from None
            kind = msg[0]
            if kind == "error":
                raise DecordFailure(str(msg[1]))
            if kind == "done":
                break
            _, slot, m, chunk, ts = msg
            expect = plan.pts_s[chunk]
            if np.any(np.abs(ts - expect) > PTS_TOLERANCE_S):
                bad = int(np.argmax(np.abs(ts - expect)))
                raise DecordFailure(
                    f"timestamp of frame {int(chunk[bad])} is {ts[bad]:.4f} s in decord, {expect[bad]:.4f} s in the probe"
                )
            view = np.ndarray((plan.batch_size,) + shape, np.uint8, buffer=slots[slot].buf)
            images = view[:m].copy()
            del view
            try:
                parent_conn.send(("free", slot))
            except (OSError, ValueError):
                pass  # the worker already finished and closed its end
            yield FrameBatch(
                video_id=plan.video_id,
                frame_idx=np.asarray(chunk, np.int64),
                pts=np.asarray(expect, np.float64),
                images=images,
            )
    finally:
        child_sock.close()
        _stop_worker(proc, parent_conn)
        for s in slots:
            s.close()
            try:
                s.unlink()
            except FileNotFoundError:
                pass


def _stop_worker(proc: subprocess.Popen[bytes] | None, conn: Connection) -> None:
    """Ask the worker to stop, then kill it if it does not (a hung decord never answers)."""
    if proc is not None and proc.poll() is None:
        try:
            conn.send(("stop",))
        except (OSError, ValueError):
            pass
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    conn.close()


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
