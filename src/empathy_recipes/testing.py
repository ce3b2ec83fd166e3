"""Tiny random models for unit tests, built locally in seconds (mergekit's "picollama" idea)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from empathy_recipes.chat_templates import CHATML_TRAINING_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def load_script(path: str | os.PathLike):
    """A stage script as a module, loaded from its file (scripts are not a package; nothing goes on ``sys.path``)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepend_site(folder: str | os.PathLike) -> str:
    """A child process's ``PYTHONPATH`` that runs ``folder/sitecustomize.py`` at its start (a test guard, e.g. one
    that makes reading model weights fatal): ``folder`` first, then the caller's own ``PYTHONPATH`` if any. The
    package itself comes from the installation, as everywhere else."""
    return os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML specials and the training chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TRAINING_TEMPLATE
    return fast


def build_tiny_llama(
    out_dir: str | Path,
    texts: Iterable[str],
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Save a random ``LlamaForCausalLM`` (hidden 64, 2 layers) plus a locally trained tokenizer to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = train_tiny_tokenizer(texts, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


FOLDER_HUB_ENV = "EMPATHY_RECIPES_TEST_FOLDER_HUB"


def patch_hub_to_folder(monkeypatch, root: Path) -> Path:
    """Make ``HfApi.create_repo`` / ``upload_folder`` write into ``root/<repo_type>s/<org>/<name>`` (what a push
    would upload, same files, same layout) instead of reaching the Hub; pushes then work offline with a dummy
    token. ``monkeypatch`` is pytest's (undone after the test) or None (for good, e.g. in a subprocess's
    ``sitecustomize``: see :func:`folder_hub_sitecustomize`). Returns ``root``."""
    import fnmatch
    import shutil
    from concurrent.futures import Future

    from huggingface_hub import HfApi, RepoUrl

    def repo_dir(repo_id: str, repo_type: str | None) -> Path:
        return root / f"{repo_type or 'model'}s" / repo_id

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        folder = repo_dir(repo_id, repo_type)
        if folder.exists() and not exist_ok:
            raise FileExistsError(repo_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".private").write_text(str(bool(private)))
        prefix = "" if repo_type in (None, "model") else f"{repo_type}s/"
        return RepoUrl(f"https://huggingface.co/{prefix}{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, ignore_patterns=None, **kwargs):
        src, dst = Path(folder_path), repo_dir(repo_id, repo_type)
        patterns = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = f.relative_to(src).as_posix()
            if any(fnmatch.fnmatch(rel, pat) for pat in patterns):
                continue
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)
        if kwargs.get("run_as_future"):  # the Trainer's checkpoint pushes
            done: Future = Future()
            done.set_result(None)
            return done
        return f"https://huggingface.co/{repo_id}"

    import os

    import empathy_recipes.hub as hub

    set_attr = monkeypatch.setattr if monkeypatch is not None else setattr
    set_attr(HfApi, "create_repo", create_repo)
    set_attr(HfApi, "upload_folder", upload_folder)
    # this Hub answers under HF_HUB_OFFLINE=1 and takes any token
    set_attr(hub, "_offline", lambda: False)
    if monkeypatch is not None:
        monkeypatch.setenv("HF_TOKEN", "hf_local_folder_hub_token")
    else:
        os.environ["HF_TOKEN"] = "hf_local_folder_hub_token"
    return root


def build_random_like(reference_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Save a random-weight model with the architecture of ``reference_dir`` (its ``config.json`` only: no weight is
    read) and its tokenizer (and generation config when it has one) to ``out_dir``. Nothing is downloaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    reference, out = Path(reference_dir), Path(out_dir)
    config = AutoConfig.from_pretrained(reference)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if (reference / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(reference)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(reference).save_pretrained(out)
    return out


def folder_hub_sitecustomize(folder: Path) -> Path:
    """A ``sitecustomize.py`` in ``folder``: put ``folder`` first on a subprocess's PYTHONPATH and set
    ``EMPATHY_RECIPES_TEST_FOLDER_HUB=<root>`` so its pushes land in ``<root>`` too. Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os\n"
        "from pathlib import Path\n"
        f"if os.environ.get({FOLDER_HUB_ENV!r}):\n"
        "    from empathy_recipes.testing import patch_hub_to_folder\n"
        f"    patch_hub_to_folder(None, Path(os.environ[{FOLDER_HUB_ENV!r}]))\n"
    )
    return folder


def kill_after_cached_batches(
    cmd: Sequence[str], env: Mapping[str, str], cache: Path, pattern: str, log_path: Path, n: int = 3
) -> tuple[bool, list[Path]]:
    """Run ``cmd`` in its own process group, SIGKILL the group once ``n`` files match ``cache.glob(pattern)``.

    Returns (whether it was still running when killed, the matched files): a kill test asserts the first.
    """
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
        cached: list[Path] = []
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            cached = list(cache.glob(pattern))
            if len(cached) >= n:
                break
            time.sleep(0.02)
        still_running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return still_running, cached
