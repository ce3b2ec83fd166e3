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

Scale flags (one set for every LLM stage): ``--tensor-parallel-size`` (GPUs per vLLM engine),
``--gpu-memory-utilization`` and ``--max-model-len`` (vLLM), ``--dtype`` (every local backend) and ``--replicas``
(copies of the LLM step, each on its own GPU(s): distilabel ``StepResources(replicas=..., gpus=...)``, see
:func:`llm_step_resources`). :func:`check_llm_environment` fails with one line, before any pipeline is built, when a
package is missing, more GPUs are asked for than are visible, or ``--base-url`` cannot be reached.

Device/dtype policy (shared with :mod:`empathy_recipes.generation`): ``--device`` as given, else ``cuda`` when a GPU
is visible, else ``mps``, else CPU; on CPU models load in float32 (bf16 matmuls are slow on most CPUs), elsewhere in
the checkpoint's own dtype (``--dtype`` overrides). GPUs are counted through NVML (:func:`visible_gpu_count`), never
by initialising CUDA: a distilabel pipeline forks its step workers after it is built, and a parent that touched CUDA
makes every worker fail with ``Cannot re-initialize CUDA in forked subprocess``. A tokenizer used for batched
generation pads on the left and pads with eos when it has no pad token (:func:`prepare_generation_tokenizer`).

The other core modules of the layer: :mod:`empathy_recipes.prob_scoring` (probability-weighted judge scores and the
judge Task base), :mod:`empathy_recipes.backends` (the distilabel LLM classes, GPU-safe, prefilled),
:mod:`empathy_recipes.pipeline_io` (the pipeline, its input rows, saving/pushing a Distiset) and
:mod:`empathy_recipes.resume` (row-level resume after a kill).

Stage scripts use it like this (read top to bottom)::

    parser = argparse.ArgumentParser()
    add_llm_args(parser)                      # --backend --model --base-url ... --output-dir --limit
    parser.set_defaults(temperature=0.0)      # a stage may change any default
    args = parser.parse_args()
    llm = build_llm(args)                     # or prob_scoring.build_scoring_llm(args, axes) for a judge
    check_llm_environment(args)               # packages, GPUs, --base-url reachable: one-line errors
    rows = load_rows(args.dataset, limit=args.limit)
    with make_pipeline("my-stage", args, cache_dir) as pipeline:   # the stage's build_distilabel_pipeline()
        MyTask(llm=llm, input_batch_size=args.batch_size, resources=llm_step_resources(args))
    run = run_pipeline(pipeline, rows, cache_dir, args.batch_size)  # resumes a killed run
    save_and_push_distiset(run.distiset, args)
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import re
import socket
import subprocess
import sys
from typing import Any
from urllib.parse import urlparse

from empathy_recipes.checks import check_model_ref
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.models import default_model_path, resolve_model_ref

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm", "openai")
DTYPES = ("auto", "float32", "float16", "bfloat16")
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
    add_scale_args(g)
    g.add_argument("--ray", action="store_true", help="run as a distilabel RayPipeline (many nodes)")
    g.add_argument("--hub-repo", default=None, help="push the result to this Hub dataset repo (org/name)")
    g.add_argument("--private", action="store_true", help="make the pushed Hub repo private")
    g.add_argument(
        "--cache-dir", default=None, help="distilabel cache (resume) directory; default ~/.cache/distilabel"
    )
    g.add_argument("--output-dir", default=None, help="where the result is saved")
    g.add_argument("--limit", type=int, default=None, help="only the first N input rows")
    return parser


def add_scale_args(group: Any, replicas: bool = True) -> None:
    """The device and scale flags (``--device --dtype --tensor-parallel-size --gpu-memory-utilization
    --max-model-len`` and, for a distilabel stage, ``--replicas``), shared by every LLM stage and
    ``evaluation/generate.py``."""
    group.add_argument("--device", default=None, help="transformers device: cpu, cuda, cuda:0, mps (default: auto)")
    group.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="weights dtype (auto: float32 on CPU, else the checkpoint's)"
    )
    group.add_argument(
        "--tensor-parallel-size", type=int, default=1, help="vllm: GPUs one engine shards the model over (default 1)"
    )
    group.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="vllm: share of each GPU's memory (default 0.9)"
    )
    group.add_argument(
        "--max-model-len", type=int, default=None, help="vllm: context length cap (default: the model's)"
    )
    if not replicas:
        return
    group.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="copies of the LLM step, each with its own GPU(s) (distilabel StepResources; default 1)",
    )


