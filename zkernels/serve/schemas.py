"""Request bodies of each API family, as its official client sends them (read from the clients' code:
zeroentropy 0.1.0a11 `models.rerank/embed`, cohere 7.3 `ClientV2.rerank`, openai 3.57
`embeddings.create`, TEI's OpenAPI). Fields a client sends that zkernels has no use for are accepted and
ignored (extra="ignore"), so an unmodified client works; a field of the wrong type is a 422 naming it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _texts(value, name: str):
    """str | list[str] -> list[str]; anything else is rejected with the field's name."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value) \
            or isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        raise ValueError(f"{name} holds token ids; this server embeds text: send a string or a list of strings")
    return value


# ---- ZeroEntropy: POST /v1/models/rerank, /v1/models/embed ---------------------------------------------
class ZeRerankRequest(_Body):
    model: str
    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=1)
    latency: Literal["fast", "slow"] | None = None


class ZeEmbedRequest(_Body):
    model: str
    input: list[str]
    input_type: Literal["query", "document"]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    latency: Literal["fast", "slow"] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return _texts(v, "input")


# ---- Cohere v2 / Jina: POST /v1/rerank, /v2/rerank -------------------------------------------------------
class TextDocument(_Body):
    text: str


class CohereRerankRequest(_Body):
    model: str | None = None
    query: str
    documents: list[str | TextDocument]
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


# ---- TEI: POST /rerank, /embed -------------------------------------------------------------------------------
class TeiRerankRequest(_Body):
    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = False
    truncation_direction: Literal["Right", "right"] = "Right"


class TeiEmbedRequest(_Body):
    inputs: list[str]
    normalize: bool = True
    truncate: bool | None = False
    truncation_direction: Literal["Right", "right"] = "Right"
    prompt_name: str | None = None
    dimensions: int | None = None

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return _texts(v, "inputs")


# ---- OpenAI: POST /v1/embeddings -----------------------------------------------------------------------------
class OpenAIEmbeddingRequest(_Body):
    model: str
    input: list[str]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    # Not OpenAI's: which of the checkpoint's prompts to prepend (zembed-1 embeds queries and documents
    # differently). Send it with the SDK's extra_body={"input_type": "query"}.
    input_type: Literal["query", "document"] = "document"

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return _texts(v, "input")
