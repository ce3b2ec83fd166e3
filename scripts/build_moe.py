"""MoE stage: merge two or more expert models into one Mixtral MoE with mergekit, then check it loads and generates.

    python scripts/build_moe.py --experts outputs/sft-sensibility outputs/sft-rationality \\
        --prompt-sets outputs/select/sensibility outputs/select/rationality --output-dir outputs/moe

Each expert is a local folder or Hub id, or ``base+adapter`` for a LoRA adapter (merged with peft first). Each
expert's positive prompts (``gate_mode: hidden`` or ``cheap_embed``) are sampled reproducibly from its own selected
set, the i-th set for the i-th expert. ``--average-base`` first averages the experts (``mergekit-yaml``, linear,
equal weights) and uses the average as the MoE's base, so every non-MLP weight is the experts' mean as in the paper.

Output (``--output-dir``):
    mergekit_moe.yaml         the mergekit-moe config that was run (rerun by hand: mergekit-moe <it> <dir>)
    mergekit_average.yaml     the linear average config (with --average-base)
    positive_prompts.jsonl    expert, set, row id and prompt text of every sampled positive prompt
    experts/<i>-<name>/       LoRA experts merged into full models (only for base+adapter experts)
    base_average/             the averaged base (with --average-base)
    model/                    the MixtralForCausalLM (tokenizer included)
    build_moe.json            what was built: experts, weight fingerprints, base, router parameter names, a sample
    manifest.yaml             inputs (experts, prompt sets) with fingerprints, arguments, counts

The folder is built aside and swapped in as a whole (a killed build leaves the previous one intact); a folder
holding other files is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import yaml

from empathy_recipes import outputs
from empathy_recipes.data import load_ed, split_config_ref
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.hub import (
    CardInfo,
    add_hub_args,
    extend_model_card,
    input_ref,
    model_card_text,
    push_model_folder,
    redacted_command,
)
from empathy_recipes.llm import default_dtype, pick_device
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.models import resolve_model_ref
from empathy_recipes.moe import (
    GATE_MODES,
    PROMPT_FORMATS,
    PROMPT_GATE_MODES,
    ROUTER_PARAMETER_REGEX,
    ExpertRef,
    build_average_config,
    build_moe_config,
    check_distinct_experts,
    check_distinct_refs,
    check_expert_count,
    check_same_architecture,
    check_same_tokenizer,
    parse_expert_ref,
    render_prompt,
    router_parameter_names,
    sample_rows,
    validate_merge_config,
    validate_moe_config,
    weights_fingerprint,
)

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
OUTPUT_NAMES = (
    "mergekit_moe.yaml",
    "mergekit_average.yaml",
    "positive_prompts.jsonl",
    "experts",
    "base_average",
    "model",
    "build_moe.json",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", nargs="+", required=True, help="expert models: path, Hub id, or base+adapter")
    parser.add_argument(
        "--prompt-sets",
        nargs="*",
        default=[],
        help="one selected dataset per expert, same order (path, Hub id, or Hub id:config such as org/sets:sensibility)",
    )
    parser.add_argument("--output-dir", default="outputs/moe")
    parser.add_argument("--template", help="a recipes/<model>/moe/mergekit_moe.yaml whose settings are the defaults")
    parser.add_argument("--gate-mode", choices=GATE_MODES, help="router initialisation (default: hidden)")
    parser.add_argument("--experts-per-token", type=int, help="experts active per token (default: 2)")
    parser.add_argument("--dtype", help="output dtype, e.g. bfloat16 (default: the base model's)")
    parser.add_argument("--average-base", action="store_true", help="use the experts' linear average as the base")
    parser.add_argument(
        "--base-model",
        help="explicit MoE base (non-MLP weights, tokenizer; path or Hub id); default: the first expert",
    )
    parser.add_argument("--num-prompts", type=int, default=32, help="positive prompts sampled per expert")
    parser.add_argument("--seed", type=int, default=42, help="seed of the positive prompt sampling")
    parser.add_argument("--prompt-format", choices=PROMPT_FORMATS, default="chat")
    parser.add_argument(
        "--prompts-without-reply", action="store_true", help="drop the listener reply from positive prompts"
    )
    parser.add_argument(
        "--contrastive",
        action="store_true",
        help="also give each expert the other experts' prompts as negative prompts (router rows start apart)",
    )
    parser.add_argument(
        "--device", default="cpu", help="device of the merge and of the final load-and-generate check: cpu, cuda, auto"
    )
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated by the final check")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <output-dir>/model")
    add_hub_args(parser, "the MoE model (<output-dir>/model, card with the mergekit config)")
    add_log_args(parser)
    args = parser.parse_args(argv)
    template = load_template(args.template) if args.template else {}
    if args.gate_mode is None:
        args.gate_mode = template.get("gate_mode", "hidden")
    if args.experts_per_token is None:
        args.experts_per_token = int(template.get("experts_per_token", 2))
    if args.dtype is None:
        args.dtype = template.get("dtype")
    return args


def load_template(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise EmpathyRecipesError(f"template {path} does not exist")
    return yaml.safe_load(file.read_text())  # validated by mergekit in main, after the cheap expert checks


def load_configs(experts: list[ExpertRef]) -> list[dict]:
    """Each expert's config.json as a dict (the base model's for a LoRA expert)."""
    from transformers import AutoConfig

    configs = []
    for ref in experts:
        try:
            configs.append(AutoConfig.from_pretrained(ref.model).to_dict())
        except (OSError, ValueError) as err:
            raise EmpathyRecipesError(f"cannot read the config of {ref.model}: {str(err).splitlines()[0]}") from None
    return configs


def tokenizer_source(ref: ExpertRef) -> str:
    """A LoRA adapter that ships a tokenizer wins over its base's tokenizer."""
    if ref.adapter and any((Path(ref.adapter) / f).exists() for f in TOKENIZER_FILES):
        return ref.adapter
    return ref.model