def validate_scale_args(args: argparse.Namespace) -> None:
    """One-line errors for bad device/scale flags (no hardware is looked at here: see :func:`check_llm_environment`)."""
    if args.tensor_parallel_size < 1:
        raise EmpathyRecipesError(f"--tensor-parallel-size must be >= 1, not {args.tensor_parallel_size}")
    if args.tensor_parallel_size > 1 and args.backend != "vllm":
        raise EmpathyRecipesError(f"--tensor-parallel-size applies to --backend vllm, not {args.backend}")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise EmpathyRecipesError(f"--gpu-memory-utilization must be in (0, 1], not {args.gpu_memory_utilization}")
    if args.max_model_len is not None and args.max_model_len < 1:
        raise EmpathyRecipesError(f"--max-model-len must be >= 1, not {args.max_model_len}")
    if getattr(args, "replicas", 1) < 1:
        raise EmpathyRecipesError(f"--replicas must be >= 1, not {args.replicas}")
    if args.dtype not in DTYPES:
        raise EmpathyRecipesError(f"--dtype must be one of {', '.join(DTYPES)}, not {args.dtype!r}")
    if args.device is not None and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", args.device):
        raise EmpathyRecipesError(f"--device must be cpu, cuda, cuda:N or mps, not {args.device!r}")


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
    validate_scale_args(args)
    if args.backend == "openai":
        validate_openai_args(args)
    else:
        resolve_model_ref(args.model)
        if args.backend == "transformers":
            check_model_ref(args.model)  # offline, a Hub id must be cached: one line now, not a traceback later
        if args.base_url:
            raise EmpathyRecipesError(f"--base-url only applies to --backend openai, not {args.backend}")
    if args.hub_repo is not None:  # org/name; offline or without a token: say so now, not after hours of generation
        from empathy_recipes.hub import hub_repo_id

        hub_repo_id(args.hub_repo)


