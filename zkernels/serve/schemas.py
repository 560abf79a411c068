"""Request bodies of each API family, as its official client sends them (read from the clients' code:
zeroentropy 0.1.0a11 `models.rerank/embed`, cohere 7.3 `ClientV2.rerank`, openai 3.57
`embeddings.create`, TEI's OpenAPI). Fields a client sends that zkernels has no use for are accepted and
ignored (extra="ignore"), so an unmodified client works; a field of the wrong type is a 422 naming it.

The class variables tell `bodies.check_texts` what to check before pydantic runs: TEXT_FIELDS (single
texts), TEXT_LISTS (lists of texts, counted against --max-request-docs), DOCUMENT_OBJECTS (lists whose
items may also be {"text": ...}), NO_TOKEN_IDS (lists where token ids get their own message).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ()
    TEXT_LISTS: ClassVar[tuple[str, ...]] = ()
    DOCUMENT_OBJECTS: ClassVar[tuple[str, ...]] = ()
    NO_TOKEN_IDS: ClassVar[tuple[str, ...]] = ()


def _texts(value):
    """A single string is a list of one."""
    return [value] if isinstance(value, str) else value


# ---- ZeroEntropy: POST /v1/models/rerank, /v1/models/embed ---------------------------------------------
class ZeRerankRequest(_Body):
    TEXT_FIELDS, TEXT_LISTS = ("query",), ("documents",)
    model: str
    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=1)
    latency: Literal["fast", "slow"] | None = None


class ZeEmbedRequest(_Body):
    TEXT_LISTS = NO_TOKEN_IDS = ("input",)
    model: str
    input: list[str]
    input_type: Literal["query", "document"]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    latency: Literal["fast", "slow"] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return _texts(v)


# ---- Cohere v2 / Jina: POST /v1/rerank, /v2/rerank -------------------------------------------------------
class TextDocument(_Body):
    text: str


class CohereRerankRequest(_Body):
    TEXT_FIELDS, TEXT_LISTS, DOCUMENT_OBJECTS = ("query",), ("documents",), ("documents",)
    model: str | None = None
    query: str
    documents: list[str | TextDocument]
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


# ---- TEI: POST /rerank, /embed -------------------------------------------------------------------------------
class TeiRerankRequest(_Body):
    TEXT_FIELDS, TEXT_LISTS = ("query",), ("texts",)
    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = False
    truncation_direction: Literal["Right", "right"] = "Right"


class TeiEmbedRequest(_Body):
    TEXT_LISTS = NO_TOKEN_IDS = ("inputs",)
    inputs: list[str]
    normalize: bool = True
    truncate: bool | None = False
    truncation_direction: Literal["Right", "right"] = "Right"
    prompt_name: str | None = None
    dimensions: int | None = None

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return _texts(v)


# ---- OpenAI: POST /v1/embeddings -----------------------------------------------------------------------------
class OpenAIEmbeddingRequest(_Body):
    TEXT_LISTS = NO_TOKEN_IDS = ("input",)
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
        return _texts(v)
