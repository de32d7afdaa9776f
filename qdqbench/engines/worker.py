"""Worker process that times one engine: ``python -m qdqbench.engines.worker``.

``qdqbench.engines.timing.measure_in_subprocess`` starts one of these per latency cell so each engine runs
alone in a fresh process with its thread-pool variables pinned. The worker loads the feeds from an
``.npz`` (one array per ONNX input name), prepares the backend session for their (batch, seq)
shape, calls ``Session.time`` and writes one JSON object: ``{"stats", "precision", "info",
"resources", "op_profile"}`` on success (``resources``: memory and load time, see
``engines.resources``; ``op_profile``: time per op type from extra iterations after the timed
ones, see ``engines.profile``),
``{"error": "<one line>"}`` on failure (exit status 1), to ``--out`` or stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m qdqbench.engines.worker",
        description="Time one inference engine on one input shape in this process and write "
                    "the latency samples, effective precision and engine facts as JSON.")
    p.add_argument("--backend", required=True, help="backend name, e.g. onnxruntime, openvino")
    p.add_argument("--artifact", required=True, type=Path, help="the ONNX file")
    p.add_argument("--precision", required=True, help="requested precision: fp32|int8|bf16|fp16")
    p.add_argument("--feeds", required=True, type=Path,
                   help=".npz with one (batch, seq) array per ONNX input name")
    p.add_argument("--settings", default="{}",
                   help="TimingSettings as a JSON object (missing keys take their defaults)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for the engine")
    p.add_argument("--options", default="{}",
                   help="extra keyword arguments for the backend's prepare(), as a JSON object")
    p.add_argument("--profile-iters", type=int, default=0,
                   help="after the timed loop, profile this many extra inferences per op (0: off)")
    p.add_argument("--out", default="-", help="where to write the JSON result ('-' = stdout)")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this process dies (Linux: the kernel kills the worker with it)")
    return p


def die_with_parent(parent_pid: int | None) -> None:
    """Never outlive the run that started this worker, even when the run is SIGKILLed.

    Linux's PR_SET_PDEATHSIG makes the kernel send SIGKILL when the parent exits; the check of
    the current parent afterwards covers a parent that died before the call. Elsewhere only the
    check runs (the parent kills the worker's group on every exit it can see).
    """
    if parent_pid is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _write(out: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, default=str)
    if out == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        Path(out).write_text(text, encoding="utf-8")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the session and time it; the JSON-ready result."""
    import numpy as np

    from qdqbench.core.errors import BackendError
    from qdqbench.core.results import Shape
    from qdqbench.engines import available_backend
    from qdqbench.engines.profile import run_op_profile
    from qdqbench.engines.resources import measure_session
    from qdqbench.engines.timing import TimingSettings

    try:
        settings = TimingSettings.from_dict(json.loads(args.settings))
        options = json.loads(args.options)
    except (ValueError, TypeError) as exc:
        raise BackendError(f"worker: bad --settings/--options: {exc}") from exc
    if not isinstance(options, dict):
        raise BackendError("worker: --options must be a JSON object")
    try:
        with np.load(args.feeds) as npz:
            feeds = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BackendError(f"worker: cannot read feeds {args.feeds}: {exc}") from exc
    if not feeds:
        raise BackendError(f"worker: feeds file {args.feeds} holds no arrays")
    first = feeds.get("input_ids", next(iter(feeds.values())))
    batch, seq = (int(d) for d in first.shape)

    backend = available_backend(args.backend)

    def prepare(extra: dict[str, Any] | None = None) -> Any:
        return backend.prepare(args.artifact, args.precision, [Shape(batch=batch, seq=seq)],
                               threads=args.threads, **{**options, **(extra or {})})

    session, stats, resources = measure_session(args.backend, prepare, lambda s: s.time(feeds, settings))
    # After the timed loop and the peak-memory reading: the profile's iterations (and any second
    # session it prepares) neither slow the timed samples nor count in peak_rss_mb.
    op_profile = run_op_profile(session, feeds, args.profile_iters, prepare)
    return {"stats": stats.to_dict(), "precision": session.precision, "info": session.info,
            "resources": resources, "op_profile": op_profile}


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 0 on success, 1 with a one-line error otherwise."""
    args = _parser().parse_args(argv)
    die_with_parent(args.parent_pid)
    from qdqbench.core.errors import QdqbenchError
    from qdqbench.engines.base import one_line

    try:
        result = run(args)
    except QdqbenchError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # any runtime failure becomes one line for the parent
        why = one_line(exc, typed=False, join=True)
        message = f"{args.backend} failed on {args.artifact}: {type(exc).__name__}: {why}"
    else:
        _write(args.out, result)
        return 0
    _write(args.out, {"error": message})
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