def validate_openai_args(args: argparse.Namespace) -> None:
    """``--base-url`` given and well formed, and the API key's environment variable set."""
    if not args.base_url:
        raise EmpathyRecipesError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
    url = urlparse(args.base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise EmpathyRecipesError(
            f"--base-url must be an http(s) URL like http://localhost:8000/v1, not {args.base_url!r}"
        )
    if not os.environ.get(args.api_key_env):
        raise EmpathyRecipesError(
            f"--backend openai reads the API key from ${args.api_key_env}, which is not set "
            f"(a server without auth accepts any value: export {args.api_key_env}=EMPTY)"
        )


def check_llm_environment(args: argparse.Namespace, timeout: float = 5.0) -> None:
    """What the flags need from this machine, checked before any pipeline is built, each failure one line: the
    backend's package (and ``ray`` for ``--ray``) installed; enough GPUs visible for ``--device cuda`` and for
    ``--tensor-parallel-size`` x ``--replicas`` with vLLM (counted without initialising CUDA); ``--base-url``
    accepting a TCP connection within ``timeout`` seconds."""
    needs = []
    if args.backend in _BACKEND_PACKAGES:
        needs.append(_BACKEND_PACKAGES[args.backend])
    if getattr(args, "ray", False):
        needs.append(("ray", "ray"))
    for module, extra in needs:
        if importlib.util.find_spec(module) is None:
            raise EmpathyRecipesError(f"{module} is not installed: pip install -e '.[{extra}]'")
    if getattr(args, "ray", False):
        return  # the GPUs that count are the Ray cluster's, not this machine's
    if args.backend == "vllm":
        wanted = args.tensor_parallel_size * getattr(args, "replicas", 1)
        seen = visible_gpu_count()
        if wanted > seen:
            raise EmpathyRecipesError(
                f"--tensor-parallel-size {args.tensor_parallel_size} x --replicas {getattr(args, 'replicas', 1)} "
                f"needs {wanted} GPU(s), {seen} visible{_visible_devices_note()}"
            )
    elif args.backend == "transformers" and (args.device or "").startswith("cuda"):
        seen = visible_gpu_count()
        index = int(args.device.split(":")[1]) if ":" in args.device else 0
        if index >= seen:
            raise EmpathyRecipesError(
                f"--device {args.device} but {seen} CUDA GPU(s) visible{_visible_devices_note()}"
            )
    if args.backend == "openai":
        check_server_reachable(args.base_url, timeout)


def check_server_reachable(base_url: str, timeout: float = 5.0) -> None:
    """A TCP connection to ``base_url``'s host and port opens within ``timeout`` seconds (one-line error if not)."""
    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            pass
    except OSError as err:
        raise EmpathyRecipesError(
            f"--base-url {base_url}: cannot connect to {url.hostname}:{port} ({err.strerror or err}); "
            "is the server running?"
        ) from None


def _visible_devices_note() -> str:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f" (CUDA_VISIBLE_DEVICES={env})" if env is not None else ""


# ---------------------------------------------------------------------------------------------------------------
# Device and dtype policy, tokenizer setup
# ---------------------------------------------------------------------------------------------------------------
def visible_gpu_count() -> int:
    """CUDA GPUs this process may use (``CUDA_VISIBLE_DEVICES`` respected), counted WITHOUT initialising CUDA.

    ``torch.cuda.is_available()`` / ``device_count()`` initialise the CUDA driver in the calling process; a distilabel
    pipeline then forks its step workers, and CUDA cannot be re-initialised in a forked child. So the count comes
    from NVML (what torch itself does under ``PYTORCH_NVML_BASED_CUDA_CHECK=1``); where NVML cannot answer, a child
    process counts (CUDA is initialised there, not here). A CPU-only torch build sees 0.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    if not torch.backends.cuda.is_built():
        return 0
    try:  # torch's own NVML count (respects CUDA_VISIBLE_DEVICES); -1 when NVML cannot answer
        count = torch.cuda._device_count_nvml()
    except Exception:  # a torch without it, or an NVML error
        count = -1
    if count >= 0:
        return count
    return _gpu_count_in_child(os.environ.get("CUDA_VISIBLE_DEVICES"))


@functools.lru_cache(maxsize=8)
def _gpu_count_in_child(visible_devices: str | None) -> int:
    """``torch.cuda.device_count()`` asked of a child process (CUDA is initialised there, not here); once per
    ``CUDA_VISIBLE_DEVICES`` value."""
    code = "import torch; print(torch.cuda.device_count())"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return 0


def cuda_available() -> bool:
    """True when a CUDA GPU is visible (without initialising CUDA: see :func:`visible_gpu_count`)."""
    return visible_gpu_count() > 0


def pick_device(device: str | None = None) -> str:
    """``device`` as given, else ``cuda`` when a GPU is visible, else ``mps``, else ``cpu``. Never initialises CUDA."""
    if device:
        return device
    if cuda_available():
        return "cuda"
    import torch

    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str, dtype: str | None = "auto") -> str:
    """The dtype to load a model in on ``device``: ``dtype`` when it names one, else float32 on CPU (bf16 matmuls
    are slow on most CPUs) and the checkpoint's own dtype (``auto``) elsewhere."""
    if dtype and dtype != "auto":
        return dtype
    return "float32" if device == "cpu" else "auto"


def prepare_generation_tokenizer(tokenizer: Any) -> Any:
    """Set ``tokenizer`` up for batched generation: left padding and a pad token (eos when it has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prompt_token_ids(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Token ids of prompts already rendered with the chat template. No special tokens are added: the template
    writes the ones it wants (a Llama-3 template starts with ``{{ bos_token }}``; adding BOS again would double it)."""
    return [list(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


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
    """``model`` / ``device`` / ``torch_dtype`` of a distilabel TransformersLLM under the device/dtype policy.

    The device is always resolved here (never left to the worker), and without initialising CUDA."""
    device = pick_device(args.device)
    return {
        "model": args.model,
        "device": device,
        "torch_dtype": default_dtype(device, getattr(args, "dtype", "auto")),
        # distilabel would copy HF_TOKEN into the pipeline.yaml it saves and pushes (as a SecretStr that its own
        # save_to_disk then cannot read back); transformers reads HF_TOKEN from the environment by itself.
        "token": None,
        **_seed(args),
    }


def vllm_engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments the scale flags set: tensor parallelism, memory share, context cap."""
    extra: dict[str, Any] = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
    }
    if args.max_model_len:
        extra["max_model_len"] = args.max_model_len
    return extra


def vllm_llm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``model`` / ``dtype`` / ``extra_kwargs`` (:func:`vllm_engine_kwargs`) of a distilabel vLLM."""
    return {
        "model": args.model,
        "dtype": getattr(args, "dtype", "auto"),
        "extra_kwargs": vllm_engine_kwargs(args),
        **_seed(args),
    }


def _seed(args: argparse.Namespace) -> dict[str, int]:
    """``{"seed": args.seed}`` for a stage with a ``--seed`` flag (its sampled generations repeat), else nothing."""
    seed = getattr(args, "seed", None)
    return {} if seed is None else {"seed": int(seed)}


def _openai_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "base_url": args.base_url, "api_key": os.environ.get(args.api_key_env)}


def llm_step_resources(args: argparse.Namespace):
    """distilabel ``StepResources`` for the LLM step: ``--replicas`` copies, each with ``--tensor-parallel-size``
    GPUs under vLLM (one GPU per replica for transformers on CUDA: distilabel's device placement gives each replica
    its own GPU)."""
    from distilabel.steps import StepResources

    gpus = args.tensor_parallel_size if args.backend == "vllm" else None
    return StepResources(replicas=getattr(args, "replicas", 1), gpus=gpus)


def build_llm(args: argparse.Namespace, response_prefix: str | None = None, **generation_overrides: Any):
    """A distilabel LLM for ``--backend``, validated, not loaded yet.

    ``response_prefix`` prefills the start of every answer (transformers and vLLM; an OpenAI-compatible chat
    server cannot be prefilled, so there it is an error).
    """
    from distilabel.models.llms import OpenAILLM

    from empathy_recipes.backends import ChatVLLM, PlacementSafeTransformersLLM

    validate_llm_args(args)
    gen = generation_kwargs_for(args, **generation_overrides)
    if response_prefix and args.backend == "openai":
        raise EmpathyRecipesError(
            "a response prefix needs --backend transformers or vllm (chat servers can't prefill)"
        )
    prefix = {"response_prefix": response_prefix} if response_prefix else {}
    if args.backend == "transformers":
        return PlacementSafeTransformersLLM(**transformers_llm_kwargs(args), generation_kwargs=gen, **prefix)
    if args.backend == "vllm":
        return ChatVLLM(**vllm_llm_kwargs(args), generation_kwargs=gen, **prefix)
    return OpenAILLM(**_openai_kwargs(args), generation_kwargs=gen)
