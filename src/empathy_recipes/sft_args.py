"""The SFT stage's own arguments and its pure validation helpers (no model is loaded here).

``scripts/sft.py`` parses ``SFTScriptArguments`` + TRL's ``SFTConfig`` + TRL's ``ModelConfig`` with ``TrlParser``:
a YAML recipe (``--config``) gives the defaults and any field can be overridden on the command line. Everything
that can be checked before a model is loaded is checked here, each failure as one :class:`EmpathyRecipesError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl.scripts.utils import DatasetConfig

from empathy_recipes.checks import looks_like_hub_id
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.mixture import parse_mixture

# Keys a TRL recipe may hold besides the dataclass fields (TrlParser sets ``env`` as environment variables;
# ``profiles`` holds named blocks of overrides, applied by ``--profile <name>``).
RECIPE_EXTRA_KEYS = frozenset({"env", "profiles"})
PROFILES_KEY = "profiles"
# PEFT's keyword for "every linear layer but the output head".
ALL_LINEAR = "all-linear"


@dataclass
class SFTScriptArguments:
    """Arguments of ``scripts/sft.py`` that are neither TRL's ``SFTConfig`` nor its ``ModelConfig``."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a Hub dataset id, a local dataset dir (e.g. one split of the select stage's "
            "output) or a JSON/JSONL/CSV/parquet file, in any ED layout or the common chat schema."
        },
    )
    dataset_config: str | None = field(
        default=None,
        metadata={
            "help": "Config of dataset_name (TRL's name), e.g. 'sensibility' of the select stage's Hub dataset."
        },
    )
    dataset_split: str | None = field(
        default=None, metadata={"help": "Split of dataset_name to train on (default: the only one, else 'train')."}
    )
    dataset_limit: int | None = field(default=None, metadata={"help": "Train on the first N examples only."})
    dataset_mixture: list[DatasetConfig] | None = field(
        default=None,
        metadata={
            "help": "More training datasets, each TRL's DatasetConfig (path, name, split, columns, fraction; a bare "
            "path is {path: ...}), concatenated with dataset_name on the chat column (empathy_recipes.mixture)."
        },
    )
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Evaluation data (default: dataset_name when eval_split is set)."}
    )
    eval_split: str | None = field(default=None, metadata={"help": "Split of the evaluation data; unset: no eval."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on the first N examples only."})
    last_reply_only_loss: bool = field(
        default=False,
        metadata={
            "help": "Compute the loss on the final assistant reply only (the paper's instruction/output setup) "
            "instead of on every assistant turn: each example becomes a conversational prompt/completion pair."
        },
    )
    prompt_format: str = field(
        default="messages",
        metadata={
            "help": "messages: the conversation as chat turns (the model's chat template); transcript: the context "
            "flattened into one user message 'Speaker: ...\\nListener: ...\\nListener: ' and the reply as the "
            "completion, loss on the reply only (the paper's Llama-3 input, train_llama/sft_llama3.py).",
            "choices": ["messages", "transcript"],
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "A system message put before every conversation (the paper's Qwen: 'You are a helpful assistant.')."
        },
    )
    profile: str = field(
        default="project",
        metadata={
            "help": "paper: apply the recipe's `profiles: {paper: {...}}` block (the paper's code's settings for this "
            "model, docs/fidelity.md) over its other keys; command-line flags still win. project: ignore it.",
            "choices": ["project", "paper"],
        },
    )
    trainable_parameters: str | None = field(
        default=None,
        metadata={
            "help": "Full fine-tuning of a subset: a regex (re.search on parameter names, e.g. "
            "'block_sparse_moe\\.gate\\.' for a Mixtral router); every parameter that does not match is frozen. "
            "Not with use_peft. It is an error when nothing matches."
        },
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "LoRA runs: also save the base model merged with the adapter in <output_dir>/merged."},
    )
    model_card_title: str | None = field(default=None, metadata={"help": "Title of the model card (README.md)."})
    verbose: bool = field(default=False, metadata={"help": "Log debug messages too (empathy_recipes.logs)."})
    quiet: bool = field(default=False, metadata={"help": "Log only warnings and errors."})

    def __post_init__(self) -> None:
        # YAML gives mappings, the command line bare paths: both become TRL DatasetConfig entries (checked).
        if self.dataset_mixture is not None:
            self.dataset_mixture = parse_mixture(self.dataset_mixture)


# ---- recipe keys -------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe as a mapping; one-line error when it is missing, unreadable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise EmpathyRecipesError(f"recipe {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise EmpathyRecipesError(f"recipe {path} is not valid YAML: {first}") from None
    if not isinstance(config, dict):
        raise EmpathyRecipesError(f"recipe {path} must be a YAML mapping of argument names to values")
    return config


def unknown_keys_message(unknown: Sequence[str], known: Iterable[str], where: str) -> str:
    """One line naming the unknown keys, each with its closest known key when there is one."""
    known = sorted(set(known))
    parts = []
    for key in unknown:
        # a known key that starts the unknown one (lora_rank -> lora_r) beats a merely similar one (local_rank)
        stems = [k for k in known if len(k) >= 4 and key.startswith(k)]
        close = [max(stems, key=len)] if stems else difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return f"{where}: unknown key{'s' if len(unknown) > 1 else ''} " + ", ".join(parts)


def validate_recipe_keys(config: dict[str, Any], known: Iterable[str], where: str = "recipe") -> None:
    """Raise when ``config`` holds a key that no parser field (nor ``env``) knows."""
    known = set(known) | RECIPE_EXTRA_KEYS
    unknown = [k for k in config if k not in known]
    if unknown:
        raise EmpathyRecipesError(unknown_keys_message(unknown, known, where))


def unknown_cli_flags(remaining: Sequence[str]) -> list[str]:
    """The ``--flag`` names among argv strings a parser left unused (values are dropped)."""
    return [s[2:].split("=", 1)[0] for s in remaining if s.startswith("--")]


# ---- the parser ----------------------------------------------------------------------------------------------


def build_sft_parser():
    """``TrlParser`` over (SFTScriptArguments, TRL SFTConfig, TRL ModelConfig): the SFT script's own parser."""
    from trl import ModelConfig, SFTConfig, TrlParser

    # no prefix abbreviations: a misspelled or truncated flag must be an error, not silently another field
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig), allow_abbrev=False)


