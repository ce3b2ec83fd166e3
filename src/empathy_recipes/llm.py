"""The one LLM layer: the CLI flags every LLM stage shares, their validation, the device/dtype policy, and the
distilabel LLM for ``--backend``.

Backends, chosen by ``--backend`` with the same pipeline code:

- ``transformers`` (CPU or GPU, the default; ``--model`` is a local folder or a Hub id, default the embedded
  SmolLM2-135M-Instruct),
- ``vllm`` (GPU; ``pip install -e '.[vllm]'``),
- ``openai``: any OpenAI-compatible server (a ``vllm serve`` endpoint, a TGI / Inference Endpoint, OpenAI itself):
  ``--base-url`` is required, the key is read from the environment variable named by ``--api-key-env``.

``--ray`` turns the pipeline into a distilabel ``RayPipeline`` (``pip install -e '.[ray]'``; submit with
``ray job submit -- python <script> ...`` on a cluster).

Device/dtype policy (shared with :mod:`empathy_recipes.generation`): ``--device`` as given, else the accelerator when
there is one, else CPU; on CPU models load in float32 (bf16 matmuls are slow on most CPUs), elsewhere in the
checkpoint's own dtype. A tokenizer used for batched generation pads on the left and pads with eos when it has no
pad token (:func:`prepare_generation_tokenizer`).

The other core modules of the layer: :mod:`empathy_recipes.prob_scoring` (probability-weighted judge scores and the
judge Task base), :mod:`empathy_recipes.prefill` (LLMs whose answer starts with a given prefix),
:mod:`empathy_recipes.pipeline_io` (the pipeline, its ED loader step, saving/pushing a Distiset) and
:mod:`empathy_recipes.resume` (row-level resume after a kill).

Stage scripts use it like this (read top to bottom)::

    parser = argparse.ArgumentParser()
    add_llm_args(parser)                      # --backend --model --base-url ... --output-dir --limit
    parser.set_defaults(temperature=0.0)      # a stage may change any default
    args = parser.parse_args()
    llm = build_llm(args)                     # or prob_scoring.build_scoring_llm(args, axes) for a judge
    with make_pipeline("my-stage", args, args.cache_dir) as pipeline:
        loader, dataset = ed_loader_step(args.dataset, args.batch_size, limit=args.limit)
        loader >> MyTask(llm=llm, input_batch_size=args.batch_size)
    distiset = pipeline.run(use_cache=True)
    save_and_push_distiset(distiset, args)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
from typing import Any

from empathy_recipes.checks import check_model_ref
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.models import default_model_path, resolve_model_ref

BACKENDS = ("transformers", "vllm", "openai")
_BACKEND_PACKAGES = {"vllm": ("vllm", "vllm"), "openai": ("openai", "openai")}


# ---------------------------------------------------------------------------------------------------------------
# CLI flags
# ---------------------------------------------------------------------------------------------------------------
def add_llm_args(parser: argparse.ArgumentParser, default_model: str | None = None) -> argparse.ArgumentParser:
    """Add the generic LLM / pipeline flags to ``parser`` (one group) and return it.

    Defaults suit generation (temperature 0.7); a judge stage calls ``parser.set_defaults(temperature=0.0)``.
    """
    g = parser.add_argument_group("LLM backend and pipeline")
    g.add_argument("--backend", choices=BACKENDS, default="transformers", help="LLM backend (default transformers)")
    g.add_argument(
        "--model",
        default=str(default_model) if default_model else str(default_model_path()),
        help="Hub id or local folder (transformers/vllm), or the served model name (openai); "
        "default the embedded SmolLM2-135M-Instruct",
    )
    g.add_argument("--base-url", default=None, help="OpenAI-compatible server URL, e.g. http://localhost:8000/v1")
    g.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="name of the environment variable holding the API key (openai backend)",
    )
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--batch-size", type=int, default=8, help="rows per distilabel batch (and per LLM call)")
    g.add_argument("--num-generations", type=int, default=1)
    g.add_argument("--device", default=None, help="transformers device: cpu, cuda, cuda:0, mps (default: auto)")
    g.add_argument("--ray", action="store_true", help="run as a distilabel RayPipeline (many nodes)")
    g.add_argument("--hub-repo", default=None, help="push the result to this Hub dataset repo (org/name)")
    g.add_argument("--private", action="store_true", help="make the pushed Hub repo private")
    g.add_argument(
        "--cache-dir", default=None, help="distilabel cache (resume) directory; default ~/.cache/distilabel"
    )
    g.add_argument("--output-dir", default=None, help="where the result is saved")
    g.add_argument("--limit", type=int, default=None, help="only the first N input rows")
    return parser


def validate_llm_args(args: argparse.Namespace) -> None:
    """Check the generic flags and raise a one-line :class:`EmpathyRecipesError` before any model is loaded."""
    if args.backend not in BACKENDS:
        raise EmpathyRecipesError(f"--backend must be one of {', '.join(BACKENDS)}, not {args.backend!r}")
    for name in ("batch_size", "num_generations", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise EmpathyRecipesError(f"--{name.replace('_', '-')} must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise EmpathyRecipesError("--limit must be >= 1")
    if args.temperature < 0:
        raise EmpathyRecipesError("--temperature must be >= 0")
    if not 0 < args.top_p <= 1:
        raise EmpathyRecipesError("--top-p must be in (0, 1]")
    if args.backend == "openai":
        if not args.base_url:
            raise EmpathyRecipesError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        if not os.environ.get(args.api_key_env):
            raise EmpathyRecipesError(
                f"--backend openai reads the API key from ${args.api_key_env}, which is not set "
                f"(a server without auth accepts any value: export {args.api_key_env}=EMPTY)"
            )
    else:
        resolve_model_ref(args.model)
        if args.backend == "transformers":
            check_model_ref(args.model)  # offline, a Hub id must be cached: one line now, not a traceback later
        if args.base_url:
            raise EmpathyRecipesError(f"--base-url only applies to --backend openai, not {args.backend}")
    if args.hub_repo is not None and not re.match(r"^[\w.-]+/[\w.-]+$", args.hub_repo):
        raise EmpathyRecipesError(f"--hub-repo must look like org/name, not {args.hub_repo!r}")


def require_backend_packages(args: argparse.Namespace) -> None:
    """One clear error when the chosen backend (or ``--ray``) needs a package that is not installed."""
    needs = []
    if args.backend in _BACKEND_PACKAGES:
        needs.append(_BACKEND_PACKAGES[args.backend])
    if getattr(args, "ray", False):
        needs.append(("ray", "ray"))
    for module, extra in needs:
        if importlib.util.find_spec(module) is None:
            raise EmpathyRecipesError(f"{module} is not installed: pip install -e '.[{extra}]'")


# ---------------------------------------------------------------------------------------------------------------
# Device and dtype policy, tokenizer setup
# ---------------------------------------------------------------------------------------------------------------
def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def pick_device(device: str | None = None) -> str:
    """``device`` as given, else ``cuda`` when available, else ``mps``, else ``cpu``."""
    if device:
        return device
    if cuda_available():
        return "cuda"
    import torch

    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str) -> str:
    """The dtype to load a model in on ``device``: float32 on CPU (bf16 matmuls are slow on most CPUs), else the
    checkpoint's own dtype (``auto``)."""
    return "float32" if device == "cpu" else "auto"