def load_tokenizers(experts: list[ExpertRef]) -> list:
    from transformers import AutoTokenizer

    tokenizers = []
    for ref in experts:
        source = tokenizer_source(ref)
        try:
            tokenizers.append(AutoTokenizer.from_pretrained(source))
        except (OSError, ValueError) as err:
            raise EmpathyRecipesError(f"cannot load the tokenizer of {source}: {str(err).splitlines()[0]}") from None
    return tokenizers


def sample_prompts(args: argparse.Namespace, tokenizer, n_experts: int) -> tuple[list[list[str]] | None, list[dict]]:
    """Per expert, ``--num-prompts`` rows sampled from its own set and rendered for mergekit; plus a record."""
    if args.gate_mode not in PROMPT_GATE_MODES:
        return None, []
    if len(args.prompt_sets) != n_experts:
        raise EmpathyRecipesError(
            f"gate mode {args.gate_mode!r} needs one prompt set per expert: {n_experts} experts, "
            f"{len(args.prompt_sets)} prompt sets"
        )
    if args.prompt_format == "chat" and not tokenizer.chat_template:
        raise EmpathyRecipesError("the base tokenizer has no chat template: use --prompt-format plain")
    prompts: list[list[str]] = []
    record: list[dict] = []
    for idx, source in enumerate(args.prompt_sets):
        path, config = split_config_ref(source)  # path, Hub id, or Hub id:config (one set of the select stage)
        ds = load_ed(path, config=config)
        rows = sample_rows(len(ds), args.num_prompts, args.seed)
        texts = []
        for row_idx in rows:
            row = ds[row_idx]
            text = render_prompt(
                row["messages"],
                prompt_format=args.prompt_format,
                apply_chat_template=tokenizer.apply_chat_template,
                bos_token=tokenizer.bos_token,
                include_reply=not args.prompts_without_reply,
            )
            texts.append(text)
            record.append({"expert": idx, "prompt_set": source, "id": row["id"], "row": row_idx, "prompt": text})
        prompts.append(texts)
    return prompts, record


def local_copy(ref: str) -> Path:
    """A local folder for a model reference: itself (absolute), or a Hub snapshot (what mergekit downloads anyway)."""
    path = Path(ref).expanduser()
    if path.exists():
        return path.resolve()  # absolute: mergekit's model card takes a relative `org/name`-like path for a Hub id
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]))
    except Exception as err:  # noqa: BLE001 - any Hub failure is the user's missing model
        raise EmpathyRecipesError(f"cannot download {ref}: {str(err).splitlines()[0]}") from None