def has_accelerator() -> bool:
    """Whether torch sees a GPU (CUDA/ROCm or XPU); without one, ``use_cpu`` defaults to true."""
    import torch

    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def parser_keys(parser) -> set[str]:
    """Every argument name the parser accepts."""
    return {a.dest for a in parser._actions if a.dest != "help"}


def parse_sft_args(argv: Sequence[str] | None = None):
    """Parse ``[--config recipe.yaml] [--field value ...]`` into (script_args, training_args, model_args).

    The recipe's keys and the command line's flags are checked first (one line naming the unknown ones, with the
    closest known name), then the values (:func:`validate_sft_values`). Nothing is downloaded or loaded.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_sft_parser()
    known = parser_keys(parser)
    if not has_accelerator():
        parser.set_defaults(use_cpu=True)  # a recipe written for GPUs (bf16: true) still parses and runs here
    resolved = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise EmpathyRecipesError("--config needs a recipe path")
        recipe = load_recipe(args[i + 1])
        validate_recipe_keys(recipe, known, where=f"recipe {args[i + 1]}")
        if PROFILES_KEY in recipe or cli_profile(args) == "paper":
            recipe = resolve_profile(recipe, cli_profile(args), args[i + 1], known)
            resolved = write_resolved_recipe(recipe)
            args[i + 1] = str(resolved)
    elif cli_profile(args) == "paper":
        raise EmpathyRecipesError("--profile paper needs a recipe (--config) with a `profiles: {paper: ...}` block")
    try:
        *parsed, _, cli_remaining = parser.parse_args_and_config(
            args, return_remaining_strings=True, separate_remaining_strings=True
        )
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EmpathyRecipesError(f"invalid SFT arguments: {first}") from None
    finally:
        if resolved is not None:
            resolved.unlink(missing_ok=True)
    if cli_remaining:
        flags = unknown_cli_flags(cli_remaining) or list(cli_remaining)
        raise EmpathyRecipesError(unknown_keys_message(flags, known, "command line"))
    script_args, training_args, model_args = parsed
    validate_sft_values(script_args, training_args, model_args)
    return script_args, training_args, model_args


def global_batch_size(per_device: int, processes: int, accumulation: int) -> int:
    """Sequences (rows, packed or not) per optimizer step: per-device batch x processes x accumulation steps."""
    for name, value in (("per-device batch", per_device), ("processes", processes), ("accumulation", accumulation)):
        if value < 1:
            raise EmpathyRecipesError(f"{name} must be >= 1, got {value}")
    return per_device * processes * accumulation


# ---- values ------------------------------------------------------------------------------------------------------


def validate_sft_values(script_args: SFTScriptArguments, training_args: Any, model_args: Any) -> None:
    """Cross-field checks that need no model and no data."""
    if script_args.verbose and script_args.quiet:
        raise EmpathyRecipesError("verbose and quiet exclude each other: give one")
    if not model_args.model_name_or_path:
        raise EmpathyRecipesError("model_name_or_path is required (a Hub id or a local model folder)")
    if not script_args.dataset_name and not script_args.dataset_mixture:
        raise EmpathyRecipesError(
            "dataset_name is required, or dataset_mixture (a Hub id, a local dataset dir or a data file)"
        )
    if script_args.dataset_name and any(m.fraction is not None for m in script_args.dataset_mixture or []):
        raise EmpathyRecipesError(
            "dataset_mixture fractions share the whole mixture: list every source there (dataset_name: null)"
        )
    if script_args.dataset_config and not script_args.dataset_name:
        raise EmpathyRecipesError("dataset_config needs dataset_name (a mixture entry takes its own name)")
    if script_args.trainable_parameters is not None:
        if model_args.use_peft:
            raise EmpathyRecipesError("trainable_parameters (partial full fine-tuning) and use_peft are exclusive")
        try:
            re.compile(script_args.trainable_parameters)
        except re.error as err:
            raise EmpathyRecipesError(f"trainable_parameters is not a valid regex: {err}") from None
    for name in ("dataset_limit", "eval_limit"):
        value = getattr(script_args, name)
        if value is not None and value < 1:
            raise EmpathyRecipesError(f"{name} must be >= 1, got {value}")
    if script_args.last_reply_only_loss and training_args.assistant_only_loss:
        raise EmpathyRecipesError(
            "last_reply_only_loss and assistant_only_loss are exclusive: the first masks all but the final reply, "
            "the second keeps every assistant turn"
        )
    if script_args.prompt_format == "transcript" and training_args.assistant_only_loss:
        raise EmpathyRecipesError(
            "prompt_format transcript trains on the reply only (a prompt/completion pair): set assistant_only_loss: false"
        )
    if training_args.padding_free and not training_args.packing and training_args.max_length is not None:
        raise EmpathyRecipesError(
            "padding_free without packing does not truncate: set max_length: null, or packing: true (strategy bfd)"
        )


# ---- data --------------------------------------------------------------------------------------------------------

SFT_COLUMNS = ("messages",)


def check_chat_rows(messages_column: Sequence[Any], source: str) -> None:
    """Every row is a list of {role, content} messages with at least one assistant turn; the last is the reply."""
    if len(messages_column) == 0:
        raise EmpathyRecipesError(f"{source} is empty: nothing to train on")
    for i, messages in enumerate(messages_column):
        if not isinstance(messages, list) or not messages:
            raise EmpathyRecipesError(f"{source} row {i}: 'messages' must be a non-empty list of chat messages")
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise EmpathyRecipesError(f"{source} row {i}: every message needs 'role' and 'content'")
            if not isinstance(m["content"], str):
                raise EmpathyRecipesError(f"{source} row {i}: message content must be text")
        if messages[-1]["role"] != "assistant":
            raise EmpathyRecipesError(f"{source} row {i}: the last message must be the assistant's reply")


def check_sft_columns(column_names: Sequence[str], source: str) -> None:
    """The columns SFT needs are there (after conversion to the common schema)."""
    missing = [c for c in SFT_COLUMNS if c not in column_names]
    if missing:
        raise EmpathyRecipesError(f"{source} lacks column(s) {missing}; it has {sorted(column_names)}")


def to_last_reply_completion(messages: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """A conversational prompt/completion pair: everything before the final reply, and the reply."""
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def to_training_example(
    messages: list[dict[str, str]],
    prompt_format: str = "messages",
    last_reply_only_loss: bool = False,
    system_prompt: str | None = None,
) -> dict[str, list[dict[str, str]]]:
    """One common-schema conversation as SFTTrainer's input: ``{"messages": ...}`` (loss on the assistant turns or
    every token, by ``assistant_only_loss``), or a prompt/completion pair (loss on the final reply) when
    ``last_reply_only_loss`` or ``prompt_format == "transcript"`` (the context as one ``Speaker:``/``Listener:``
    user message ending in ``Listener: ``). ``system_prompt`` goes first unless the conversation has one."""
    from empathy_recipes.profiles import transcript

    system = (
        []
        if not system_prompt or (messages and messages[0]["role"] == "system")
        else [{"role": "system", "content": system_prompt}]
    )
    if prompt_format == "transcript":
        head = [m for m in messages[:-1] if m["role"] == "system"] or system
        context = [m for m in messages[:-1] if m["role"] != "system"]
        return {"prompt": [*head, {"role": "user", "content": transcript(context)}], "completion": messages[-1:]}
    if prompt_format != "messages":
        raise EmpathyRecipesError(f"prompt_format must be messages or transcript, not {prompt_format!r}")
    messages = system + list(messages)
    return to_last_reply_completion(messages) if last_reply_only_loss else {"messages": messages}


# ---- profiles ----------------------------------------------------------------------------------------------------


def cli_profile(args: Sequence[str]) -> str | None:
    """The value of ``--profile`` on the command line (``--profile x`` or ``--profile=x``), else None."""
    for i, tok in enumerate(args):
        if tok == "--profile" and i + 1 < len(args):
            return args[i + 1]
        if tok.startswith("--profile="):
            return tok.split("=", 1)[1]
    return None


def resolve_profile(recipe: dict[str, Any], cli: str | None, where: str, known: Iterable[str]) -> dict[str, Any]:
    """The recipe with its ``profiles`` block resolved: ``profiles[<profile>]`` laid over the other keys when the
    profile (command line, else the recipe's ``profile`` key, else ``project``) has a block, else the keys as they
    are. ``paper`` without a block is an error; so is a block key no parser field knows."""
    blocks = recipe.get(PROFILES_KEY) or {}
    if not isinstance(blocks, dict) or not all(isinstance(v, dict) for v in blocks.values()):
        raise EmpathyRecipesError(f"recipe {where}: `profiles` must map a profile name to a mapping of recipe keys")
    name = cli or recipe.get("profile") or "project"
    out = {k: v for k, v in recipe.items() if k != PROFILES_KEY}
    if name in blocks:
        validate_recipe_keys(blocks[name], set(known) - {PROFILES_KEY}, where=f"recipe {where}, profile {name}")
        out.update(blocks[name])
    elif name == "paper":
        raise EmpathyRecipesError(f"recipe {where} has no `profiles: {{paper: ...}}` block for --profile paper")
    out["profile"] = name
    return out


def write_resolved_recipe(recipe: dict[str, Any]) -> Path:
    """The resolved recipe as a temporary YAML file (for ``TrlParser``); the caller deletes it."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix="empathy-recipes-recipe-", suffix=".yaml")
    with open(fd, "w") as f:
        yaml.safe_dump(recipe, f, sort_keys=False)
    return Path(name)


def effective_recipe(path: str | Path, profile: str | None = None) -> dict[str, Any]:
    """The recipe at ``path`` as the SFT stage would apply it with ``--profile <profile>`` (no parser needed)."""
    recipe = load_recipe(path)
    if PROFILES_KEY not in recipe:
        if profile == "paper":
            raise EmpathyRecipesError(f"recipe {path} has no `profiles: {{paper: ...}}` block for --profile paper")
        return recipe
    blocks = recipe[PROFILES_KEY] or {}
    out = {k: v for k, v in recipe.items() if k != PROFILES_KEY}
    name = profile or recipe.get("profile") or "project"
    out.update(blocks.get(name, {}))
    out["profile"] = name
    return out


# ---- model structure ---------------------------------------------------------------------------------------------


def normalize_target_modules(targets: Sequence[str] | str | None) -> list[str] | str | None:
    """TRL's ModelConfig gives a list; PEFT wants the bare string for ``all-linear``."""
    if targets is None or isinstance(targets, str):
        return targets
    targets = list(targets)
    if len(targets) == 1 and targets[0] == ALL_LINEAR:
        return ALL_LINEAR
    return targets


def module_matches(module_name: str, target: str) -> bool:
    """PEFT's rule for a target given as a list item: the full name, or its last dotted components."""
    return module_name == target or module_name.endswith("." + target)


def check_lora_target_modules(targets: Sequence[str] | str | None, module_names: Iterable[str]) -> None:
    """Raise when a LoRA target module matches no module of the model (``all-linear`` and None always pass;
    a single string is a PEFT regex over full names)."""
    targets = normalize_target_modules(targets)
    names = [n for n in module_names if n]
    if targets is None or targets == ALL_LINEAR:
        return
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n in names):
            raise EmpathyRecipesError(f"LoRA target regex {targets!r} matches no module of the model")
        return
    missing = [t for t in targets if not any(module_matches(n, t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        raise EmpathyRecipesError(
            f"LoRA target module(s) {missing} not found in the model; its module names end in: {', '.join(leaves)}"
        )


def select_trainable_parameters(parameter_names: Iterable[str], pattern: str) -> list[str]:
    """Names matching ``pattern`` (``re.search``); raise when none does."""
    regex = re.compile(pattern)
    names = list(parameter_names)
    selected = [n for n in names if regex.search(n)]
    if not selected:
        sample = ", ".join(names[:6])
        raise EmpathyRecipesError(
            f"trainable_parameters {pattern!r} matches none of the model's {len(names)} parameters (e.g. {sample})"
        )
    return selected


# ---- checkpoints, model card -------------------------------------------------------------------------------------


_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir``, or None.

    transformers writes ``trainer_state.json`` last, so a folder without it is a checkpoint cut short (a run killed
    while saving): it is skipped rather than resumed from (``transformers.trainer_utils.get_last_checkpoint`` would
    pick it and the resume would fail).
    """
    path = Path(output_dir)
    if not path.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in path.iterdir() if p.is_dir() and (m := _CHECKPOINT_DIR.match(p.name))]
    for _, folder in sorted(found, reverse=True):
        if (folder / "trainer_state.json").is_file():
            return str(folder)
    return None


def _plain(value: Any) -> Any:
    """A YAML-safe copy of a recipe value (enums and other objects become their string value)."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a mixture entry: its set fields
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v is not None}
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(getattr(value, "value", value))


def _fmt_metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card_text(
    *,
    title: str,
    base_model: str,
    datasets: Sequence[str],
    recipe: dict[str, Any],
    metrics: dict[str, Any],
    method: str,
    command: str | None = None,
    merged_dir: str | None = None,
) -> str:
    """A model card: YAML front matter (base_model, datasets, tags) then base model, data, method, recipe, metrics."""
    hub_datasets = [d for d in datasets if looks_like_hub_id(d) and not Path(d).exists()]
    front: dict[str, Any] = {
        "base_model": base_model,
        "library_name": "peft" if method.startswith("LoRA") else "transformers",
        "tags": ["empathy-recipes", "sft", "trl", "empathetic-dialogues"],
    }
    if hub_datasets:
        front["datasets"] = hub_datasets
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    lines += [
        f"Supervised fine-tuning of [`{base_model}`]({'https://huggingface.co/' + base_model if '/' in base_model and not Path(base_model).exists() else base_model}) "
        "with TRL's `SFTTrainer`, by the empathy-recipes SFT stage (`scripts/sft.py`).",
        "",
        "## Data",
        "",
        *[f"- `{d}`" for d in datasets],
        "",
        "## Method",
        "",
        f"- {method}",
    ]
    if merged_dir:
        lines.append(f"- the base model merged with the adapter is saved in `{merged_dir}`")
    if command:
        lines += ["", "## Command", "", "```bash", command, "```"]
    lines += [
        "",
        "## Recipe (effective values)",
        "",
        "```yaml",
        yaml.safe_dump(_plain(recipe), sort_keys=True).rstrip(),
        "```",
    ]
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt_metric(v)} |" for k, v in sorted(metrics.items())] or ["| (none) | |"]
    return "\n".join(lines) + "\n"
