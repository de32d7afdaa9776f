"""The small Protocol every inference runtime implements, and helpers they share.

A backend turns an ONNX artifact into a ``Session`` for one requested precision and a set of input
shapes; a session answers ``predict`` (batch in, logits out, to measure accuracy on the engine
itself) and ``time`` (in-process latency, called by the worker process). ``Session.precision`` is
what the engine *actually* runs, found by inspecting the optimized graph, never the request echoed
back; ``Session.info`` holds the engine facts that support that claim.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from qdqbench.core.errors import (
    BackendError,
    one_line,  # noqa: F401 — the engines' one formatter, re-exported
)

if TYPE_CHECKING:
    from qdqbench.core.results import Shape
    from qdqbench.engines.timing import LatencyStats, TimingSettings

Feeds = dict[str, np.ndarray]  # ONNX input name -> int64 array (batch, seq)

PRECISIONS = ("fp32", "int8", "bf16", "fp16")

# A serialized ONNX ModelProto starts with the tag byte of one of its fields (protobuf writers
# emit ir_version, tag 0x08, first). A first byte that is no ModelProto field tag means garbage,
# rejected here with one line: the runtimes' own messages for garbage are multi-line C++ traces.
_ONNX_FIRST_TAGS = {0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA, 0xD2}


_O = TypeVar("_O", bound="EngineOptions")


@dataclass(frozen=True)
class EngineOptions:
    """Base of each engine's typed ``prepare`` options (one frozen dataclass per engine).

    ``parse`` is the one check of an options mapping (from ``engine_request``, the worker's
    ``--options`` JSON or a caller's keyword arguments): an unknown name or a value of the wrong
    type is a BackendError naming the engine.
    """

    @classmethod
    def parse(cls: type[_O], engine: str, options: Mapping[str, Any] | EngineOptions | None = None) -> _O:
        """Typed options from a mapping; BackendError on unknown names or wrong types."""
        if isinstance(options, cls):
            return options
        if isinstance(options, EngineOptions):
            options = options.to_dict()
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BackendError(f"{engine}: unknown options {unknown}")
        hints = typing.get_type_hints(cls)
        for name, value in options.items():
            if not _is_instance(value, hints[name]):
                raise BackendError(f"{engine}: option {name}={value!r} is not {_type_name(hints[name])}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """The options that differ from their defaults (JSON-ready, as the worker takes them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


def _is_instance(value: Any, hint: Any) -> bool:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_instance(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


@dataclass(frozen=True)
class Fp32Configuration:
    """One way an engine can run the fp32 baseline; the runner times each and keeps the fastest.

    ``options`` are ``prepare`` options (merged over the cell's own); ``facts`` maps a key of the
    record's ``details.fp32_configs[name]`` to a key of the session's ``info`` to copy there.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    facts: tuple[tuple[str, str], ...] = ()


class EngineBase:
    """Defaults every engine class shares: its options type and one fp32 configuration."""

    name: str = ""
    Options: ClassVar[type[EngineOptions]] = EngineOptions

    def parse_options(self, options: Mapping[str, Any] | EngineOptions | None) -> Any:
        """``self.Options`` from a mapping (the first step of every ``prepare``)."""
        return self.Options.parse(self.name, options)

    def begin_prepare(self, artifact: Path, precision: str,
                      options: Mapping[str, Any] | EngineOptions | None) -> tuple[Path, Any]:
        """The steps every ``prepare`` starts with, in one place: the typed options, the runtime
        present (else its one-line reason), the precision supported, the artifact checked
        (``check_artifact``). Returns (artifact, options); the engine's own steps follow."""
        opts = self.parse_options(options)
        reason = self.unavailable_reason()
        if reason:
            raise BackendError(reason)
        check_precision(self.name, precision, self.precisions)
        return self.check_artifact(Path(artifact)), opts

    def check_artifact(self, artifact: Path) -> Path:
        """The artifact ``prepare`` loads, checked: an ONNX file by default (``check_onnx_file``)."""
        return check_onnx_file(artifact)

    def fp32_configurations(self, model_config: Any = None) -> list[Fp32Configuration]:
        """The fp32 configurations worth timing for a model (``model_config``: its transformers
        config, or None to count them). One by default: the engine as the cell asks for it."""
        return [Fp32Configuration("plain")]


@runtime_checkable
class Session(Protocol):
    """A prepared engine: effective precision, engine facts, predict and time."""

    backend: str
    precision: str
    info: dict

    def predict(self, feeds: Feeds) -> np.ndarray:
        """The first output as float32."""
        ...

    def time(self, feeds: Feeds, settings: TimingSettings) -> LatencyStats:
        """In-process latency of one inference on ``feeds``."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A runtime that can build sessions from ONNX artifacts."""

    name: str

    def fp32_configurations(self, model_config: Any = None) -> list[Fp32Configuration]:
        """The fp32 configurations to time (the first is the plain one); see ``EngineBase``."""
        ...

    def unavailable_reason(self) -> str | None:
        """None when usable, else one line saying what is missing."""
        ...

    def prepare(self, artifact: Path, precision: str, shapes: list[Shape],
                threads: int | None = None, **options: Any) -> Session:
        """Build a session for ``artifact`` at ``precision`` over ``shapes``."""
        ...


def check_precision(backend: str, precision: str, supported: tuple[str, ...]) -> None:
    """Raise BackendError unless ``precision`` is one the backend can be asked for."""
    if precision not in supported:
        from qdqbench.core.errors import did_you_mean

        raise BackendError(f"{backend} does not run precision '{precision}'"
                           f"{did_you_mean(precision, supported)}; it supports {', '.join(supported)}")


def check_onnx_file(path: Path) -> Path:
    """Raise BackendError (naming the file) if ``path`` is missing, empty or plainly not ONNX."""
    path = Path(path)
    if not path.exists():
        raise BackendError(f"ONNX file not found: {path}")
    if not path.is_file():
        raise BackendError(f"not an ONNX file (a directory?): {path}")
    with path.open("rb") as fh:
        head = fh.read(1)
    if not head:
        raise BackendError(f"ONNX file is empty: {path}")
    if head[0] not in _ONNX_FIRST_TAGS:
        raise BackendError(f"not an ONNX model (unexpected leading bytes): {path}")
    return path


def select_feeds(feeds: Feeds, wanted: list[str], dtypes: dict[str, Any] | None = None) -> Feeds:
    """The feeds the model takes, in its dtypes; a missing input is a BackendError naming it."""
    out = {}
    for name in wanted:
        if name not in feeds:
            raise BackendError(f"the model needs input '{name}' but the feeds have "
                               f"{sorted(feeds)}")
        arr = feeds[name]
        want = (dtypes or {}).get(name)
        if want is not None and arr.dtype != want:
            arr = arr.astype(want)
        out[name] = np.ascontiguousarray(arr)
    return out


def feeds_shape(feeds: Feeds) -> tuple[int, int]:
    """(batch, seq) of a feed dict (all inputs share it)."""
    arr = feeds.get("input_ids")
    if arr is None:
        arr = next(iter(feeds.values()))
    if arr.ndim != 2:
        raise BackendError(f"feeds must be 2-D (batch, seq); got shape {arr.shape}")
    return int(arr.shape[0]), int(arr.shape[1])


def predict_in_profile(feeds: Feeds, run: Callable[[Feeds], np.ndarray], lo: tuple[int, int],
                       hi: tuple[int, int], *, seq_output: bool, pad_id: int = 0) -> np.ndarray:
    """Run ``run`` on ``feeds`` reshaped to fit an engine's (batch, seq) profile [lo, hi].

    Engines built for the timed shapes (TensorRT, ONNX Runtime's TensorRT EP) refuse other shapes,
    while accuracy batches have their own: a batch is split into chunks of at most ``hi`` rows,
    a chunk smaller than ``lo`` rows is filled up with copies of its first row (BERT rows never
    interact), and a sequence shorter than ``lo`` is padded
    with masked tokens (``pad_id``, attention mask 0, token type 0), which the attention mask
    keeps out of every real position. Padding is cut from the output again (rows always; the
    sequence axis, axis 1, when ``seq_output``). A sequence longer than ``hi`` is a BackendError.
    """
    batch, seq = feeds_shape(feeds)
    (lo_b, lo_s), (hi_b, hi_s) = lo, hi
    if seq > hi_s:
        raise BackendError(f"sequence length {seq} is longer than the engine profile allows ({hi_s}); "
                           f"add a shape with seq >= {seq} to the suite's shapes")
    width = max(seq, lo_s)
    outs = []
    for start in range(0, batch, hi_b):
        chunk = {k: v[start:start + hi_b] for k, v in feeds.items()}
        rows = len(next(iter(chunk.values())))
        height = max(rows, lo_b)
        if (height, width) != (rows, seq):
            padded = {}
            for name, arr in chunk.items():
                fill = pad_id if name == "input_ids" else 0
                out = np.full((height, width), fill, dtype=arr.dtype)
                out[:rows, :seq] = arr
                out[rows:, :seq] = arr[0]
                padded[name] = out
            chunk = padded
        result = np.asarray(run(chunk))
        result = result[:rows]
        if seq_output and result.ndim >= 2 and width != seq:
            result = result[:, :seq]
        outs.append(result)
    return np.concatenate(outs, axis=0)