def merge_lora(ref: ExpertRef, out_dir: Path) -> Path:
    """``base+adapter`` -> a full model folder (peft ``merge_and_unload``) with the expert's tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info(f"merging LoRA {ref.adapter} into {ref.model} -> {out_dir}")
    base = AutoModelForCausalLM.from_pretrained(ref.model, dtype="auto")
    merged = PeftModel.from_pretrained(base, ref.adapter).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_source(ref)).save_pretrained(out_dir)
    return out_dir


def merge_options(device: str):
    from mergekit.options import MergeOptions

    return MergeOptions(device=device, copy_tokenizer=True, write_model_card=True)


def average_experts(expert_dirs: list[Path], dtype: str | None, out: Path, device: str) -> Path:
    from mergekit.merge import run_merge

    config = build_average_config([str(d) for d in expert_dirs], dtype=dtype)
    parsed = validate_merge_config(config)
    (out / "mergekit_average.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    target = out / "base_average"
    shutil.rmtree(target, ignore_errors=True)
    logger.info(f"averaging {len(expert_dirs)} experts (linear, equal weights) -> {target}")
    run_merge(parsed, str(target), merge_options(device))
    return target


def check_moe(model_dir: Path, prompt: str, max_new_tokens: int, device: str = "cpu") -> dict:
    """Load the MoE with transformers on ``device`` (``auto``: the accelerator when there is one), generate a few
    tokens, list the router parameters."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(None if device == "auto" else device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=default_dtype(device)).to(device)
    if type(model).__name__ != "MixtralForCausalLM":
        raise RuntimeError(f"mergekit wrote a {type(model).__name__}, expected MixtralForCausalLM")
    from empathy_recipes.device_report import report_device

    report_device("moe", model.device)
    routers = router_parameter_names([name for name, _ in model.named_parameters()])
    if len(routers) != model.config.num_hidden_layers:
        raise RuntimeError(f"expected one router per decoder block, found {routers}")
    # How alike the experts' router rows start (1.0: the router cannot tell them apart before training).
    params = dict(model.named_parameters())
    similarity = []
    for name in routers:
        rows = torch.nn.functional.normalize(params[name].detach().float(), dim=-1)
        cosine = rows @ rows.T
        similarity.append(cosine[~torch.eye(len(rows), dtype=torch.bool)].max().item())
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    completion = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return {
        "architecture": type(model).__name__,
        "num_local_experts": model.config.num_local_experts,
        "num_experts_per_tok": model.config.num_experts_per_tok,
        "router_parameters": routers,
        "router_rows_max_cosine_mean": sum(similarity) / len(similarity),
        "check_prompt": prompt,
        "check_completion": completion,
        "check_device": device,
    }


def check_prompt(tokenizer, prompt_format: str) -> str:
    """A fixed ED-style prompt for the load-and-generate check, in the prompts' format."""
    messages = [{"role": "user", "content": "I finally got the job I wanted, but I am nervous about starting."}]
    if prompt_format == "chat" and tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return messages[0]["content"]


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("moe", args, __name__)
    out = Path(args.output_dir).resolve()
    model_dir = out / "model"

    # 1. Everything a user can get wrong, before any weight is loaded.
    experts = [parse_expert_ref(spec) for spec in args.experts]
    check_expert_count(experts, args.experts_per_token)
    check_distinct_refs(experts)
    if args.template:
        validate_moe_config(load_template(args.template))
    if args.base_model and args.average_base:
        raise EmpathyRecipesError("give either --base-model or --average-base, not both")
    if model_dir.exists() and not args.overwrite:
        raise EmpathyRecipesError(f"{model_dir} exists: pass --overwrite (make moe ARGS=--overwrite) to replace it")
    # An explicit base gives the MoE its non-MLP weights and tokenizer: it must match the experts too.
    checked = experts + (
        [ExpertRef(spec=args.base_model, model=resolve_model_ref(args.base_model))] if args.base_model else []
    )
    names = [ref.spec for ref in checked]
    check_same_architecture(names, load_configs(checked))
    tokenizers = load_tokenizers(checked)
    check_same_tokenizer(names, [tok.get_vocab() for tok in tokenizers])
    names = names[: len(experts)]
    # Prompts are rendered with the base's tokenizer: mergekit tokenizes them with it.
    prompts, record = sample_prompts(args, tokenizers[-1] if args.base_model else tokenizers[0], len(experts))

    # 2-6 are built in a temporary folder beside --output-dir and swapped in as a whole at the end: a failed or
    # killed build never leaves a half folder there, and an earlier good build stays intact.
    with outputs.atomic_dir(out, owned=OUTPUT_NAMES) as tmp:
        summary = build(args, argv, experts, names, checked, tokenizers, prompts, record, tmp, out)
    logger.info(f"{summary['architecture']} with {summary['num_local_experts']} experts -> {model_dir}")
    routers = summary["router_parameters"]
    shown = ", ".join(routers) if len(routers) <= 4 else f"{routers[0]}, {routers[1]}, ..., {routers[-1]}"
    logger.info(f"{len(routers)} router parameters (regex {ROUTER_PARAMETER_REGEX}): {shown}")
    logger.info(
        f"router rows, mean over layers of the max cosine between experts: "
        f"{summary['router_rows_max_cosine_mean']:.3f}"
    )
    logger.info(f"check generation: {summary['check_completion']!r}")
    if args.hub_repo:  # after every local file is written: a failed push loses nothing
        logger.info(f"pushed to {push_model_folder(model_dir, args.hub_repo, private=args.private)}")
    return summary