def prepare_generation_tokenizer(tokenizer: Any) -> Any:
    """Set ``tokenizer`` up for batched generation: left padding and a pad token (eos when it has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------
# LLMs
# ---------------------------------------------------------------------------------------------------------------
def generation_kwargs_for(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The ``generation_kwargs`` distilabel passes to ``generate`` for this backend (overrides win)."""
    kw: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    kw.update(overrides)
    if args.backend == "transformers":
        if kw.get("temperature", 1.0) == 0:
            # transformers refuses temperature 0; greedy decoding is do_sample=False (temperature then unused).
            kw.update(temperature=1.0, top_p=1.0, do_sample=False)
        else:
            kw.setdefault("do_sample", True)
    return kw


def transformers_llm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``model`` / ``device`` / ``torch_dtype`` of a distilabel TransformersLLM under the device/dtype policy."""
    device = args.device
    on_cpu = device == "cpu" or (device is None and not cuda_available())
    return {
        "model": args.model,
        "device": device or ("cpu" if on_cpu else None),
        "torch_dtype": default_dtype("cpu") if on_cpu else "auto",
        # distilabel would copy HF_TOKEN into the pipeline.yaml it saves and pushes (as a SecretStr that its own
        # save_to_disk then cannot read back); transformers reads HF_TOKEN from the environment by itself.
        "token": None,
    }


def _openai_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "base_url": args.base_url, "api_key": os.environ.get(args.api_key_env)}


def build_llm(args: argparse.Namespace, response_prefix: str | None = None, **generation_overrides: Any):
    """A distilabel LLM for ``--backend`` (TransformersLLM, vLLM or OpenAILLM), validated, not loaded yet.

    ``response_prefix`` prefills the start of every answer (transformers and vLLM; an OpenAI-compatible chat
    server cannot be prefilled, so there it is an error).
    """
    from distilabel.models.llms import OpenAILLM, TransformersLLM, vLLM

    from empathy_recipes.prefill import PrefilledTransformersLLM, PrefilledVLLM

    validate_llm_args(args)
    gen = generation_kwargs_for(args, **generation_overrides)
    if response_prefix and args.backend == "openai":
        raise EmpathyRecipesError(
            "a response prefix needs --backend transformers or vllm (chat servers can't prefill)"
        )
    if args.backend == "transformers":
        if response_prefix:
            return PrefilledTransformersLLM(
                **transformers_llm_kwargs(args), generation_kwargs=gen, response_prefix=response_prefix
            )
        return TransformersLLM(**transformers_llm_kwargs(args), generation_kwargs=gen)
    if args.backend == "vllm":
        if response_prefix:
            return PrefilledVLLM(model=args.model, generation_kwargs=gen, response_prefix=response_prefix)
        return vLLM(model=args.model, generation_kwargs=gen)
    return OpenAILLM(**_openai_kwargs(args), generation_kwargs=gen)
