"""Checks a suite's references can pass before any heavy work: model sources, tasks, data folders.

``validate`` and ``run`` both call ``preflight``; each problem is one line naming the suite key.
No torch import: it must stay fast enough for ``validate``. Sequence lengths are checked against
each model's ``max_position_embeddings`` (read from config.json as plain JSON) wherever the
config is on this machine: ONNX Runtime would otherwise fail mid-run on an obscure "Add node"
shape error, and torch on an index error.
"""

from __future__ import annotations

from pathlib import Path

from qdqbench.core.errors import ModelResolutionError, QdqbenchError

# Models whose position ids start after the padding index (RoBERTa's convention): they use only
# max_position_embeddings - (pad_token_id + 1) positions.
_PADDED_POSITIONS = ("roberta", "xlm-roberta", "camembert", "data2vec-text", "longformer", "xmod")


def preflight(suite, *, fetch: bool = False) -> list[str]:
    """Problems knowable before heavy work: model sources, sequence lengths, task names, data folders.

    With ``fetch``, Hub models are downloaded (or found in the cache) now, so an unreachable Hub
    stops the run before anything is computed.
    """
    from qdqbench.tasks import models, task_for

    problems = []
    for name, spec in suite.models.items():
        try:
            folder = models.checked_folder(name, spec, fetch=fetch)
        except ModelResolutionError as exc:
            problems.append(str(exc))
            continue
        if folder is not None:
            config = folder / "config.json"
        elif spec.source[0] == "hub":
            # validate with the Hub reachable: no download, but a cached config is still checked.
            config = models.cached_hub_config(spec.hub, spec.revision)
        else:
            config = None
        if config is not None:
            problems.extend(position_problems(suite, name, config))
        # A classifier head sized for another label count loads only with a cryptic error; an
        # encoder-only use (embedding fidelity) never loads the head, so only classification asks.
        if folder is not None and any(suite.tasks[t].kind == "glue" for t in spec.tasks):
            mismatch = models.label_mismatch(folder)
            if mismatch:
                problems.append(f"model '{name}': {folder}: {mismatch}")
        # A checkpoint without a QA head would get a random one and score SQuAD F1 near 0.
        if folder is not None and any(suite.tasks[t].kind == "squad" for t in spec.tasks):
            missing = models.head_problem(folder, "question-answering")
            if missing:
                problems.append(f"model '{name}': {folder} {missing}")
    for tname, t in suite.tasks.items():
        try:
            task = task_for(t.kind, t.name, tname)
        except QdqbenchError as exc:
            problems.append(f"tasks.{tname}: {exc}")
            continue
        if task.suite_kind != t.kind:
            problems.append(f"tasks.{tname}: task '{task.name}' does not match kind '{t.kind}'")
        elif not t.data_dir or not task.reads_data_dir:
            continue
        elif not Path(t.data_dir).is_dir():
            problems.append(f"tasks.{tname}.data_dir: {t.data_dir} does not exist")
        elif why := task.data_dir_problem(Path(t.data_dir)):
            problems.append(f"tasks.{tname}.data_dir: {t.data_dir} {why}")
        else:
            problems.extend(selection_problems(suite, tname, task))
    return problems


def selection_problems(suite, tname: str, task) -> list[str]:
    """Each ``recipe: auto`` scheme whose dev-split selection leaves a part of task ``tname``'s local
    evaluation set under ``tasks.split.MIN_PART_EXAMPLES`` (a Hub task is checked when it loads).

    SQuAD counts its dev questions; without a train file the run also holds out calibration
    paragraphs of dev, so the run checks the parts again when the task loads.
    """
    from qdqbench.config.suite import dev_split_selection
    from qdqbench.tasks.split import part_problem, split_examples

    specs = {k: s for k, s in ((k, dev_split_selection(v)) for k, v in suite.schemes.items()) if s is not None}
    keys_of = getattr(task, "split_keys", None)
    if not specs or not any(tname in m.tasks for m in suite.models.values()) or keys_of is None:
        return []
    t = suite.tasks[tname]
    try:
        examples = task.load(task.eval_split, Path(t.data_dir))
    except QdqbenchError as exc:
        return [f"tasks.{tname}: {exc}"]
    keys = keys_of(examples[: t.eval_limit] if t.eval_limit else examples)
    problems = []
    for sname, spec in specs.items():
        problem = part_problem(tname, split_examples(keys, spec.fraction, suite.seed))
        if problem:
            problems.append(f"schemes.{sname}.auto.selection.fraction: {problem}")
    return problems


def max_positions(config: dict) -> int | None:
    """Longest sequence a model's position embeddings cover, from its config.json data; None: unknown."""
    n = config.get("max_position_embeddings")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return None
    if str(config.get("model_type", "")).lower() in _PADDED_POSITIONS:
        pad = config.get("pad_token_id")
        n -= (pad if isinstance(pad, int) else 1) + 1
    return n


def position_problems(suite, name: str, config_path: Path) -> list[str]:
    """Each timed ``shapes.seq`` and each effective max_length of model ``name`` beyond its positions."""
    from qdqbench.tasks import models

    try:
        config = models.read_config(Path(config_path).parent, name)
    except ModelResolutionError as exc:
        return [str(exc)]
    limit = max_positions(config)
    if limit is None:
        return []
    spec = suite.models[name]
    raw = config["max_position_embeddings"]
    usable = "" if raw == limit else f", {limit} usable"
    why = f"is longer than model '{name}' supports (max_position_embeddings {raw}{usable} in {config_path})"
    problems = []
    # Timed shapes exist only where latency cells do: on an engine, or with timing.torch.
    timed = any(b != "torch" for b in suite.backends) or suite.timing.torch is not None
    if timed:
        problems.extend(f"shapes.seq: {seq} {why}" for seq in dict.fromkeys(suite.shapes.seq) if seq > limit)
    # Tokenized inputs are truncated to the task's max_length, else the model's.
    for tname in spec.tasks:
        task = suite.tasks[tname]
        if task.max_length is not None:
            key, length = f"tasks.{tname}.max_length", task.max_length
        else:
            key, length = f"models.{name}.max_length", spec.max_length
        line = f"{key}: {length} {why}"
        if length > limit and line not in problems:
            problems.append(line)
    return problems