def build(args, argv, experts, names, checked, tokenizers, prompts, record, tmp: Path, out: Path) -> dict:
    """Steps 2-6 into ``tmp``, with every path that ends up in a file naming ``out`` (where ``tmp`` is swapped)."""

    def final(path) -> Path:
        return Path(str(path).replace(str(tmp), str(out), 1))

    model_dir = tmp / "model"

    # 2. Full expert folders (LoRA merged), and a check that no two experts are the same.
    expert_dirs = []
    for idx, ref in enumerate(experts):
        if ref.adapter:
            expert_dirs.append(merge_lora(ref, tmp / "experts" / f"{idx}-{ref.name}"))
        else:
            expert_dirs.append(local_copy(ref.model))
    fingerprints = [weights_fingerprint(d) for d in expert_dirs]
    check_distinct_experts(names, fingerprints)

    # 3. The base (non-MLP weights) and the mergekit-moe config, checked by mergekit's own validators.
    if args.average_base:
        base = str(average_experts(expert_dirs, args.dtype, tmp, args.device))
    elif args.base_model:
        base = str(local_copy(checked[-1].model))
    else:
        base = str(expert_dirs[0])
    config = build_moe_config(
        base,
        [str(d) for d in expert_dirs],
        prompts,
        gate_mode=args.gate_mode,
        experts_per_token=args.experts_per_token,
        dtype=args.dtype,
        contrastive=args.contrastive,
    )
    parsed = validate_moe_config(config)
    config_path = tmp / "mergekit_moe.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000))
    outputs.write_jsonl(tmp / "positive_prompts.jsonl", record)
    logger.info(f"wrote {final(config_path)} ({len(experts)} experts, gate_mode={args.gate_mode})")

    # 4. mergekit-moe (its Python API; same as `mergekit-moe <config> <model_dir> --device <device>`).
    from mergekit.scripts.moe import build as mergekit_moe

    logger.info(f"mergekit-moe {final(config_path)} {final(model_dir)} --device {args.device}")
    mergekit_moe(parsed, out_path=str(model_dir), merge_options=merge_options(args.device), device=args.device)
    shutil.copy(config_path, model_dir / "mergekit_moe_config.yml")
    generation_config = Path(base) / "generation_config.json"
    if generation_config.exists():
        shutil.copy(generation_config, model_dir / "generation_config.json")

    # 5. The result must load with transformers and generate.
    summary = check_moe(
        model_dir, check_prompt(tokenizers[0], args.prompt_format), args.max_new_tokens, device=args.device
    )
    summary.update(
        {
            "model": str(final(model_dir)),
            "experts": [
                {"spec": ref.spec, "path": str(final(d)), "mlp_sha256": fp}
                for ref, d, fp in zip(experts, expert_dirs, fingerprints)
            ],
            "base_model": str(final(base)),
            "gate_mode": args.gate_mode,
            "prompt_sets": args.prompt_sets,
            "router_parameter_regex": ROUTER_PARAMETER_REGEX,
        }
    )
    outputs.write_text(tmp / "build_moe.json", json.dumps(summary, indent=2, ensure_ascii=False))
    outputs.relocate_text(tmp, tmp, out)  # mergekit's configs and cards name the folder it was given

    # 6. A card (what it is, the mergekit config, inputs, command, licence) and the manifest; the push comes after.
    info = CardInfo(
        title=f"Empathy MoE of {len(experts)} experts ({summary['architecture']})",
        description=(
            f"A mixture of experts built by mergekit-moe (gate_mode `{args.gate_mode}`, "
            f"{args.experts_per_token} experts per token) from the experts {', '.join(f'`{n}`' for n in names)}; "
            "the Efficient-Empathy MoE stage (`scripts/build_moe.py`). Router parameters (for `make moe-router`): "
            f"`{ROUTER_PARAMETER_REGEX}`."
        ),
        command=redacted_command(argv, __file__),
        inputs=[input_ref(ref.spec if not ref.adapter else ref.model, "model") for ref in experts]
        + [input_ref(split_config_ref(p)[0]) for p in args.prompt_sets],
        extra_sections={"mergekit config": f"```yaml\n{config_path.read_text().rstrip()}\n```"},
        tags=["moe", "mergekit", "mixtral"],
    )
    hub_experts = [ref.spec for ref in experts if not ref.adapter]
    extend_model_card(model_dir / "README.md", model_card_text(info, base_model=hub_experts))
    inputs = {}
    for idx, ref in enumerate(experts):
        inputs[f"expert_{idx}"] = ref.model
        if ref.adapter:
            inputs[f"expert_{idx}_adapter"] = ref.adapter
    inputs.update({f"prompt_set_{idx}": split_config_ref(p)[0] for idx, p in enumerate(args.prompt_sets)})
    if args.base_model:
        inputs["base_model"] = checked[-1].model
    counts = {
        "experts": len(experts),
        "positive_prompts": len(record),
        "router_parameters": len(summary["router_parameters"]),
    }
    outputs.write_manifest(tmp, "moe", inputs, args, counts=counts, path=tmp / outputs.MANIFEST_NAME)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
